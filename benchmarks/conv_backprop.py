"""Numpy backprop of the conv Hopfield substrate's feed-forward counterpart on Fashion-MNIST: the capacity
of an architecture, apart from how it is trained.

The same layer maps as the substrate (sim_backends/conv_ops.py: 5x5 valid conv then 2x2 average or
max pooling per conv layer, dense hidden layers), hard-sigmoid units ([0, 1]), a softmax readout with
the cross-entropy, the substrate's initialisation; plain SGD on minibatches of 16 with a cosine
schedule of the learning rate to 1 % (the Aeqprop figure's step is eps * b = the SGD rate). The
official 60k/10k split with 6,000 training images held out; the test accuracy is read at the epoch
of the best validation accuracy and at the final one. One run per --poolings entry.

    python benchmarks/conv_backprop.py [--epochs 10] [--channels 32 64] [--hidden] [--lr 0.05]
        [--poolings average max,average max] [--threads 1] [--train-size 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist import subset

from aeqprop import augment
from aeqprop.data import Dataset, load_dataset
from sim_backends.conv_ops import Conv, Dense, conv_map


class BackpropConv:
    """The feed-forward net ``x -> conv layers -> dense hidden -> softmax``, trained by SGD (float32)."""

    def __init__(self, data: Dataset, channels, hidden, poolings, seed: int, gain: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.maps: list[Conv | Dense] = []
        shape: tuple[int, ...] = tuple(data.shape)
        for c, kind in zip(channels, poolings):
            conv = conv_map((shape[0], shape[1], shape[2]), c, 5, 2, kind)
            self.maps.append(conv)
            shape = conv.out_shape
        for n in [*hidden, data.n_classes]:
            self.maps.append(Dense(shape, n))
            shape = (n,)
        self.W, self.b = [], []
        for m in self.maps:
            fan_in, fan_out = m.fan()
            limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
            self.W.append(self.rng.uniform(-limit, limit, m.weight_shape).astype(np.float32))
            self.b.append(np.zeros(m.out_shape[:1], np.float32))
        self.input_shape = tuple(data.shape)

    def forward(self, x: np.ndarray):
        a = x.reshape(len(x), *self.input_shape).astype(np.float32, copy=False)
        acts, pres, routes = [a], [], []
        for l, (m, W, b) in enumerate(zip(self.maps, self.W, self.b)):
            route = m.route(a, W)
            z = m.forward(a, W, route)
            z += b.reshape(b.shape + (1,) * (z.ndim - 2))
            pres.append(z)
            routes.append(route)
            a = np.clip(z, 0.0, 1.0) if l < len(self.maps) - 1 else z
            acts.append(a)
        return acts, pres, routes

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.forward(x[i : i + 500])[0][-1].argmax(axis=1) for i in range(0, len(x), 500)])

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        acts, pres, routes = self.forward(x)
        z = acts[-1]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - y) / len(x)
        for l in reversed(range(len(self.maps))):
            if l < len(self.maps) - 1:
                g = g * ((pres[l] > 0.0) & (pres[l] < 1.0))
            m, W = self.maps[l], self.W[l]
            gW = m.gradient(acts[l], g, routes[l])
            gb = g.sum(axis=tuple(i for i in range(g.ndim) if i != 1))
            if l > 0:
                g = m.adjoint(g, W, routes[l])
            W -= lr * gW.astype(np.float32)
            self.b[l] -= lr * gb.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--hidden", type=int, nargs="*", default=[])
    ap.add_argument("--poolings", nargs="+", default=["average", "max,average", "max"])
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: the library's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=0, help="train on this many samples (0: all 54,000)")
    ap.add_argument("--flip", action="store_true", help="mirror each training image left-right with probability 1/2")
    args = ap.parse_args(argv)
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    data = subset(load_dataset("fashion-mnist", seed=args.seed), args.train_size, args.seed)
    cmd = "python benchmarks/conv_backprop.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for pooling in args.poolings:
        kinds = pooling.split(",")
        kinds = kinds * len(args.channels) if len(kinds) == 1 else kinds
        net = BackpropConv(data, args.channels, args.hidden, kinds, args.seed)
        x, y, B = data.x_train.astype(np.float32), data.y_train.astype(np.float32), args.batch
        steps, done, val, tests, seconds = args.epochs * (len(x) // B), 0, [], [], []
        flips = augment.generator(args.seed)  # its own generator, as the Trainer's: the same order as without flips
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            order = net.rng.permutation(len(x))
            for i in range(len(x) // B):
                lr = args.lr * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * done / steps)))
                idx = order[i * B : (i + 1) * B]
                xb = augment.flip_half(x[idx], data.shape, flips) if args.flip else x[idx]
                net.step(xb, y[idx], lr)
                done += 1
            seconds.append(time.perf_counter() - t0)
            val.append(float(np.mean(net.predict(data.x_val) == data.labels_val)))
            tests.append(float(np.mean(net.predict(data.x_test) == data.labels_test)))
            print(f"  {pooling} epoch {epoch}: val {val[-1]:.2%} ({seconds[-1]:.0f} s)", file=sys.stderr, flush=True)
        at = int(np.argmax(val))
        rows.append((" / ".join(kinds), at + 1, val[at], tests[at], tests[-1], float(np.median(seconds))))
    arch = " -> ".join(["1x28x28", *(f"{c} ch" for c in args.channels), *map(str, args.hidden), "10"])
    print(
        f"\n`{cmd.strip()}`: numpy backprop, {arch} (5x5 conv, 2x2 pooling), hard-sigmoid units, softmax "
        f"readout, SGD lr {args.lr:g} cosine to 1 %, batch {args.batch}, {args.epochs} epochs on "
        f"{len(data.x_train)} images{' (random left-right flips)' if args.flip else ''}, seed {args.seed}\n"
    )
    print(
        "| pooling (per conv layer) | test accuracy at best validation epoch (epoch; validation) "
        "| final test accuracy | s per epoch (median) |"
    )
    print("|---|---|---|---|")
    for kinds, at, v, t, final, sec in rows:
        print(f"| {kinds} | {t:.2%} ({at}; {v:.2%}) | {final:.2%} | {sec:.0f} |")


if __name__ == "__main__":
    main()
