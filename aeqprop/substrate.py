"""The Substrate contract: what the controller may do to a physical system.

A substrate satisfies the contract by shape (``typing.Protocol``), not by
inheritance. Arrays are numpy float64 with a leading batch axis; parameters are
a dict of named arrays. Outside :meth:`Substrate.release` the parameters are
held, and :meth:`Substrate.relax` settles the state alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from aeqprop.errors import ConfigurationError

#: Capabilities a substrate may declare in ``SubstrateInfo.capabilities``; each names a Protocol
#: below (``PROTOCOLS``). "homeostasis" is optional, on top of "aeqprop".
CAPABILITIES = frozenset({"eqprop", "aeqprop", "homeostasis", "oracle"})


@dataclass(frozen=True)
class SubstrateInfo:
    """What a substrate is and can do.

    Example: ``SubstrateInfo(n_inputs=64, n_outputs=10,
    parameter_shapes={"W1": (64, 256), "b1": (256,)},
    parameter_bounds={"W1": (-1.0, 1.0), "b1": (-1.0, 1.0)}, max_batch=1024,
    capabilities=frozenset({"eqprop", "aeqprop", "oracle"}))``.
    """

    n_inputs: int
    n_outputs: int
    parameter_shapes: dict[str, tuple[int, ...]]
    parameter_bounds: dict[str, tuple[float, float]]
    max_batch: int | None = None  # None: any batch size; hardware says 1
    capabilities: frozenset[str] = frozenset()
    description: str = ""
    eval_batch: int | None = None  # the width held-out data is relaxed in, at most max_batch (None: max_batch)

    def __post_init__(self) -> None:
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ConfigurationError(f"unknown capabilities {sorted(unknown)}; valid: {sorted(CAPABILITIES)}")
        if set(self.parameter_shapes) != set(self.parameter_bounds):
            raise ConfigurationError("parameter_shapes and parameter_bounds name different tensors")
        if self.eval_batch is not None and self.eval_batch < 1:
            raise ConfigurationError(f"eval_batch={self.eval_batch}: must be >= 1 (or None: max_batch)")

    @property
    def n_parameters(self) -> int:
        return int(sum(np.prod(s, dtype=int) for s in self.parameter_shapes.values()))

    def check_batch(self, batch: int) -> None:
        """Raise ConfigurationError if a batch of this size cannot be clamped."""
        if self.max_batch is not None and batch > self.max_batch:
            raise ConfigurationError(
                f"batch of {batch} is wider than the substrate takes (max_batch={self.max_batch}); "
                f"use --batch-size {self.max_batch} or less"
            )


@dataclass
class RelaxReport:
    """How a settling went: sweeps (or polls), last residual, convergence, wall time in s."""

    sweeps: int = 0
    residual: float = 0.0
    converged: bool = True
    seconds: float = 0.0

    def __add__(self, other: RelaxReport) -> RelaxReport:
        return RelaxReport(
            self.sweeps + other.sweeps,
            other.residual,
            self.converged and other.converged,
            self.seconds + other.seconds,
        )


@dataclass
class StepReport:
    """What one training step did.

    ``loss`` and ``outputs`` are those of the free phase (beta = 0) before the
    update; ``delta`` is the parameter change per tensor; ``sweeps`` and
    ``seconds`` are per phase name (``"free"``, ``"beta1"``, ``"beta2"``, ...);
    ``unsettled`` names the phases whose relaxation ended unconverged (at its sweep cap): the
    step's contrast then holds the unfinished settling too, and is not the gradient's;
    ``round_trips`` counts instrument exchanges (0 in simulation).
    """

    loss: float
    outputs: np.ndarray
    delta: Mapping[str, np.ndarray]
    sweeps: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    round_trips: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    unsettled: list[str] = field(default_factory=list)

    def record(self, phase: str, report: RelaxReport) -> None:
        """Add a relaxation's sweeps and seconds under a phase name (and the phase to
        ``unsettled`` if it ended unconverged)."""
        self.sweeps[phase] = self.sweeps.get(phase, 0) + report.sweeps
        self.seconds[phase] = self.seconds.get(phase, 0.0) + report.seconds
        if not report.converged:
            self.unsettled.append(phase)


@runtime_checkable
class Substrate(Protocol):
    """A physical (or simulated) system that settles to an energy minimum.

    Example use, one free phase::

        sub.clamp(x)          # x.shape == (batch, sub.info.n_inputs)
        sub.nudge(0.0)
        report = sub.relax()  # RelaxReport(sweeps=17, residual=3e-9, converged=True, ...)
        o = sub.outputs()     # o.shape == (batch, sub.info.n_outputs)
    """

    info: SubstrateInfo

    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs, shape (batch, n_inputs)."""

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """Squared-cost nudging of strength beta toward y; beta = 0 removes it."""

    def relax(self) -> RelaxReport:
        """Settle the state to equilibrium with the parameters held."""

    def outputs(self) -> np.ndarray:
        """Measured outputs, shape (batch, n_outputs)."""

    def parameters(self) -> dict[str, np.ndarray]:
        """Read theta (copies)."""

    def close(self) -> None:
        """Safe state: sources off, outputs zero."""


