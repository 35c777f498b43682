"""Layered network with untied forward and backward weights: dynamics without an energy.

Same layers, boxes and block order as :mod:`sim_backends.hopfield`, but unit
layer l is driven by its lower neighbour through the forward weights W_l and
by its upper neighbour through separate backward weights B_(l+1)::

    s_l = clip(s_(l-1) W_l + b_l + s_(l+1) B_(l+1)^T)      (nudged output: (pre + beta y) / (1 + beta))

B_l has the shape of W_l. With B_l = W_l this is exactly the Hopfield network;
otherwise the fixed-point map is a vector field that is not a gradient, and
EqProp's contrast of dE/dtheta is undefined (no "eqprop" capability). The
setting ``angle`` (degrees) builds each backward matrix as
``B = cos(angle) W + sin(angle) R``, R random, orthogonal to W (Frobenius) and
of the same norm, so ||B|| = ||W|| and the angle between them is ``angle``.

For comparison, :meth:`UntiedSubstrate.symmetric_gradient` is the oracle
gradient of the symmetric network (Hopfield with the forward weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo
from sim_backends.floating import within_bounds
from sim_backends.hopfield import HopfieldSubstrate


class UntiedSubstrate(HopfieldSubstrate):
    """Layered network whose backward weights B_l are separate parameters.

    Example: ``UntiedSubstrate((64, 256, 10), angle=30.0, seed=0)``. Parameters
    ``W1..WL``, ``b1..bL`` and ``B2..BL`` (B_1 would drive the clamped input).
    Other options as :class:`~sim_backends.hopfield.HopfieldSubstrate`.
    """

    description = "layered network with untied forward/backward weights (no energy), angle setting"

    def __init__(
        self,
        layers: Sequence[int] = (64, 256, 10),
        angle: float = 0.0,
        seed: int = 0,
        bound: float = 1.0,
        **options: Any,  # passed on to HopfieldSubstrate
    ):
        angle = float(angle)
        if not (np.isfinite(angle) and 0.0 <= angle <= 180.0):
            raise ConfigurationError(f"angle={angle}: the forward/backward angle must be in degrees, 0 to 180")
        if options.get("cost", "squared") != "squared":
            raise ConfigurationError("the untied network has the squared cost only; remove cost")
        super().__init__(layers, seed=seed, bound=bound, **options)
        self.angle = angle
        rng = np.random.default_rng([seed, 7])
        a = np.deg2rad(angle)
        self.B: list[np.ndarray] = [np.empty(0), np.empty(0)]  # no B_0, B_1: indices are layer numbers
        for l in range(2, self.L + 1):
            w = self.W[l]
            r = rng.normal(size=w.shape)
            nw = np.linalg.norm(w)
            r -= (np.sum(r * w) / nw**2) * w
            r *= nw / np.linalg.norm(r)
            self.B.append(np.clip(np.cos(a) * w + np.sin(a) * r, -bound, bound))
        info = self.info
        shapes = dict(info.parameter_shapes)
        bounds = dict(info.parameter_bounds)
        for l in range(2, self.L + 1):
            shapes[f"B{l}"] = shapes[f"W{l}"]
            bounds[f"B{l}"] = bounds[f"W{l}"]
        self.info = SubstrateInfo(
            n_inputs=info.n_inputs,
            n_outputs=info.n_outputs,
            parameter_shapes=shapes,
            parameter_bounds=bounds,
            max_batch=info.max_batch,
            capabilities=frozenset(),
            description=f"untied layered network {'-'.join(map(str, self.layers))}, angle {angle:g} deg",
        )

    def backward_angles(self) -> dict[str, float]:
        """The angle in degrees between each W_l and B_l (Frobenius inner product)."""
        out = {}
        for l in range(2, self.L + 1):
            w, b = self.W[l], self.B[l]
            c = np.sum(w * b) / (np.linalg.norm(w) * np.linalg.norm(b))
            out[f"B{l}"] = float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
        return out

    # -- dynamics ---------------------------------------------------------------
    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        s, W, B, b, L = self._s, self.W, self.B, self.b, self.L
        beta, y = self._beta, self._y
        drive1 = self._x @ W[1] + b[1]
        change, sweeps = np.inf, 0
        order = list(range(1, L + 1, 2)) + list(range(2, L + 1, 2))
        while sweeps < max_sweeps:
            sweeps += 1
            change = 0.0
            for l in order:
                pre = drive1 if l == 1 else s[l - 1] @ W[l] + b[l]
                if l < L:
                    pre = pre + s[l + 1] @ B[l + 1].T
                elif y is not None and beta != 0.0:
                    pre = (pre + beta * y) / (1.0 + beta)
                lo, hi = self._box(l)
                new = np.clip(pre, lo, hi)
                change = max(change, float(np.max(np.abs(new - s[l]))))
                s[l] = new
            if not np.isfinite(change):
                raise RelaxationError("the state became non-finite during relaxation; check the parameters")
            if change <= tol:
                break
        return self._settled(sweeps, change, tol)

    def energy(self) -> float:
        raise ConfigurationError("the untied network has no energy (its dynamics are not a gradient)")

    def energy_gradients(self) -> dict[str, np.ndarray]:
        raise ConfigurationError("the untied network has no energy, so no dE/dtheta; use the vector-field protocol")

    # -- no floating parameters: capability "aeqprop" (and "homeostasis") is not claimed -------------
    def _no_knobs(self) -> ConfigurationError:
        return ConfigurationError(
            "the untied network has no energy for its parameters to float against, so no knobs or release; "
            "use the vector-field protocol"
        )

    def knobs(self) -> dict[str, np.ndarray]:
        raise self._no_knobs()

    def set_knobs(self, u: Mapping[str, np.ndarray]) -> None:
        raise self._no_knobs()

    def release(self, duration: float | None = None) -> RelaxReport:
        raise self._no_knobs()

    def homeostasis(self) -> None:
        raise self._no_knobs()

    # -- parameters ---------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        out = super().parameters()
        for l in range(2, self.L + 1):
            if getattr(self, "B", None) is not None:
                out[f"B{l}"] = self.B[l].copy()
        return out

    def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]:
        theta = dict(theta)
        backward = {n: theta.pop(n) for n in list(theta) if n.startswith("B")}
        clipped = super()._assign(theta, copy)
        for name, value in backward.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown parameter {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            self.B[int(name[1:])], clipped[name] = within_bounds(
                name, value, self.info.parameter_shapes[name], self.info.parameter_bounds[name], copy
            )
        self._stale = True
        return clipped

    # -- comparison with the symmetric network (simulation only) --------------------
    def symmetric(self) -> HopfieldSubstrate:
        """The Hopfield network with the same forward weights and biases (B_l = W_l)."""
        lo, hi = self.info.parameter_bounds["W1"]
        net = HopfieldSubstrate(
            self.layers, bound=hi, tol=self.tol, max_sweeps=self.max_sweeps, max_batch=self.info.max_batch
        )
        net.set_parameters({n: v for n, v in self.parameters().items() if not n.startswith("B")})
        return net

    def symmetric_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Oracle dL/dtheta of the symmetric network (keys W_l, b_l): the yardstick for the estimate."""
        return self.symmetric().true_gradient(x, y)

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        raise ConfigurationError("the untied network has no oracle; symmetric_gradient() is that of B = W")
