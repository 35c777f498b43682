"""The cost at the top of a layered substrate: squared (on the output units) or a
cross-entropy softmax readout (Laborieux et al. 2021).

With ``cost = "cross-entropy"`` the last layer is not part of the energy: the
prediction is ``p = softmax(s_T W_r + b_r)``, read from the top energy layer
s_T through readout weights ``W_r, b_r``, and the cost is
``C = -sum y log p``. Nudging adds ``beta C`` to the energy, a force
``-beta (p - y) W_r^T`` on s_T. The readout parameters appear only in C, so
"dE/dtheta" for them is the derivative of ``F = E + beta C``:
``beta s_T^T (p - y)`` and ``beta (p - y)`` (batch means). EqProp's contrast of
dF/dtheta between two nudgings is then exactly dC/dtheta for them, and a
floating readout parameter moves by ``-eps (beta2 - beta1) dC/dtheta``.
"""

from __future__ import annotations

import math

import numpy as np

from aeqprop.errors import ConfigurationError

COSTS = ("squared", "cross-entropy")


def check_cost(cost: str, n_layers: int) -> bool:
    """Validate ``cost``; True for the cross-entropy readout (which needs a hidden layer)."""
    if cost not in COSTS:
        raise ConfigurationError(f"cost={cost!r}: valid: {', '.join(COSTS)}")
    if cost == "cross-entropy" and n_layers < 3:
        raise ConfigurationError(
            "cost='cross-entropy' reads the top hidden layer through a softmax readout: "
            "give at least one hidden layer, e.g. layers = (784, 1024, 10)"
        )
    return cost == "cross-entropy"


def check_beta(beta: float, readout: bool) -> float:
    """``beta`` as a float, refused when not finite or, with the squared cost (unit output self-energy),
    when ``beta <= -1``: F = E + beta C then has no minimum. The cross-entropy readout has no such bound."""
    beta = float(beta)
    if not math.isfinite(beta) or (beta <= -1.0 and not readout):  # math: numpy's costs 20x on a float
        raise ConfigurationError(
            f"beta={beta}: with the squared cost and unit output self-energy, beta <= -1 "
            "destroys the minimum of F; use beta > -1"
        )
    return beta


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def predict(s_top: np.ndarray, W_r: np.ndarray, b_r: np.ndarray) -> np.ndarray:
    """Class probabilities ``softmax(s_T W_r + b_r)``."""
    return softmax(s_top @ W_r + b_r)


def cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    """Batch-mean ``-sum y log p`` (probabilities floored at 1e-300)."""
    return float(-np.sum(y * np.log(np.maximum(p, 1e-300))) / len(p))


