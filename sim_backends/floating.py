"""Floating parameters tied to knobs (ALGORITHMS.md section 3), shared by the simulated substrates.

A substrate whose energy is linear in theta (Hopfield weights, resistor
conductances) has an exact parameter block given the state:
``theta = clip(u - eps dE/dtheta(s))``. :class:`FloatingParameters` builds the
Aeqprop capability on that: knobs, native homeostasis, short release and
release to joint equilibrium with a runaway (stiffness) guard.

A host class provides the attributes annotated on :class:`FloatingParameters`
(``eps`` per tensor, ``_u`` (knobs), ``_stale``, ``tol``, ``max_sweeps``, ``joint_rtol``,
``max_joint_updates``, ``total_sweeps``) and the methods declared there under
TYPE_CHECKING: ``parameters()``, ``energy_gradients()``, ``_assign(theta, copy=True)``
(clips to the bounds) and ``_relax(tol, max_sweeps) -> RelaxReport``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from aeqprop.errors import ConfigurationError, RelaxationError, StiffnessError
from aeqprop.substrate import RelaxReport


def within_bounds(
    name: str,
    value: ArrayLike,
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    copy: bool = True,
    dtype: DTypeLike = np.float64,
) -> tuple[np.ndarray, int]:
    """``value`` as ``dtype`` (float64 unless the substrate computes in float32) clipped to
    ``bounds``, and how many entries were clipped.

    Raises ConfigurationError on a wrong shape and RelaxationError on NaN or inf.
    The common case, already within bounds, costs two read-only passes (a NaN
    fails both comparisons); ``copy=False`` then returns ``value`` itself.
    """
    value = np.asarray(value, dtype=dtype)
    if value.shape != tuple(shape):
        raise ConfigurationError(f"{name} has shape {value.shape}, expected {tuple(shape)}")
    lo, hi = bounds
    if value.size and lo <= value.min() and value.max() <= hi:
        return (value.copy() if copy else value), 0
    if not np.all(np.isfinite(value)):
        raise RelaxationError(f"refusing non-finite values for parameter {name}")
    kept = np.minimum(np.maximum(value, lo), hi)
    return kept, int(np.count_nonzero(kept != value))


def per_tensor(name: str, value: float | Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Expand a float, or a dict keyed by tensor name or by kind ("W", "b"), to one value per tensor."""
    if isinstance(value, Mapping):
        out: dict[str, float] = {}
        for n in names:
            v = value.get(n, value.get(n.rstrip("0123456789")))
            if v is None:
                raise ConfigurationError(f"{name} gives no value for tensor {n!r} (keys: {sorted(value)})")
            out[n] = float(v)
    else:
        out = {n: float(value) for n in names}
    for n, v in out.items():
        if not np.isfinite(v) or v <= 0:
            raise ConfigurationError(f"{name}[{n}] = {v}: must be a finite number > 0")
    return out