@runtime_checkable
class EqPropSubstrate(Substrate, Protocol):
    """Capability "eqprop": local measurement and programming of theta."""

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dtheta at the current equilibrium, batch mean."""

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta, clipped to the bounds; returns the number of entries clipped per tensor.

        Example return: ``{"W1": 0, "b1": 3}``.
        """


@runtime_checkable
class AeqpropSubstrate(Substrate, Protocol):
    """Capability "aeqprop": floating parameters tied to knobs by a compliance eps."""

    def knobs(self) -> dict[str, np.ndarray]:
        """Read the control knobs u (copies)."""

    def set_knobs(self, u: dict[str, np.ndarray]) -> None:
        """Set the control knobs u."""

    def release(self, duration: float | None = None) -> RelaxReport:
        """Let theta float against the knobs, then hold it again.

        duration: seconds on hardware; parameter updates in simulation
        (fractions allowed); None: until state and parameters settle jointly.
        """


@runtime_checkable
class HomeostasisSubstrate(AeqpropSubstrate, Protocol):
    """Capability "homeostasis" (optional, with "aeqprop"): native homeostatic control.

    Example: ``sub.homeostasis()`` sets the knobs u so that theta, released, stays where it is.
    A substrate without it is held by the feedback loop (``Aeqprop(homeostasis="feedback")``).
    """

    def homeostasis(self) -> None:
        """Set the knobs u so theta is held still."""


@runtime_checkable
class OracleSubstrate(Substrate, Protocol):
    """Capability "oracle" (simulations only): the exact gradient and loss, for checks and baselines.

    Example: ``sub.loss(x, y)`` -> ``0.031``; ``sub.true_gradient(x, y)["W1"].shape == (64, 256)``.
    """

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Squared-error cost of the free equilibrium, batch mean."""

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """d loss / d theta by an independent method (implicit differentiation or BPTT)."""


#: The Protocol each capability promises.
PROTOCOLS: dict[str, type] = {
    "oracle": OracleSubstrate,
    "eqprop": EqPropSubstrate,
    "aeqprop": AeqpropSubstrate,
    "homeostasis": HomeostasisSubstrate,
}


@runtime_checkable
class TrainingProtocol(Protocol):
    """A training protocol (protocols/). Example: ``EqProp(beta=0.5, lr=0.05, variant="centered")``."""

    name: str
    requires: frozenset[str]

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        """One training step; the substrate's parameters are updated when it returns."""


@runtime_checkable
class CalibratingProtocol(Protocol):
    """Optional for a training protocol: it measures the substrate once before training.

    Example: feedback ``Aeqprop``; ``calibrate`` returns a JSON-able record with a one-line
    ``"summary"`` (or None when it does not calibrate), which ``apply_calibration`` puts back on resume.
    """

    def calibrate(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
        """Measure the substrate and apply the choices; the record to keep with the run."""

    def apply_calibration(self, substrate: Substrate, record: dict[str, Any]) -> None:
        """Put a recorded calibration back (a resumed run)."""


@runtime_checkable
class ResumableProtocol(Protocol):
    """Optional for a training protocol: state carried from step to step in ``StepReport.extra``.

    Example: ``resume_after({"homeostasis_next_probe": 0.5, ...})`` on resuming after that step.
    """

    def resume_after(self, extra: dict[str, float]) -> None:
        """Take back what the last recorded step carried."""


def require(substrate: Substrate, capabilities: frozenset[str] | set[str], who: str) -> None:
    """Raise ConfigurationError if the substrate lacks a capability ``who`` needs."""
    missing = set(capabilities) - set(substrate.info.capabilities)
    if missing:
        raise ConfigurationError(
            f"{who} needs capabilities {sorted(missing)} that the substrate lacks "
            f"(it has {sorted(substrate.info.capabilities)})"
        )


def check_array(name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """Return ``a`` as float64, raising ConfigurationError on a wrong shape or NaN."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("batch" if s is None else str(s) for s in shape) + ")"
        raise ConfigurationError(f"{name} has shape {a.shape}, expected {want}")
    if not np.isfinite(a).all():
        raise ConfigurationError(f"{name} contains NaN or infinite entries")
    return a
