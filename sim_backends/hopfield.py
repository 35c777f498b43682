"""Layered Hopfield network (ALGORITHMS.md section 4) as a simulated substrate.

Energy, per sample, with s_0 = x clamped and s_L = o the outputs::

    E = sum_l 1/2 ||s_l||^2 - sum_l s_(l-1)^T W_l s_l - sum_l b_l^T s_l

Box constraints act as the activation (hidden units in [0, 1], outputs in
[-1, 2]). Layers of equal parity do not interact, so the exact minimiser of a
layer given its neighbours is a clipped closed form; alternating odd and even
layers is exact block coordinate descent and never raises F = E + beta C.

Floating parameters (Aeqprop) are tied to knobs u by a compliance eps per
tensor. E is linear in theta, so the exact parameter block given the state is
``theta = u - eps dE/dtheta(s)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.floating import FloatingParameters, per_tensor, within_bounds  # noqa: F401  (per_tensor re-exported)

HIDDEN_BOX = (0.0, 1.0)
OUTPUT_BOX = (-1.0, 2.0)


class HopfieldSubstrate(FloatingParameters):
    """A batched, float64 layered Hopfield network.

    Parameters
    ----------
    layers:
        Sizes ``(n_inputs, hidden..., n_outputs)``; any number of hidden layers.
    eps:
        Compliance of the coupling between each parameter and its knob
        (a float, or per tensor / per kind: ``{"W": 0.1, "b": 0.02}``).
    bound:
        Parameters are held within [-bound, bound].
    tol, max_sweeps:
        A relaxation stops when no unit moves by more than ``tol`` in a sweep,
        or after ``max_sweeps`` sweeps. Only the smaller parity class of layers
        (odd or even) is watched: the other is an exact function of it, so it
        is settled once the watched one is (its next change is at most
        ||W|| tol).
    seed, init_gain:
        Seed the initial parameters: Glorot-uniform weights times ``init_gain``
        (below about 0.7 the energy stays convex in the state at the start,
        so the first equilibria are not saturated), zero biases.
    """

    def __init__(
        self,
        layers: Sequence[int] = (64, 256, 10),
        eps: float | Mapping[str, float] = 0.1,
        bound: float = 1.0,
        tol: float = 1e-4,
        max_sweeps: int = 100,
        seed: int = 0,
        max_batch: int | None = 4096,
        init_gain: float = 0.5,
        joint_rtol: float = 1e-6,
        max_joint_updates: int = 500,
    ):
        layers = tuple(int(n) for n in layers)
        if len(layers) < 2 or min(layers) < 1:
            raise ConfigurationError(f"layers={layers}: need at least an input and an output size, all >= 1")
        for name, value, ok in (("bound", bound, bound > 0), ("tol", tol, tol > 0), ("max_sweeps", max_sweeps, max_sweeps >= 1)):
            if not ok:
                raise ConfigurationError(f"{name}={value}: must be {'>= 1' if name == 'max_sweeps' else '> 0'}")
        self.layers = layers
        self.L = len(layers) - 1
        self.tol = float(tol)
        self.max_sweeps = int(max_sweeps)
        self.joint_rtol = float(joint_rtol)
        self.max_joint_updates = int(max_joint_updates)
        names = [f"{k}{l}" for l in range(1, self.L + 1) for k in ("W", "b")]
        shapes = {}
        for l in range(1, self.L + 1):
            shapes[f"W{l}"] = (layers[l - 1], layers[l])
            shapes[f"b{l}"] = (layers[l],)
        self.info = SubstrateInfo(
            n_inputs=layers[0],
            n_outputs=layers[-1],
            parameter_shapes=shapes,
            parameter_bounds={n: (-float(bound), float(bound)) for n in names},
            max_batch=max_batch,
            capabilities=frozenset({"eqprop", "aeqprop", "oracle"}),
            description=f"layered Hopfield network {'-'.join(map(str, layers))}",
        )
        self.eps = per_tensor("eps", eps, names)
        rng = np.random.default_rng(seed)
        self.W = [None] + [
            rng.uniform(-1, 1, (layers[l - 1], layers[l])) * init_gain * np.sqrt(6.0 / (layers[l - 1] + layers[l]))
            for l in range(1, self.L + 1)
        ]
        self.b = [None] + [np.zeros(layers[l]) for l in range(1, self.L + 1)]
        self.W = [None] + [np.clip(w, -bound, bound) for w in self.W[1:]]
        self._u = self.parameters()
        self._x = np.zeros((1, layers[0]))
        self._s: list[np.ndarray] = []
        self._reset_state(1)
        self._beta = 0.0
        self._y: np.ndarray | None = None
        self._stale = True
        self.total_sweeps = 0

    # -- state ----------------------------------------------------------------
    def _reset_state(self, batch: int) -> None:
        self._s = [self._x] + [np.zeros((batch, n)) for n in self.layers[1:]]

    def _box(self, l: int) -> tuple[float, float]:
        return OUTPUT_BOX if l == self.L else HIDDEN_BOX

    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs, shape (batch, n_inputs); the state restarts from zero."""
        x = check_array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._x = x
        self._reset_state(x.shape[0])
        if self._y is not None and self._y.shape[0] != x.shape[0]:
            self._beta, self._y = 0.0, None
        self._stale = True

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """Squared-cost nudging toward y with strength beta (0 removes it); beta <= -1 is refused."""
        beta = float(beta)
        if not np.isfinite(beta) or beta <= -1.0:
            raise ConfigurationError(
                f"beta={beta}: with the squared cost and unit output self-energy, beta <= -1 "
                "destroys the minimum of F; use beta > -1"
            )
        if beta != 0.0:
            if y is None:
                raise ConfigurationError("nudge with beta != 0 needs a target y")
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        elif y is not None:
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        self._beta, self._y = beta, y
        self._stale = True

    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        """Settle the state by exact block coordinate descent (odd layers, then even)."""
        s, W, b, L = self._s, self.W, self.b, self.L
        beta, y = self._beta, self._y
        drive1 = self._x @ W[1] + b[1]  # the clamped input's drive, once per relaxation
        # the output block, (s_(L-1) W_L + b_L + beta y) / (1 + beta), as one product and one sum
        W_out, b_out = W[L], b[L]
        if beta != 0.0:
            W_out, b_out = W[L] / (1.0 + beta), (b[L] + beta * y) / (1.0 + beta)
        if L == 1:
            drive1 = (self._x @ W[1] + b[1] + beta * y) / (1.0 + beta) if beta != 0.0 else drive1
        # preallocated buffers: a sweep allocates nothing; a layer's new state swaps with its old one
        new = [None] + [np.empty_like(a) for a in s[1:]]
        WT = [None, None] + [np.ascontiguousarray(w.T) for w in W[2:]]
        odd, even = list(range(1, L + 1, 2)), list(range(2, L + 1, 2))
        # Each parity class is an exact function of the other, so when the smaller class stops
        # moving the sweep is at a fixed point: only its change is measured.
        watched = set(even if 0 < sum(self.layers[l] for l in even) <= sum(self.layers[l] for l in odd) else odd)
        diff = {l: np.empty_like(s[l]) for l in watched}
        change = np.inf
        sweeps = 0
        while sweeps < max_sweeps:
            sweeps += 1
            change = 0.0
            for l in odd + even:
                pre = new[l]
                if l == 1:
                    if L > 1:
                        np.matmul(s[2], WT[2], out=pre)
                        pre += drive1
                    else:
                        np.copyto(pre, drive1)
                else:
                    np.matmul(s[l - 1], W_out if l == L else W[l], out=pre)
                    pre += b_out if l == L else b[l]
                    if l < L:
                        pre += s[l + 1] @ WT[l + 1]
                lo, hi = self._box(l)
                np.maximum(pre, lo, out=pre)  # the box, as two ufuncs (np.clip's wrapper costs more)
                np.minimum(pre, hi, out=pre)
                if l in watched:
                    d = diff[l]
                    np.subtract(pre, s[l], out=d)
                    np.abs(d, out=d)
                    change = max(change, float(d.max()))
                new[l], s[l] = s[l], pre
            if not np.isfinite(change):
                raise RelaxationError("the state became non-finite during relaxation; check the parameters")
            if change <= tol:
                break
        return self._settled(sweeps, change, tol)

    def outputs(self) -> np.ndarray:
        self._settle()
        return self._s[self.L].copy()

    def state(self) -> list[np.ndarray]:
        """The settled layers ``[x, s_1, ..., s_L]`` (copies); for checks and plots."""
        self._settle()
        return [a.copy() for a in self._s]

    def energy(self) -> float:
        """F = E + beta C at the current state, batch mean."""
        s, W, b = self._s, self.W, self.b
        e = 0.0
        for l in range(1, self.L + 1):
            e += 0.5 * np.sum(s[l] ** 2) - np.sum((s[l - 1] @ W[l]) * s[l]) - np.sum(s[l] @ b[l])
        if self._beta != 0.0:
            e += self._beta * 0.5 * np.sum((s[self.L] - self._y) ** 2)
        return float(e / s[0].shape[0])

    # -- parameters (capability "eqprop") -------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        out = {}
        for l in range(1, self.L + 1):
            out[f"W{l}"] = self.W[l].copy()
            out[f"b{l}"] = self.b[l].copy()
        return out

    def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]:
        clipped = {}
        for name, value in theta.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown parameter {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            kept, clipped[name] = within_bounds(
                name, value, self.info.parameter_shapes[name], self.info.parameter_bounds[name], copy
            )
            target = self.W if name[0] == "W" else self.b
            target[int(name[1:])] = kept
        self._stale = True
        return clipped

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta; values past the bounds are clipped. Returns entries clipped per tensor."""
        return self._assign(theta)

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dW_l = -mean(s_(l-1) s_l^T), dE/db_l = -mean(s_l) at the current equilibrium."""
        self._settle()
        s, B = self._s, self._s[0].shape[0]
        out = {}
        for l in range(1, self.L + 1):
            g = s[l - 1].T @ s[l]
            g *= -1.0 / B
            out[f"W{l}"] = g
            out[f"b{l}"] = s[l].sum(axis=0) * (-1.0 / B)
        return out

    # -- floating parameters (capability "aeqprop"): see sim_backends.floating --

    # -- oracle (simulation only) ---------------------------------------------
    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """L = mean_batch 1/2 ||o(s_0) - y||^2 at a tightly settled free equilibrium."""
        self.clamp(x)
        self.nudge(0.0)
        self._relax(1e-13, 100_000)
        y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        return float(0.5 * np.sum((self._s[self.L] - y) ** 2) / y.shape[0])

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """dL/dtheta by implicit differentiation at the free equilibrium.

        Solve ``H lambda = dC/ds`` on the units not held at a box bound
        (H = d2E/ds2 there; bound units have lambda = 0), then
        ``grad L = -(d2E/dtheta ds) lambda``. Leaves the substrate clamped to x.
        """
        self.loss(x, y)
        s, L = self._s, self.L
        # Block-tridiagonal solve (block Thomas), layer 1 upward: H has identity
        # diagonal blocks and couplings -W_l between layers l-1 and l; units at a
        # bound are removed by masking their rows and columns. D_1 = I, so the
        # dense solves are only of the sizes of layers 2..L.
        masks = [None] + [((s[l] > self._box(l)[0]) & (s[l] < self._box(l)[1])).astype(np.float64) for l in range(1, L + 1)]
        rhs = [None] + [np.zeros_like(s[l]) for l in range(1, L + 1)]
        rhs[L] = (s[L] - y) * masks[L]
        D: list = [None, None]  # D_1 = I on the free units (identity on the bound ones too)
        red = [None, rhs[1]]
        for l in range(2, L + 1):
            A = masks[l - 1][:, :, None] * self.W[l][None] * masks[l][:, None, :]  # (B, n_(l-1), n_l)
            DinvA = A if D[l - 1] is None else np.linalg.solve(D[l - 1], A)
            Dinv_r = red[l - 1] if D[l - 1] is None else np.linalg.solve(D[l - 1], red[l - 1][:, :, None])[:, :, 0]
            D.append(np.eye(self.layers[l])[None] - np.einsum("bij,bik->bjk", A, DinvA))
            red.append(rhs[l] + np.einsum("bij,bi->bj", A, Dinv_r))
        lams = [np.zeros_like(s[0])] + [None] * L
        for l in range(L, 0, -1):
            r = red[l] if l == L else red[l] + np.einsum("bij,bj->bi", masks[l][:, :, None] * self.W[l + 1][None] * masks[l + 1][:, None, :], lams[l + 1])
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

    def close(self) -> None:
        """Nothing to switch off in simulation; removes nudging."""
        self._beta, self._y = 0.0, None