def readout_gradients(
    s_top: np.ndarray, W_r: np.ndarray, b_r: np.ndarray, y: np.ndarray | None, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """``beta dC/dW_r, beta dC/db_r`` (batch means), zero without nudging."""
    if beta == 0.0 or y is None:
        return np.zeros_like(W_r), np.zeros_like(b_r)
    err = predict(s_top, W_r, b_r) - y
    err *= beta / len(err)
    return s_top.T @ err, err.sum(axis=0)


def readout_step(beta: float, W_r: np.ndarray) -> float:
    """The safe step ``alpha`` of the top energy layer's update under the readout's force, 1 when
    the plain update is always safe (see :func:`lower_of_two`).

    The plain update sets s_T to its target at the current state, ``t = box(d - beta (p - y) W_r^T)``:
    the force is taken at the current state, so it is a fixed-point iteration, not the block's
    minimiser. The block's energy ``|s|^2 / 2 - s.d + beta C(s)`` has the Hessian
    ``I + beta W_r H W_r^T``, H the softmax Hessian (eigenvalues in [0, 1/2]): its curvature lies
    in ``[1, 1 + kappa]`` for beta > 0 and in ``[1 - kappa, 1]`` for beta < 0, with
    ``kappa = |beta| |W_r|_2^2 / 2``. A projected gradient step lowers F whenever it is below
    ``2 / L``, L the largest curvature in absolute value (the descent lemma). The plain step (1)
    is below it for every state while kappa < 1 (beta > 0) or kappa < 3 (beta < 0); past that,
    ``2 / (2 + kappa)`` (beta > 0: the best contraction over that range of curvature) or
    ``1 / (kappa - 1)`` (beta < 0) is.
    """
    if beta == 0.0:
        return 1.0
    w = np.asarray(W_r, dtype=np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    kappa = abs(beta) * float(np.linalg.eigvalsh(gram)[-1]) / 2.0
    if beta > 0:
        return 1.0 if kappa < 1.0 else 2.0 / (2.0 + kappa)
    return 1.0 if kappa < 3.0 else 1.0 / (kappa - 1.0)


def block_energy(
    s: np.ndarray, drive: np.ndarray, W_r: np.ndarray, b_r: np.ndarray, y: np.ndarray, beta: float
) -> np.ndarray:
    """Per sample, the top layer's part of F: ``|s|^2 / 2 - s.d + beta C(s)``, s and d as (batch, units).

    In float64 whatever the state's precision: near the equilibrium the two updates differ by
    less than float32's rounding of F, and a choice made on rounding noise takes the safe step
    at random there and slows the settling (111.5 sweeps a step against 100.2, the Fashion-MNIST
    conv network of README.md, benchmarks/conv_settling.py)."""
    s64 = s.astype(np.float64)
    z = s64 @ W_r.astype(np.float64)
    z += b_r
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    cost = log_norm * y.sum(axis=1) - np.einsum("ij,ij->i", y, z)
    return np.einsum("ij,ij->i", s64, 0.5 * s64 - drive) + beta * cost


def lower_of_two(
    pre: np.ndarray,
    drive: np.ndarray,
    s: np.ndarray,
    W_r: np.ndarray,
    b_r: np.ndarray,
    y: np.ndarray,
    beta: float,
    alpha: float,
    box: tuple[np.ndarray, np.ndarray],
) -> None:
    """Per sample, the update of lower block energy: the plain one ``pre`` (the target under the
    force, before the box) or the safe step ``s + alpha (pre - s)`` (:func:`readout_step`), into
    ``pre``; ``drive`` is the target without the force. F falls at every sweep at least as much as
    under the safe step (so it settles at least at its rate), and the plain step is kept where it
    does better (the samples that the fixed-point iteration settles fast). All arrays (batch, units)."""
    safe = pre - s
    safe *= alpha
    safe += s
    plain_energy = block_energy(np.clip(pre, *box), drive, W_r, b_r, y, beta)
    safe_energy = block_energy(np.clip(safe, *box), drive, W_r, b_r, y, beta)
    better = safe_energy < plain_energy
    if better.any():
        pre[better] = safe[better]


def apply_force(
    pre: np.ndarray,
    s: np.ndarray,
    W_r: np.ndarray,
    b_r: np.ndarray,
    W_rT: np.ndarray,
    y: np.ndarray,
    beta: float,
    alpha: float,
    box: tuple[np.ndarray, np.ndarray],
) -> None:
    """The top energy layer's update under the readout's nudging, in place: ``pre`` (batch, units),
    the layer's target from its neighbours, becomes ``pre - beta (p - y) W_r^T`` with p read at the
    current state ``s`` (``W_rT``: W_r transposed, contiguous); where ``alpha < 1``
    (:func:`readout_step`), per sample the lower-energy of that and the safe step (:func:`lower_of_two`)."""
    drive = pre.astype(np.float64) if alpha < 1.0 else None
    err = predict(s, W_r, b_r)
    err -= y
    err *= beta
    pre -= err @ W_rT
    if drive is not None:
        lower_of_two(pre, drive, s, W_r, b_r, y, beta, alpha, box)