class FloatingParameters:
    """Capability "aeqprop" for a simulated substrate whose energy is linear in theta (a mixin).

    The host class provides the attributes annotated here and the methods declared under TYPE_CHECKING.
    """

    eps: dict[str, float]  # coupling of each tensor to its knob, per tensor (units of theta^2 / energy)
    _u: dict[str, np.ndarray]  # knobs, one array per tensor, shaped as theta
    _stale: bool  # the state has not settled since the last change
    tol: float  # relaxation tolerance (largest unit move in one sweep)
    max_sweeps: int  # cap on sweeps per relaxation
    joint_rtol: float  # joint release ends when the parameter move falls below this fraction of the first
    max_joint_updates: int  # cap on parameter updates in a joint release
    total_sweeps: int  # sweeps counted over the substrate's life

    if TYPE_CHECKING:

        def parameters(self) -> dict[str, np.ndarray]: ...
        def energy_gradients(self) -> dict[str, np.ndarray]: ...
        def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]: ...
        def _relax(self, tol: float, max_sweeps: int) -> RelaxReport: ...

    def knobs(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._u.items()}

    def set_knobs(self, u: Mapping[str, np.ndarray]) -> None:
        for name, value in u.items():
            if name not in self._u:
                raise ConfigurationError(f"unknown knob {name!r}; valid: {sorted(self._u)}")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != self._u[name].shape or not np.all(np.isfinite(value)):
                raise ConfigurationError(f"knob {name} must be finite with shape {self._u[name].shape}")
            self._u[name] = value.copy()

    def relax(self) -> RelaxReport:
        """Settle the state with the parameters held (the host's ``_relax``), timed in s."""
        t0 = time.perf_counter()
        report = self._relax(self.tol, self.max_sweeps)
        report.seconds = time.perf_counter() - t0
        return report

    def _settled(self, sweeps: int, residual: float, tol: float) -> RelaxReport:
        """Close a relaxation of ``sweeps`` sweeps that ended at ``residual``: count it, mark the state settled."""
        self.total_sweeps += sweeps
        self._stale = False
        return RelaxReport(sweeps=sweeps, residual=residual, converged=residual <= tol)

    def _settle(self) -> None:
        """Settle the state if anything changed since it last settled (a physical system
        settles on its own; reading it after a change reads the settled state)."""
        if self._stale:
            self._relax(self.tol, self.max_sweeps)

    def _parameter_block(self) -> dict[str, np.ndarray]:
        """The exact minimiser of G over theta given the state: u - eps dE/dtheta(s)."""
        g = self.energy_gradients()
        for n in g:  # in place: g is ours
            g[n] *= -self.eps[n]
            g[n] += self._u[n]
        return g

    def floating_target(self) -> tuple[dict[str, np.ndarray], RelaxReport | None]:
        """Where one whole update moves theta before the bounds clip it, ``u - eps dE/dtheta(s)`` at
        the state settled under the current theta, and the relaxation that settled it (None: it had
        settled). A device model that scales each entry's compliance (the non-ideal wrapper's
        variability) moves theta from this, not from a move the bounds have already cut."""
        report = self._relax(self.tol, self.max_sweeps) if self._stale else None
        return self._parameter_block(), report

    def homeostasis(self) -> None:
        """Native homeostasis: set u = theta + eps dE/dtheta(s), so theta feels no net force."""
        g = self.energy_gradients()
        theta = self.parameters()
        self._u = {n: theta[n] + self.eps[n] * g[n] for n in g}

    def release(self, duration: float | None = None) -> RelaxReport:
        """Let theta float against the knobs, then hold it.

        ``duration`` counts parameter updates, each taken after the state has
        settled under the current theta; a fraction moves theta that part of
        the way (a short release). None settles state and parameters jointly
        and raises StiffnessError if that runs away.
        """
        t0 = time.perf_counter()
        if duration is None:
            report = self._release_joint()
        else:
            if not (duration >= 0 and np.isfinite(duration)):
                raise ConfigurationError(f"release duration {duration}: must be a finite number >= 0")
            report = RelaxReport(sweeps=0, residual=0.0, converged=True)
            remaining = float(duration)
            while remaining > 1e-12:
                frac = min(1.0, remaining)
                target, settled = self.floating_target()
                if settled is not None:
                    report = report + settled
                if frac < 1.0:
                    theta = self.parameters()
                    target = {n: theta[n] + frac * (target[n] - theta[n]) for n in target}
                self._assign(target, copy=False)
                remaining -= frac
        report.seconds = time.perf_counter() - t0
        return report

    def _release_joint(self) -> RelaxReport:
        theta0 = self.parameters()
        report = RelaxReport(sweeps=0, residual=0.0, converged=True)
        first: float | None = None
        prev: float | None = None
        growth = 0
        ratio = 0.0
        for _ in range(self.max_joint_updates):
            report = report + self._relax(self.tol, self.max_sweeps)
            theta = self.parameters()
            target = self._parameter_block()
            move = float(np.sqrt(sum(np.sum((target[n] - theta[n]) ** 2) for n in target)))
            if not np.isfinite(move):
                self._assign(theta0)
                raise self._stiffness(np.inf)
            self._assign(target, copy=False)
            if first is None:
                first = move
            if prev is not None and prev > 0:
                ratio = move / prev
                growth = growth + 1 if ratio > 1.0 else 0
                if growth >= 2:
                    self._assign(theta0)
                    raise self._stiffness(ratio)
            if move <= self.joint_rtol * max(first, 1e-300):
                report.residual = move
                return report
            prev = move
        self._assign(theta0)
        if ratio >= 0.999:
            raise self._stiffness(ratio)
        raise RelaxationError(
            f"state and parameters did not settle jointly in {self.max_joint_updates} updates "
            f"(last contraction {ratio:.3f}); raise max_joint_updates or use a short release"
        )

    def _stiffness(self, ratio: float) -> StiffnessError:
        eps_show = {n: v for n, v in self.eps.items()}
        largest = max(self.eps.values())
        eps_max = largest / ratio if np.isfinite(ratio) and ratio > 0 else None
        hint = f"largest stable eps ~ {eps_max:.3g}" if eps_max is not None else "no estimate of the largest stable eps"
        return StiffnessError(
            f"the nudged phase ran away at eps={eps_show} (parameter moves grew x{ratio:.3g} per update): "
            f"the coupling is softer than the stiffness limit; {hint}. Lower eps or use a short release. "
            "Parameters were restored to their last good values.",
            eps=eps_show,
            eps_max=eps_max,
        )
