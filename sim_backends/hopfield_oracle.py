"""The oracle of the layered Hopfield network: dL/dtheta by implicit differentiation.

At the free equilibrium, solve ``H lambda = dC/ds`` on the units not held at a
box bound (H = d2E/ds2 there; bound units have lambda = 0), then
``grad L = -(d2E/dtheta ds) lambda``. H has identity diagonal blocks and
couplings -W_l between layers l-1 and l, so the solve is a block-tridiagonal
(block Thomas) elimination from layer 1 upward; D_1 = I, so the dense solves
are only of the sizes of layers 2..L.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.readout import cross_entropy, predict


def implicit_gradient(W: list, s: list, boxes: list, dC_ds: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients ``W1, b1 .. WL, bL`` of the batch-mean loss, all in float64.

    ``W[l]`` (l = 1..L) are the weights, ``s`` the settled layers ``[x, s_1..s_L]``,
    ``boxes[l]`` the (lo, hi) box of layer l, and ``dC_ds`` the cost's gradient with
    respect to the top layer s_L, per sample (shape (batch, n_L)).
    """
    L = len(s) - 1
    s = [np.asarray(a, dtype=np.float64) for a in s]
    W = [None] + [np.asarray(w, dtype=np.float64) for w in W[1 : L + 1]]
    masks = [None] + [((s[l] > boxes[l][0]) & (s[l] < boxes[l][1])).astype(np.float64) for l in range(1, L + 1)]
    rhs = [None] + [np.zeros_like(s[l]) for l in range(1, L + 1)]
    rhs[L] = np.asarray(dC_ds, dtype=np.float64) * masks[L]
    D: list = [None, None]  # D_1 = I on the free units (identity on the bound ones too)
    red = [None, rhs[1]]
    for l in range(2, L + 1):
        A = masks[l - 1][:, :, None] * W[l][None] * masks[l][:, None, :]  # (B, n_(l-1), n_l)
        DinvA = A if D[l - 1] is None else np.linalg.solve(D[l - 1], A)
        Dinv_r = red[l - 1] if D[l - 1] is None else np.linalg.solve(D[l - 1], red[l - 1][:, :, None])[:, :, 0]
        D.append(np.eye(W[l].shape[1])[None] - np.einsum("bij,bik->bjk", A, DinvA))
        red.append(rhs[l] + np.einsum("bij,bi->bj", A, Dinv_r))
    lams = [np.zeros_like(s[0])] + [None] * L
    for l in range(L, 0, -1):
        r = (
            red[l]
            if l == L
            else red[l]
            + np.einsum("bij,bj->bi", masks[l][:, :, None] * W[l + 1][None] * masks[l + 1][:, None, :], lams[l + 1])
        )
        lams[l] = r if D[l] is None else np.linalg.solve(D[l], r[:, :, None])[:, :, 0]
    B = s[0].shape[0]
    grads = {}
    for l in range(1, L + 1):
        gw = s[l - 1].T @ lams[l]
        if l > 1:
            gw = gw + lams[l - 1].T @ s[l]
        grads[f"W{l}"] = gw / B
        grads[f"b{l}"] = lams[l].mean(axis=0)
    return grads


class HopfieldOracle:
    """Capability "oracle" of :class:`~sim_backends.hopfield.HopfieldSubstrate` (a mixin)."""

    # provided by the host class
    info: SubstrateInfo
    dtype: np.dtype
    readout: bool
    L: int
    T: int
    W: list[Any]  # W[l] for l = 1..L (W[0] is None)
    b: list[Any]
    _x: np.ndarray
    _s: list[np.ndarray]
    _y: np.ndarray | None
    _drive: np.ndarray | None
    _stale: bool
    _free: list[np.ndarray] | None
    _state_beta: float | None
    _rho: float | None

    if TYPE_CHECKING:

        def clamp(self, x: np.ndarray) -> None: ...
        def nudge(self, beta: float, y: np.ndarray | None = None) -> None: ...
        def outputs(self) -> np.ndarray: ...
        def _relax(self, tol: float, max_sweeps: int) -> RelaxReport: ...
        def _box(self, l: int) -> tuple[float, float]: ...

    @contextmanager
    def _float64(self) -> Iterator[None]:
        """Compute in float64 for the duration (the oracle), whatever the substrate's dtype."""
        if self.dtype == np.float64:
            yield
            return
        saved = (self.W, self.b, self._x, self._s, self._y, self._drive)
        kept = (self._free, self._state_beta, self._rho)  # the free equilibrium and its contraction
        self.W = [None] + [w.astype(np.float64) for w in self.W[1:]]
        self.b = [None] + [v.astype(np.float64) for v in self.b[1:]]
        self.dtype, self._drive = np.dtype(np.float64), None
        try:
            yield
        finally:
            self.W, self.b, self._x, self._s, self._y, self._drive = saved
            self._free, self._state_beta, self._rho = kept
            self.dtype = np.dtype(np.float32)
            self._stale = True

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """L = mean_batch C at a tightly settled free equilibrium (float64): 1/2 ||o - y||^2,
        or -sum y log p with the readout."""
        with self._float64():
            return self._loss(x, y)

    def _loss(self, x: np.ndarray, y: np.ndarray) -> float:
        self.clamp(x)
        self.nudge(0.0)
        self._relax(1e-13, 100_000)
        y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        if self.readout:
            return cross_entropy(self.outputs(), y)
        return float(0.5 * np.sum((self._s[self.L] - y) ** 2) / y.shape[0])

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """dL/dtheta by implicit differentiation at the free equilibrium (float64; see
        :mod:`sim_backends.hopfield_oracle`). Leaves the substrate clamped to x."""
        with self._float64():
            self._loss(x, y)
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
            s, T, L = self._s, self.T, self.L
            boxes = [None] + [self._box(l) for l in range(1, T + 1)]
            if not self.readout:
                grads = implicit_gradient(self.W, s, boxes, s[L] - y)
            else:
                err = predict(s[T], self.W[L], self.b[L]) - y
                grads = implicit_gradient(self.W, s[: T + 1], boxes, err @ self.W[L].T)
                grads[f"W{L}"], grads[f"b{L}"] = s[T].T @ err / len(err), err.mean(axis=0)
        if self.dtype != np.float64:
            self.clamp(x)
        return grads
