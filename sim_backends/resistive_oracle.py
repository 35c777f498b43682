"""The oracle of the deep resistive network: the exact loss and dL/dg by implicit differentiation.

The free equilibrium is settled tightly, then solved exactly on its active set (Kirchhoff's law with
every diode held in the state it is in, kept only if every diode agrees). The gradient solves
``H lambda = dC/dV`` on the nodes not held by a diode (H is the conductance Laplacian there; held
nodes have lambda = 0); layers of equal parity do not touch, so the odd layers are eliminated
exactly and only the even layers are solved densely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array

#: The entry for layer 0 (the sources) in per-layer lists that only layers 1..L use.
NO_LAYER = np.empty(0)
NO_LAYER.flags.writeable = False


class ResistiveOracle:
    """Capability "oracle" of :class:`~sim_backends.resistive.ResistiveSubstrate` (a mixin)."""

    # provided by the host class
    info: SubstrateInfo
    L: int  # layers after the sources
    sizes: tuple[int, ...]  # nodes per layer, the sources (two per input) first
    theta: dict[str, np.ndarray]  # conductances W1, b1 .. WL, bL in S
    lo: list[np.ndarray]  # diode bounds per layer, V
    hi: list[np.ndarray]
    v_bias: float  # rail voltage, V
    _s: list[np.ndarray]  # node voltages [V_0, V_1 .. V_L] in V, leading batch axis
    _x: np.ndarray
    _y: np.ndarray | None
    _beta: float

    if TYPE_CHECKING:

        def clamp(self, x: np.ndarray) -> None: ...
        def nudge(self, beta: float, y: np.ndarray | None = None) -> None: ...
        def _relax(self, tol: float, max_sweeps: int) -> RelaxReport: ...
        def _conductance_sums(self) -> list[np.ndarray]: ...
        def _drives(self, den: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]: ...
        def _input_terms(self) -> tuple[np.ndarray, float]: ...
        def currents(self) -> tuple[np.ndarray, float]: ...

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """L = mean_batch 1/2 ||o - y||^2 at the exact free equilibrium (settled, then solved on its active set)."""
        self.clamp(x)
        self.nudge(0.0)
        self._relax(1e-9, 100_000)
        for _ in range(20):
            if self._polish():
                break
            self._relax(1e-9, 100_000)
        else:
            self._relax(1e-15, 100_000)
        y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        return float(0.5 * np.sum((self._s[self.L] - y) ** 2) / y.shape[0])

    def _free(self) -> list[np.ndarray]:
        """Per layer 1..L, 1.0 where a node is not held by its diode (and not isolated), else 0.0."""
        den = self._conductance_sums()
        return [NO_LAYER] + [
            ((self._s[l] > self.lo[l]) & (self._s[l] < self.hi[l]) & (den[l] > 0)).astype(np.float64)
            for l in range(1, self.L + 1)
        ]

    def _solve(self, r: list[np.ndarray], free: list[np.ndarray]) -> list[np.ndarray]:
        """Solve d2F/dV2 v = r on the free nodes (v = 0 on held ones), per sample.

        Layers of equal parity do not touch, so the odd layers (diagonal blocks)
        are eliminated exactly and only the even layers are solved densely.
        """
        L, th = self.L, self.theta
        den = self._conductance_sums()
        d = [NO_LAYER] + [
            np.divide(free[l], den[l], out=np.zeros_like(free[l]), where=den[l] > 0) for l in range(1, L + 1)
        ]

        def K(p: int, q: int) -> np.ndarray:  # row q of KCL holds -v_p @ K(p, q)
            return th[f"W{q}"] if p == q - 1 else th[f"W{p}"].T

        even = list(range(2, L + 1, 2))
        sizes = [self.sizes[m] for m in even]
        off = dict(zip(even, np.concatenate([[0], np.cumsum(sizes)]).astype(int)))
        B, Ne = r[1].shape[0], int(sum(sizes))
        M, t = np.zeros((B, Ne, Ne)), np.zeros((B, Ne))
        for m in even:
            bm = slice(off[m], off[m] + self.sizes[m])
            M[:, bm, bm] += np.diag(den[m])
            t[:, bm] += r[m]
            for l in (m - 1, m + 1):
                if l > L:
                    continue
                t[:, bm] += (d[l] * r[l]) @ K(l, m)
                for k in (l - 1, l + 1):
                    if k in off:
                        bk = slice(off[k], off[k] + self.sizes[k])
                        M[:, bk, bm] -= np.einsum("ij,bj,jk->bik", K(k, l), d[l], K(l, m))
        if Ne:
            fe = np.concatenate([free[m] for m in even], axis=1)
            M = M * fe[:, :, None] * fe[:, None, :]
            M[:, np.arange(Ne), np.arange(Ne)] += 1.0 - fe
            ve = np.linalg.solve(M, (t * fe)[:, :, None])[:, :, 0]
        v = [NO_LAYER] * (L + 1)
        for m in even:
            v[m] = ve[:, off[m] : off[m] + self.sizes[m]]
        for l in range(1, L + 1, 2):
            acc = r[l].copy()
            for k in (l - 1, l + 1):
                if k in off:
                    acc += v[k] @ K(k, l)
            v[l] = d[l] * acc
        return v

    def _polish(self) -> bool:
        """Solve KCL exactly with the diodes in their current states; keep it if every diode agrees."""
        s, L, B = self._s, self.L, self._s[0].shape[0]
        rail, _ = self._drives(self._conductance_sums())
        r = [NO_LAYER] + [np.broadcast_to(rail[l], (B, self.sizes[l])).copy() for l in range(1, L + 1)]
        r[1] += self._input_terms()[0]
        if self._y is not None and self._beta != 0.0:
            r[L] += self._beta * self._y
        v = self._solve(r, self._free())
        old = [a.copy() for a in s]
        s[1:] = v[1:]
        res, big = self.currents()
        inside = all(np.all((s[l] >= self.lo[l]) & (s[l] <= self.hi[l])) for l in range(1, L))
        if inside and np.max(np.abs(res)) <= 1e-12 * max(big, 1e-300):
            return True
        self._s[:] = old
        return False

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """dL/dg by implicit differentiation at the free equilibrium.

        Solve ``H lambda = dC/dV`` on the nodes not held by a diode (H is the
        conductance Laplacian there; held nodes have lambda = 0), then
        ``dL/dg_ij = -(V_i - V_j)(lambda_i - lambda_j)``. Leaves the substrate clamped to x.
        """
        self.loss(x, y)
        s, L, vb = self._s, self.L, self.v_bias
        B = s[0].shape[0]
        r = [NO_LAYER] + [np.zeros_like(s[l]) for l in range(1, L + 1)]
        r[L] = s[L] - y
        lams = [np.zeros_like(s[0])] + self._solve(r, self._free())[1:]
        grads = {}
        for l in range(1, L + 1):
            a, c, la, lc = s[l - 1], s[l], lams[l - 1], lams[l]
            cross = (a.T @ lc + la.T @ c) / B
            grads[f"W{l}"] = -(np.mean(a * la, axis=0)[:, None] + np.mean(c * lc, axis=0)[None, :] - cross)
            grads[f"b{l}"] = -np.stack([np.mean((c - vb) * lc, axis=0), np.mean((c + vb) * lc, axis=0)])
        return grads
