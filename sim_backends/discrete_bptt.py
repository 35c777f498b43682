"""Backpropagation through time (BPTT) for the discrete-time network, in numpy: its oracle.

Forward, from ``s_0 = (x, 0, ..., 0)``, for k = 1..T::

    a_k = dPhi/ds(x, s_(k-1), theta),   s_k = rho(a_k)          (per layer, its activation rho_l)

Loss ``L = mean_batch 1/2 ||o_T - y||^2``. Backward, from
``lambda_T = dL/ds_T`` (``(o_T - y) / B`` on the outputs, 0 elsewhere), for k = T..1::

    mu_k          = dL/da_k = lambda_k * rho'(a_k)
    dL/dtheta_(k-1) = (da_k/dtheta)^T mu_k                      (theta_(k-1): the copy used by step k-1 -> k)
    lambda_(k-1)  = (da_k/ds_(k-1))^T mu_k

The gradient is the sum over the T copies of theta. Per-step gradients are
indexed by the time t = 0..K-1 of the nudged phase that they match
(Ernoult et al. 2019, the GDU property)::

    neurons[t][l - 1] = B mu_(T-t) of layer l     (per sample: the gradient of that sample's own cost)
    params[t][name]   = dL/dtheta_(T-1-t)

The neuron gradient is that of the pre-activation a (``s = rho(a)``):
``rho'(a) dL/ds``. A step carries ``rho'(a)`` times its input both ways (BPTT
backward, a small nudge forward), so this is what EqProp's ``Delta_s`` matches;
with the clip (rho' = 0 outside the box) it is dL/ds on free units, 0 on bound ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aeqprop.errors import ConfigurationError
from sim_backends.activations import Activation


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


def forward(
    W: Sequence[np.ndarray], b: Sequence[np.ndarray], rho: Sequence[Activation], x: np.ndarray, T: int
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """The T free time steps from s = 0: states ``[s_0 .. s_T]`` and pre-activations ``[a_0, a_1 .. a_T]``,
    each a list of layers ``[x, layer 1, ..., layer L]`` (``a_0`` is the initial state, and each ``a_k[0]`` is x)."""
    L, B = len(W) - 1, x.shape[0]
    s = [x] + [np.zeros((B, W[l].shape[1])) for l in range(1, L + 1)]
    states, pres = [s], [s]
    drive1 = x @ W[1] + b[1]
    for _ in range(T):
        a = [x]
        for l in range(1, L + 1):
            pre = drive1.copy() if l == 1 else s[l - 1] @ W[l] + b[l]
            if l < L:
                pre += s[l + 1] @ W[l + 1].T
            a.append(pre)
        s = [x] + [rho[l](a[l]) for l in range(1, L + 1)]
        states.append(s)
        pres.append(a)
    return states, pres


def bptt(
    W: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    rho: Sequence[Activation],
    x: np.ndarray,
    y: np.ndarray,
    T: int,
    K: int = 0,
) -> BPTTResult:
    """Loss after T free steps, its gradient through time, and the per-step gradients of the last K steps.

    ``W[l]`` has shape (n_(l-1), n_l), ``b[l]`` (n_l,), ``rho[l]`` the activation of
    layer l (:mod:`sim_backends.activations`), index 0 unused; x (batch, n_0), y (batch, n_L).
    """
    T, K = int(T), int(K)
    if T < 1 or not 0 <= K <= T:
        raise ConfigurationError(f"T={T}, K={K}: need T >= 1 free steps and 0 <= K <= T per-step gradients")
    states, pres = forward(W, b, rho, x, T)
    L, B = len(W) - 1, x.shape[0]
    o = states[T][L]
    loss = float(0.5 * np.sum((o - y) ** 2) / B)
    lam = [x] + [np.zeros_like(states[T][l]) for l in range(1, L + 1)]  # lam[0] unused
    lam[L] = (o - y) / B
    grad: dict[str, np.ndarray] = {}
    for l in range(1, L + 1):
        grad[f"W{l}"], grad[f"b{l}"] = np.zeros_like(W[l]), np.zeros_like(b[l])
    neurons: list[list[np.ndarray]] = []
    params: list[dict[str, np.ndarray]] = []
    for k in range(T, 0, -1):
        a, prev = pres[k], states[k - 1]
        mu = [lam[0]] + [lam[l] * rho[l].derivative(a[l]) for l in range(1, L + 1)]  # mu[0] unused
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
        lam = [x]
        for l in range(1, L + 1):
            back = mu[l - 1] @ W[l] if l > 1 else np.zeros_like(mu[l])
            if l < L:
                back += mu[l + 1] @ W[l + 1].T
            lam.append(back)
    return BPTTResult(loss=loss, gradient=grad, neurons=neurons, params=params, T=T)
