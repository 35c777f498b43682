"""Shared by the benchmarks: the numpy backprop baseline of a Hopfield net's shape, BLAS threads,
and timing epochs side by side.

``BackpropMLP`` is the same network as the substrate's free phase read as a feed-forward
net: hard-sigmoid ([0, 1]) hidden layers, linear outputs with the squared cost, or a
softmax readout with the cross-entropy; plain SGD on minibatches.
"""

from __future__ import annotations

import time

import numpy as np


def limit_blas_threads(threads: int):
    """Pin the BLAS thread pool (0: leave the library's default). Returns the limiter to keep alive.

    On a shared 2-core machine, BLAS threads that outnumber the free cores spin and wait
    for each other; one thread gives steadier timings for the small products of a
    minibatch step. Both sides of every ratio run under the same setting.
    """
    if threads <= 0:
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


class BackpropMLP:
    """Numpy backprop of ``layers`` with SGD at ``lr``; ``cost`` "squared" or "cross-entropy"."""

    def __init__(self, layers, lr: float, seed: int, cost: str = "squared", dtype: str = "float64"):
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.lr, self.cost = lr, cost
        self.W, self.b = [], []
        for n_in, n_out in zip(layers[:-1], layers[1:]):
            limit = 0.5 * np.sqrt(6 / (n_in + n_out))
            self.W.append(self.rng.uniform(-limit, limit, (n_in, n_out)).astype(self.dtype))
            self.b.append(np.zeros(n_out, self.dtype))

    def forward(self, x: np.ndarray):
        pres, acts = [], [x]
        for l, (w, b) in enumerate(zip(self.W, self.b)):
            pre = acts[-1] @ w
            pre += b
            pres.append(pre)
            acts.append(np.clip(pre, 0.0, 1.0) if l < len(self.W) - 1 else pre)
        return pres, acts

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x.astype(self.dtype, copy=False))[1][-1]

    def epoch(self, x: np.ndarray, y: np.ndarray, batch: int) -> float:
        """One pass of SGD over (x, y) in a fresh random order; returns its seconds."""
        x, y = x.astype(self.dtype, copy=False), y.astype(self.dtype, copy=False)
        t0 = time.perf_counter()
        order = self.rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            pres, acts = self.forward(xb)
            out = acts[-1]
            if self.cost == "cross-entropy":
                out = np.exp(out - out.max(axis=1, keepdims=True))
                out /= out.sum(axis=1, keepdims=True)
            delta = (out - yb) * (self.lr / len(xb))
            for l in range(len(self.W) - 1, -1, -1):
                back = delta @ self.W[l].T if l > 0 else None
                self.W[l] -= acts[l].T @ delta
                self.b[l] -= delta.sum(axis=0)
                if back is not None:
                    back *= (pres[l - 1] > 0) & (pres[l - 1] < 1)
                    delta = back
        return time.perf_counter() - t0

    def accuracy(self, x: np.ndarray, labels: np.ndarray, width: int = 4096) -> float:
        correct = sum(
            int(np.sum(self.predict(x[i : i + width]).argmax(1) == labels[i : i + width]))
            for i in range(0, len(x), width)
        )
        return correct / len(x)
