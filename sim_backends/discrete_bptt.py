"""Backpropagation through time (BPTT) for the discrete-time network, in numpy: its oracle.

Forward, from ``s_0 = (x, 0, ..., 0)``, for k = 1..T::

    a_k = dPhi/ds(x, s_(k-1), theta),   s_k = clip(a_k)         (per layer, to its box)

Loss ``L = mean_batch 1/2 ||o_T - y||^2``. Backward, from
``lambda_T = dL/ds_T`` (``(o_T - y) / B`` on the outputs, 0 elsewhere), for k = T..1::

    mu_k          = dL/da_k = lambda_k * [lo < a_k < hi]        (clip passes the gradient inside its box)
    dL/dtheta_(k-1) = (da_k/dtheta)^T mu_k                      (theta_(k-1): the copy used by step k-1 -> k)
    lambda_(k-1)  = (da_k/ds_(k-1))^T mu_k

The gradient is the sum over the T copies of theta. Per-step gradients are
indexed by the time t = 0..K-1 of the nudged phase that they match
(Ernoult et al. 2019, the GDU property)::

    neurons[t][l - 1] = B mu_(T-t) of layer l     (per sample: the gradient of that sample's own cost)
    params[t][name]   = dL/dtheta_(T-1-t)

A unit at a bound of its box cannot move, so the neuron gradient is that of
its pre-activation a (``s = clip(a)``): dL/ds on free units, 0 on bound ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeqprop.errors import ConfigurationError


@dataclass(frozen=True)
class BPTTResult:
    """What backpropagation through T free time steps gives.

    ``loss``: L after T steps; ``gradient``: dL/dtheta per tensor (batch mean);
    ``neurons[t][l - 1]``: per-sample dL/da of layer l at time T - t, shape
    (batch, n_l); ``params[t]``: dL/dtheta_(T-1-t) per tensor; t = 0..K-1.
    """

    loss: float
    gradient: dict[str, np.ndarray]
    neurons: list[list[np.ndarray]]
    params: list[dict[str, np.ndarray]]
    T: int


def forward(W: list, b: list, boxes: list, x: np.ndarray, T: int):
    """The T free time steps from s = 0: states ``[s_0 .. s_T]`` and pre-activations ``[None, a_1 .. a_T]``,
    each a list of layers ``[x, layer 1, ..., layer L]`` (``a`` has None for the input)."""
    L, B = len(W) - 1, x.shape[0]
    s = [x] + [np.zeros((B, W[l].shape[1])) for l in range(1, L + 1)]
    states, pres = [s], [None]
    drive1 = x @ W[1] + b[1]
    for _ in range(T):
        a = [None]
        for l in range(1, L + 1):
            pre = drive1.copy() if l == 1 else s[l - 1] @ W[l] + b[l]
            if l < L:
                pre += s[l + 1] @ W[l + 1].T
            a.append(pre)
        s = [x] + [np.clip(a[l], *boxes[l]) for l in range(1, L + 1)]
        states.append(s)
        pres.append(a)
    return states, pres


def bptt(W: list, b: list, boxes: list, x: np.ndarray, y: np.ndarray, T: int, K: int = 0) -> BPTTResult:
    """Loss after T free steps, its gradient through time, and the per-step gradients of the last K steps.

    ``W[l]`` has shape (n_(l-1), n_l), ``b[l]`` (n_l,), ``boxes[l]`` = (lo, hi),
    index 0 unused; x (batch, n_0), y (batch, n_L).
    """
    T, K = int(T), int(K)
    if T < 1 or not 0 <= K <= T:
        raise ConfigurationError(f"T={T}, K={K}: need T >= 1 free steps and 0 <= K <= T per-step gradients")
    states, pres = forward(W, b, boxes, x, T)
    L, B = len(W) - 1, x.shape[0]
    o = states[T][L]
    loss = float(0.5 * np.sum((o - y) ** 2) / B)
    lam = [None] + [np.zeros_like(states[T][l]) for l in range(1, L + 1)]
    lam[L] = (o - y) / B
    grad = {}
    for l in range(1, L + 1):
        grad[f"W{l}"], grad[f"b{l}"] = np.zeros_like(W[l]), np.zeros_like(b[l])
    neurons, params = [], []
    for k in range(T, 0, -1):
        a, prev = pres[k], states[k - 1]
        mu = [None] + [lam[l] * ((a[l] > boxes[l][0]) & (a[l] < boxes[l][1])) for l in range(1, L + 1)]
        step = {}
        for l in range(1, L + 1):
            gw = prev[l - 1].T @ mu[l]
            if l > 1:
                gw += mu[l - 1].T @ prev[l]
            step[f"W{l}"], step[f"b{l}"] = gw, mu[l].sum(axis=0)
        for n in grad:
            grad[n] += step[n]
        if T - k < K:
            neurons.append([B * mu[l] for l in range(1, L + 1)])
            params.append(step)
        lam = [None]
        for l in range(1, L + 1):
            back = mu[l - 1] @ W[l] if l > 1 else np.zeros_like(mu[l])
            if l < L:
                back += mu[l + 1] @ W[l + 1].T
            lam.append(back)
    return BPTTResult(loss=loss, gradient=grad, neurons=neurons, params=params, T=T)
