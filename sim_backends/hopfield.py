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

Speed (ALGORITHMS.md section 8): the input drive ``x W_1 + b_1`` is computed
once per clamp and parameter change, shared by every phase; ``parameters()``
hands out read-only snapshots (the arrays are replaced on update, never
written in place), so reading theta costs nothing; native homeostasis records
the state it holds against and a one-update release applies
``theta' = theta + eps (dE/dtheta(s_beta1) - dE/dtheta(s_beta2))`` as one
product per weight tensor (the first layer's as ``x^T (s_1' - s_1)``), the knobs
being formed only if read, the new arrays clipped in place. The sweeps are
accelerated (heavy ball on the watched parity class, :mod:`sim_backends.hopfield_relax`):
the same equilibria in about 40 % fewer sweeps; the box is the clip ufunc itself
(a third of a sweep's time went to ``np.maximum`` and ``np.minimum``).
``dtype="float32"`` halves memory traffic; the oracle always computes in float64.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.floating import FloatingParameters, per_tensor, within_bounds  # noqa: F401  (per_tensor re-exported)
from sim_backends.hopfield_oracle import HopfieldOracle
from sim_backends.hopfield_relax import Acceleration, HopfieldRelaxation, clip_ufunc, extent
from sim_backends.readout import check_beta, check_cost, cross_entropy, predict, readout_gradients

DTYPES = ("float64", "float32")

HIDDEN_BOX = (0.0, 1.0)
OUTPUT_BOX = (-1.0, 2.0)


class HopfieldSubstrate(HopfieldRelaxation, HopfieldOracle, FloatingParameters):
    """A batched layered Hopfield network, float64 (or float32) compute.

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
        ||W|| tol). The last sweep is always a plain one.
    acceleration:
        Heavy-ball acceleration of the sweeps (:class:`~sim_backends.hopfield_relax.Acceleration`;
        the default measures the contraction and accelerates; ``Acceleration(enabled=False)``
        gives plain block coordinate descent; a dict of its fields, or True / False, from a
        run config). Same equilibria, about 40 % fewer sweeps.
    seed, init_gain:
        Seed the initial parameters: Glorot-uniform weights times ``init_gain``
        (below about 0.7 the energy stays convex in the state at the start,
        so the first equilibria are not saturated), zero biases.
    dtype:
        ``"float64"`` or ``"float32"``: the precision of the state, parameters and
        every product (float32: about half the time on large layers).
    cost:
        ``"squared"`` (the output units are the last layer, nudged toward y) or
        ``"cross-entropy"``: the last layer is a softmax readout of the top hidden
        layer, outside the energy (:mod:`sim_backends.readout`).
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
        dtype: str = "float64",
        cost: str = "squared",
        acceleration: Acceleration | Mapping[str, Any] | bool | None = None,
    ):
        layers = tuple(int(n) for n in layers)
        if len(layers) < 2 or min(layers) < 1:
            raise ConfigurationError(f"layers={layers}: need at least an input and an output size, all >= 1")
        for name, value, ok in (
            ("bound", bound, bound > 0),
            ("tol", tol, tol > 0),
            ("max_sweeps", max_sweeps, max_sweeps >= 1),
        ):
            if not ok:
                raise ConfigurationError(f"{name}={value}: must be {'>= 1' if name == 'max_sweeps' else '> 0'}")
        if str(dtype) not in DTYPES:
            raise ConfigurationError(f"dtype={dtype!r}: valid: {', '.join(DTYPES)}")
        self.dtype = np.dtype(str(dtype))
        self.layers = layers
        self.L = len(layers) - 1
        self.readout = check_cost(cost, len(layers))
        self.T = self.L - 1 if self.readout else self.L  # the top layer of the energy
        self.tol = float(tol)
        self.max_sweeps = int(max_sweeps)
        self.joint_rtol = float(joint_rtol)
        self.max_joint_updates = int(max_joint_updates)
        names = [f"{k}{l}" for l in range(1, self.L + 1) for k in ("W", "b")]
        shapes: dict[str, tuple[int, ...]] = {}
        for l in range(1, self.L + 1):
            shapes[f"W{l}"] = (layers[l - 1], layers[l])
            shapes[f"b{l}"] = (layers[l],)
        self.info = SubstrateInfo(
            n_inputs=layers[0],
            n_outputs=layers[-1],
            parameter_shapes=shapes,
            parameter_bounds={n: (-float(bound), float(bound)) for n in names},
            max_batch=max_batch,
            capabilities=frozenset({"eqprop", "aeqprop", "homeostasis", "oracle"}),
            description=f"layered Hopfield network {'-'.join(map(str, layers))}"
            + (", softmax readout" if self.readout else ""),
        )
        self.eps = per_tensor("eps", eps, names)
        rng = np.random.default_rng(seed)
        self.W = [None] + [
            rng.uniform(-1, 1, (layers[l - 1], layers[l])) * init_gain * np.sqrt(6.0 / (layers[l - 1] + layers[l]))
            for l in range(1, self.L + 1)
        ]
        self.b = [None] + [np.zeros(layers[l], dtype=self.dtype) for l in range(1, self.L + 1)]
        self.W = [None] + [np.clip(w, -bound, bound).astype(self.dtype) for w in self.W[1:]]
        # native homeostasis not yet turned into knob values (see homeostasis): theta, state, beta, y
        self._held: tuple[dict[str, np.ndarray], list[np.ndarray], float, np.ndarray | None] | None = None
        self._views: tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]] | None = None  # parameters()'s
        self._u = self.parameters()
        self._x = np.zeros((1, layers[0]), dtype=self.dtype)
        self._drive: np.ndarray | None = None  # x W_1 + b_1 for the clamped x and current W_1, b_1
        self._s: list[np.ndarray] = []
        self._reset_state(1)
        self._beta = 0.0
        self._y: np.ndarray | None = None
        self._targets: tuple[object, np.ndarray] = (None, np.empty((0, layers[-1])))  # (y given, y checked)
        self._stale = True
        self.total_sweeps = 0
        self._reach: dict[str, float] = {}  # bounds on max |theta| per tensor, kept by the release
        self._x_l1: float | None = None
        self.acceleration = Acceleration.of(acceleration)
        self._rho: float | None = None  # the plain contraction measured by the free phase on the clamped x
        self._WT: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._boxes: dict[np.dtype, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        # Each parity class is an exact function of the other, so when the smaller class stops
        # moving the sweep is at a fixed point: only its change is measured.
        odd, even = list(range(1, self.T + 1, 2)), list(range(2, self.T + 1, 2))
        self._classes = (odd, even)
        self._watched = 1 if 0 < sum(layers[l] for l in even) <= sum(layers[l] for l in odd) else 0

    # -- state ----------------------------------------------------------------
    def _reset_state(self, batch: int) -> None:
        self._s = [self._x] + [np.zeros((batch, n), dtype=self.dtype) for n in self.layers[1:]]
        self._zero = True  # the first sweep's bottom layer needs no product with the zero layer above
        self._free: list[np.ndarray] | None = None  # the free equilibrium on these inputs, once settled
        self._state_beta: float | None = None  # the nudging the state last settled under

    def _box(self, l: int) -> tuple[float, float]:
        return OUTPUT_BOX if l == self.L and not self.readout else HIDDEN_BOX

    def _array(self, name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
        a = check_array(name, a, shape)
        return a if self.dtype == np.float64 else a.astype(self.dtype)

    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs, shape (batch, n_inputs); the state restarts from zero."""
        x = self._array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._x = x
        self._drive, self._x_l1 = None, None
        self._rho = None
        self._reset_state(x.shape[0])
        if self._y is not None and self._y.shape[0] != x.shape[0]:
            self._beta, self._y = 0.0, None
        self._stale = True

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """Nudging toward y with strength beta (0 removes it); with the squared cost beta <= -1 is refused."""
        beta = check_beta(beta, self.readout)
        if beta != 0.0 and y is None:
            raise ConfigurationError("nudge with beta != 0 needs a target y")
        if y is not None:
            seen, checked = self._targets
            if y is not seen or checked.shape[0] != self._x.shape[0]:  # a step nudges twice toward one y
                self._targets = (y, self._array("y", y, (self._x.shape[0], self.info.n_outputs)))
            y = self._targets[1]
        self._beta, self._y = beta, y
        self._stale = True

    def _input_drive(self) -> np.ndarray:
        """``x W_1 + b_1``, computed once per clamp and change of W_1 or b_1."""
        if self._drive is None:
            self._drive = np.dot(self._x, self.W[1])
            self._drive += self.b[1]
        return self._drive

    def outputs(self) -> np.ndarray:
        """The output units, or with the readout the class probabilities."""
        self._settle()
        if self.readout:
            return predict(self._s[self.T], self.W[self.L], self.b[self.L])
        return self._s[self.L].copy()

    def state(self) -> list[np.ndarray]:
        """The settled layers ``[x, s_1, ..., s_L]`` (copies; with the readout s_L are the
        probabilities); for checks and plots."""
        self._settle()
        out = [a.copy() for a in self._s]
        if self.readout:
            out[self.L] = self.outputs()
        return out

    def energy(self) -> float:
        """F = E + beta C at the current state (as it stands: no settling), batch mean."""
        s, W, b = self._s, self.W, self.b
        e = 0.0
        for l in range(1, self.T + 1):
            e += 0.5 * np.sum(s[l] ** 2) - np.sum((s[l - 1] @ W[l]) * s[l]) - np.sum(s[l] @ b[l])
        if self._beta != 0.0:
            assert self._y is not None  # nudge refuses beta != 0 without a target
            if self.readout:
                p = predict(s[self.T], W[self.L], b[self.L])
                return float(e / s[0].shape[0]) + self._beta * cross_entropy(p, self._y)
            e += self._beta * 0.5 * np.sum((s[self.L] - self._y) ** 2)
        return float(e / s[0].shape[0])

    # -- parameters (capability "eqprop") -------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """Read theta: read-only snapshots (the arrays are replaced on every change, never written,
        so the views are made once per change: a step reads theta three times)."""
        arrays = (*self.W[1:], *self.b[1:])
        kept = self._views
        if kept is None or any(a is not k for a, k in zip(arrays, kept[0], strict=True)):
            out = {}
            for l in range(1, self.L + 1):
                out[f"W{l}"] = _frozen(self.W[l])
                out[f"b{l}"] = _frozen(self.b[l])
            kept = self._views = (arrays, out)
        return dict(kept[1])

    def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]:
        clipped = {}
        for name, value in theta.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown parameter {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            kept, clipped[name] = within_bounds(
                name, value, self.info.parameter_shapes[name], self.info.parameter_bounds[name], copy, self.dtype
            )
            target = self.W if name[0] == "W" else self.b
            target[int(name[1:])] = kept
            self._reach.pop(name, None)
            if name in ("W1", "b1"):
                self._drive = None
        self._stale = True
        return clipped

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta; values past the bounds are clipped. Returns entries clipped per tensor."""
        return self._assign(theta)

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dW_l = -mean(s_(l-1) s_l^T), dE/db_l = -mean(s_l) at the current equilibrium
        (for the readout, which is outside E: beta dC/dtheta, see :mod:`sim_backends.readout`)."""
        self._settle()
        return self._gradients(self._s, self._beta, self._y)

    def _gradients(self, s: list[np.ndarray], beta: float, y: np.ndarray | None) -> dict[str, np.ndarray]:
        B = s[0].shape[0]
        out = {}
        for l in range(1, self.T + 1):
            g = s[l - 1].T @ s[l]
            g *= -1.0 / B
            out[f"W{l}"] = g
            out[f"b{l}"] = s[l].sum(axis=0) * (-1.0 / B)
        if self.readout:
            out[f"W{self.L}"], out[f"b{self.L}"] = readout_gradients(s[self.T], self.W[self.L], self.b[self.L], y, beta)
        return out

    # -- floating parameters (capability "aeqprop"): see sim_backends.floating --
    _knobs: dict[str, np.ndarray]

    @property
    def _u(self) -> dict[str, np.ndarray]:
        """The knobs; a pending native homeostasis is turned into values on first read."""
        if self._held is not None:
            theta, s, beta, y = self._held
            g = self._gradients(s, beta, y)
            self._knobs = {n: theta[n] + self.eps[n] * g[n] for n in g}
            self._held = None
        return self._knobs

    @_u.setter
    def _u(self, value: dict[str, np.ndarray]) -> None:
        self._knobs, self._held = value, None

    def homeostasis(self) -> None:
        """Native homeostasis: u = theta + eps dE/dtheta(s), so theta feels no net force.

        Recorded as (theta, state) and turned into knob values only when read: a
        one-update release needs only the difference of the two states.
        """
        self._settle()
        self._held = (self.parameters(), [self._s[0]] + [a.copy() for a in self._s[1:]], self._beta, self._y)

    def release(self, duration: float | None = None) -> RelaxReport:
        """As :meth:`FloatingParameters.release`; one update after native homeostasis is
        ``theta' = theta_h + eps (dE/dtheta(s_h) - dE/dtheta(s))``, one product per weight tensor."""
        held = self._held
        if held is None or duration != 1.0:
            return super().release(duration)
        t0 = time.perf_counter()
        report = RelaxReport(sweeps=0, residual=0.0, converged=True)
        if self._stale:
            report = report + self._relax(self.tol, self.max_sweeps)
        theta, s_h, beta_h, y_h = held
        s = self._s
        if s_h[-1].shape != s[-1].shape:  # clamped to another batch since: the general path
            return super().release(duration)
        scale = 1.0 / s[0].shape[0]
        target = {}
        growth = {}  # bounds on max |theta' - theta|, per tensor where one is cheap
        for l in range(1, self.T + 1):
            if s[l - 1] is s_h[l - 1]:  # the same clamped x: x^T s_1' - x^T s_1 = x^T (s_1' - s_1)
                d = s[l] - s_h[l]
                d *= self.eps[f"W{l}"] * scale
                w = s[l - 1].T @ d
                # |x^T d|_ij <= sum_b |x_bi| |d_bj| <= max_i ||x_:i||_1 max |d|
                growth[f"W{l}"] = self._column_l1() * extent(d)
            else:
                w = s[l - 1].T @ (s[l] * (self.eps[f"W{l}"] * scale))
                w -= s_h[l - 1].T @ (s_h[l] * (self.eps[f"W{l}"] * scale))
            w += theta[f"W{l}"]
            target[f"W{l}"] = w
            target[f"b{l}"] = theta[f"b{l}"] + (s[l].sum(axis=0) - s_h[l].sum(axis=0)) * (self.eps[f"b{l}"] * scale)
        if self.readout:  # theta_h + eps (beta_h dC/dtheta(s_h) - beta dC/dtheta(s)), small tensors
            T, L = self.T, self.L
            held_g = readout_gradients(s_h[T], theta[f"W{L}"], theta[f"b{L}"], y_h, beta_h)
            now_g = readout_gradients(s[T], self.W[L], self.b[L], self._y, self._beta)
            for k, name in enumerate((f"W{L}", f"b{L}")):
                target[name] = theta[name] + self.eps[name] * (held_g[k] - now_g[k])
        for name, value in target.items():  # fresh arrays: clipped in place, unless provably inside
            self._reach[name] = self._keep_inside(name, value, self._reach.get(name), growth.get(name))
            (self.W if name[0] == "W" else self.b)[int(name[1:])] = value
        self._drive, self._stale = None, True
        report.seconds = time.perf_counter() - t0
        return report

    def _keep_inside(self, name: str, value: np.ndarray, reach: float | None, growth: float | None) -> float:
        """Clip ``value`` (theta + a change) in place to its bounds; return a bound on its max |entry|.

        ``reach`` bounds max |theta| and ``growth`` max |change|: when their sum is inside the box,
        nothing is read (a pass over a large tensor saved on most steps); else the extremes are read,
        the tensor clipped if it must be, and the bound made exact again.
        """
        lo, hi = self.info.parameter_bounds[name]
        if reach is not None and growth is not None and reach + growth <= min(-lo, hi):
            return reach + growth
        low, high = float(value.min()), float(value.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise RelaxationError(f"refusing non-finite values for parameter {name}")
        if low < lo or high > hi:
            clip_ufunc(value, lo, hi, out=value)
            low, high = max(low, lo), min(high, hi)
        return max(-low, high)

    def _column_l1(self) -> float:
        """``max_i sum_b |x_bi|`` of the clamped inputs (kept with the drive, per clamp)."""
        if self._x_l1 is None:
            self._x_l1 = float(np.abs(self._x).sum(axis=0).max())
        return self._x_l1

    def close(self) -> None:
        """Nothing to switch off in simulation; removes nudging."""
        self._beta, self._y = 0.0, None


def _frozen(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view
