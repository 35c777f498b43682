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
    if not np.isfinite(beta) or (beta <= -1.0 and not readout):
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
