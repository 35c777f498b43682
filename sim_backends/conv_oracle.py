"""The oracle of the convolutional Hopfield network: dL/dtheta by implicit differentiation.

At the free equilibrium the loss gradient is ``grad L = -(d2E/dtheta ds) lambda``
with ``H lambda = dC/ds`` on the units not held at a box bound (bound units
have lambda = 0). Here ``(H v)_l = v_l - A_l(v_(l-1)) - A_(l+1)^T(v_(l+1))``, applied
through the layer maps, never formed; the system is solved by conjugate
gradients, each sample its own system, to a relative residual of ``rtol``.
H is positive definite on the free units when the equilibrium is a strict
minimum; if CG does not converge the oracle says so instead of returning a
wrong gradient. A float32 substrate's oracle computes in float64 (its parameters
widened), so the yardstick does not carry the training precision's rounding.
``oracle_tol`` and ``oracle_rtol`` (1e-13 and 1e-12) may be loosened where the
gradient trains rather than checks (benchmarks/fashion_mnist_conv.py --oracle-tol).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from aeqprop.errors import RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.conv_ops import ConvHost, bias_gradient
from sim_backends.readout import cross_entropy, predict

State = list[np.ndarray]  # one array per layer, each with a leading batch axis


def _dot(u: State, v: State) -> np.ndarray:
    """Per-sample inner product of two states (lists of layers)."""
    out = np.zeros(len(u[0]))
    for a, c in zip(u, v):
        out += np.einsum("bi,bi->b", a.reshape(len(a), -1), c.reshape(len(c), -1))
    return out


def _scaled(v: State, k: np.ndarray) -> State:
    return [a * k.reshape((-1,) + (1,) * (a.ndim - 1)) for a in v]


class ConvOracle(ConvHost):
    """Capability "oracle" of :class:`~sim_backends.conv.ConvHopfieldSubstrate` (a mixin).

    The host class provides the attributes of :class:`~sim_backends.conv_ops.ConvHost`, those
    annotated here and the methods declared under TYPE_CHECKING.
    """

    oracle_tol = 1e-13  # relaxation tolerance of the free equilibrium the gradient is taken at
    oracle_rtol = 1e-12  # relative residual of the conjugate-gradient solve
    oracle_retries = 0  # solves done again at the tolerances above after failing at looser ones

    info: SubstrateInfo
    _stale: bool

    if TYPE_CHECKING:

        def clamp(self, x: np.ndarray) -> None: ...
        def nudge(self, beta: float, y: np.ndarray | None = None) -> None: ...
        def outputs(self) -> np.ndarray: ...
        def _relax(self, tol: float, max_sweeps: int) -> RelaxReport: ...

    def _hessian(self, v: State, masks: State, routes: dict[int, np.ndarray | None]) -> State:
        """H v on the free units, layers 1..T (v given as masked layers 1..T; max pooling's maps
        are the linear maps of the equilibrium's ``routes``)."""
        T, W = self.T, self.W
        out = []
        for l in range(1, T + 1):
            h = v[l - 1].copy()
            if l > 1:
                h -= self.maps[l].forward(v[l - 2], W[l], routes[l])
            if l < T:
                h -= self.maps[l + 1].adjoint(v[l], W[l + 1], routes[l + 1])
            out.append(h * masks[l - 1])
        return out

    def _solve(self, rhs: State, masks: State, routes: dict[int, np.ndarray | None]) -> State:
        """Batched conjugate gradients for H lambda = rhs (each sample separately)."""
        x = [np.zeros_like(r) for r in rhs]
        r = [a.copy() for a in rhs]
        p = [a.copy() for a in r]
        rr = _dot(r, r)
        target = self.oracle_rtol**2 * np.maximum(rr, 1e-300)
        n = sum(int(np.prod(a.shape[1:])) for a in rhs)
        for _ in range(4 * n + 20):
            if np.all(rr <= target):
                return x
            Hp = self._hessian(p, masks, routes)
            pHp = _dot(p, Hp)
            if np.any(pHp[rr > target] <= 0):
                break
            alpha = np.where(rr > target, rr / np.where(pHp > 0, pHp, 1.0), 0.0)
            x = [a + c for a, c in zip(x, _scaled(p, alpha))]
            r = [a - c for a, c in zip(r, _scaled(Hp, alpha))]
            rr_new = _dot(r, r)
            beta = np.where(rr > 0, rr_new / np.maximum(rr, 1e-300), 0.0)
            p = [a + c for a, c in zip(r, _scaled(p, beta))]
            rr = rr_new
        raise RelaxationError(
            "the oracle's solve did not converge: the free equilibrium is not a strict minimum on its free "
            "units (H not positive definite); lower init_gain or the weights"
        )

    @contextmanager
    def _float64(self) -> Iterator[None]:
        """Compute in float64 for the duration (the oracle), whatever the substrate's dtype;
        the state, inputs and what the relaxation keeps are put back after."""
        if self.dtype == np.float64:
            yield
            return
        saved: tuple[Any, ...] = (self.W, self.b, self._x, self._s, self._y, self._drive, self._cols, self._routes)
        kept = (self._free, self._state_beta, self._rho, self._buffers, self.dtype)
        self.W = [w.astype(np.float64) for w in self.W]
        self.b = [v.astype(np.float64) for v in self.b]
        self.dtype, self._drive, self._cols, self._buffers = np.dtype(np.float64), None, None, {}
        try:
            yield
        finally:
            self.W, self.b, self._x, self._s, self._y, self._drive, self._cols, self._routes = saved
            self._free, self._state_beta, self._rho, self._buffers, self.dtype = kept
            self._stale = True

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """L = mean_batch C at a tightly settled free equilibrium (squared, or cross-entropy), in float64."""
        with self._float64():
            return self._loss(x, y)

    def _loss(self, x: np.ndarray, y: np.ndarray) -> float:
        self.clamp(x)
        self.nudge(0.0)
        self._relax(self.oracle_tol, 100_000)
        y = check_array("y", y, (x.shape[0], self.info.n_outputs))
        if self.readout:
            return cross_entropy(self.outputs(), y)
        return float(0.5 * np.sum((self._s[self.L] - y) ** 2) / len(y))

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """dL/dtheta by implicit differentiation (conjugate gradients), in float64. Leaves the substrate
        clamped to x. Under loosened tolerances a solve that fails (a loosely settled state can leave
        H indefinite on the units it takes as free) is done again at the checking ones, counted in
        ``oracle_retries``."""
        with self._float64():
            try:
                grads = self._implicit(x, y)
            except RelaxationError:
                loose = (self.oracle_tol, self.oracle_rtol)
                if loose == (ConvOracle.oracle_tol, ConvOracle.oracle_rtol):
                    raise
                self.oracle_tol, self.oracle_rtol = ConvOracle.oracle_tol, ConvOracle.oracle_rtol
                try:
                    grads = self._implicit(x, y)
                finally:
                    self.oracle_tol, self.oracle_rtol = loose
                self.oracle_retries += 1
        if self.dtype != np.float64:
            self.clamp(x)
        return grads

    def _implicit(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        self._loss(x, y)
        y = check_array("y", y, (x.shape[0], self.info.n_outputs))
        s, T, L, B = self._s, self.T, self.L, x.shape[0]
        masks = [((s[l] > self._box(l)[0]) & (s[l] < self._box(l)[1])).astype(np.float64) for l in range(1, T + 1)]
        rhs = [np.zeros_like(s[l]) for l in range(1, T + 1)]
        if self.readout:
            err = predict(s[T].reshape(B, -1), self.W[L], self.b[L]) - y
            rhs[-1] = (err @ self.W[L].T).reshape(s[T].shape)
        else:
            rhs[-1] = s[L] - y
        rhs = [r * m for r, m in zip(rhs, masks)]
        # max pooling: near the equilibrium (no ties) each map is the linear map of its route there
        routes = {l: self.maps[l].route(s[l - 1], self.W[l]) for l in range(1, T + 1)}
        lam = [np.zeros_like(s[0])] + self._solve(rhs, masks, routes)
        grads = {}
        for l in range(1, T + 1):
            g = self.maps[l].gradient(s[l - 1], lam[l], routes[l])
            if l > 1:
                g += self.maps[l].gradient(lam[l - 1], s[l], routes[l])
            grads[f"W{l}"] = g / B
            grads[f"b{l}"] = bias_gradient(lam[l]) / B
        if self.readout:
            grads[f"W{L}"] = s[T].reshape(B, -1).T @ err / B
            grads[f"b{L}"] = err.mean(axis=0)
        return grads
