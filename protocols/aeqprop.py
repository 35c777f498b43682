"""Agnostic equilibrium propagation: the physics computes the update.

The parameters float, each tied to a knob u by a compliance eps. One step:

1. *Homeostatic phase*: nudging beta1; the state settles with theta held; the
   knobs are set so the current theta feels no net force
   (u = theta + eps dE/dtheta). ``native`` asks the substrate to do it;
   ``feedback`` finds it with a controller loop that only reads theta, sets
   knobs and releases, so it works on any device with knobs and a readout.
2. *Nudged phase*: nudging beta2; the parameters are released and move to
   theta'. Nothing is computed: theta' - theta is the update, to first order
   one SGD step of learning rate eps (beta2 - beta1).

| variant     | beta1 | beta2 |
|-------------|-------|-------|
| optimistic  | 0     | +b    |
| pessimistic | -b    | 0     |
| centered    | -b/2  | +b/2  |

This protocol never calls energy_gradients nor the oracle.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import StepReport, Substrate, require
from protocols.averaging import averaged, check_averages, release_and_read
from protocols.base import (
    as_aeqprop,
    as_homeostasis,
    check_beta,
    check_nudging,
    check_variant,
    free_phase,
    round_trips,
    step_change,
)
from protocols.homeostasis import FeedbackHomeostasis

VARIANTS = {"centered": (-0.5, 0.5), "optimistic": (0.0, 1.0), "pessimistic": (-1.0, 0.0)}
HOMEOSTASIS = ("native", "feedback")


@runtime_checkable
class Compliant(Protocol):
    """A simulated substrate's compliance per tensor. Example: ``sub.eps == {"W1": 0.5, "b1": 0.5}``."""

    eps: Mapping[str, float]


class Aeqprop:
    """Aeqprop with a variant of nudging, a homeostasis and a release length.

    Example: ``Aeqprop(beta=1.0, variant="centered", homeostasis="feedback",
    release=1.0)``. ``release`` is how long the parameters float in the nudged
    phase (substrate units; 1.0 in simulation is one exact parameter update
    after the state settles), or None to settle state and parameters jointly.
    Against read noise: ``averages`` repeats each read of theta and averages;
    ``homeostasis_atol`` ("auto": the read-noise floor) and
    ``homeostasis_on_cap`` ("hold": keep the best knob at the iteration cap)
    configure the feedback loop (see :class:`FeedbackHomeostasis`).
    """

    name = "aeqprop"
    description = "Agnostic EqProp: homeostasis on knobs, then release the floating parameters"
    requires = frozenset({"aeqprop"})

    def __init__(
        self,
        beta: float = 1.0,
        variant: str = "centered",
        homeostasis: str = "native",
        release: float | str | None = 1.0,
        homeostasis_rtol: float = 1e-4,
        homeostasis_iterations: int = 50,
        seed: int = 0,
        averages: int = 1,
        homeostasis_atol: float = 0.0,
        homeostasis_on_cap: str = "raise",
        homeostasis_probe: float = 1.0,
        homeostasis_probes: int = 12,
        calibrate: bool = True,
    ) -> None:
        self.beta = check_beta(beta)
        self.variant = check_variant(variant, VARIANTS, "aeqprop")
        check_nudging(self.betas(), f"aeqprop {variant}")
        if homeostasis not in HOMEOSTASIS:
            raise ConfigurationError(f"unknown homeostasis {homeostasis!r}; valid: {', '.join(HOMEOSTASIS)}")
        if release == "equilibrium":
            release = None
        if release is not None and not (isinstance(release, (int, float)) and release > 0 and np.isfinite(release)):
            raise ConfigurationError(
                f"release={release!r}: must be a duration > 0, or 'equilibrium' for joint equilibrium"
            )
        self.homeostasis = homeostasis
        if homeostasis == "native":  # the optional capability, asked for only when used
            self.requires = frozenset({"aeqprop", "homeostasis"})
        self.release = release
        self.averages = check_averages(averages)
        self.calibrate_first = bool(calibrate) and homeostasis == "feedback"
        self.feedback = FeedbackHomeostasis(
            homeostasis_rtol,
            homeostasis_iterations,
            probe=homeostasis_probe,
            atol=homeostasis_atol,
            averages=averages,
            on_cap=homeostasis_on_cap,
            probes=homeostasis_probes,
        )

    def calibrate(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
        """Measure the substrate for the feedback loop and apply the choices (see protocols.calibration).

        Returns the record (a JSON-able dict with a one-line ``summary``) or None when this protocol
        does not calibrate (native homeostasis, or ``calibrate=False``). The session calls it once at
        the start of a run and records it; :meth:`apply_calibration` puts a record back on resume.
        """
        if not self.calibrate_first:
            return None
        from protocols.calibration import Calibrator, apply

        cal = Calibrator().run(as_aeqprop(substrate, "aeqprop calibration"), x, y, self.betas())
        apply(cal, self, substrate)
        return {**cal.to_dict(), "summary": cal.summary()}

    def apply_calibration(self, substrate: Substrate, record: dict[str, Any]) -> None:
        """Put a recorded calibration back into effect (eps on a simulation, the loop's settings)."""
        from protocols.calibration import Calibration, apply

        apply(Calibration.from_dict({k: v for k, v in record.items() if k != "summary"}), self, substrate)

    def resume_after(self, extra: dict[str, float]) -> None:
        """Restore what the feedback loop carries between steps from the last step's report extras."""
        if "homeostasis_next_probe" in extra:
            self.feedback.probe = float(extra["homeostasis_next_probe"])

    def betas(self) -> tuple[float, float]:
        lo, hi = VARIANTS[self.variant]
        return lo * self.beta, hi * self.beta

    def expected_rates(self, substrate: Substrate) -> dict[str, float]:
        """First-order learning rate per tensor, ``eps (beta2 - beta1)`` times the release fraction.

        Reads the substrate's ``eps`` (simulation): for checks only, never during a step.
        """
        if not isinstance(substrate, Compliant):
            raise ConfigurationError(
                f"aeqprop's expected rates read the compliance eps of a simulation; {type(substrate).__name__} has none"
            )
        beta1, beta2 = self.betas()
        fraction = 1.0 if self.release is None else min(self.release, 1.0)
        return {n: e * (beta2 - beta1) * fraction for n, e in substrate.eps.items()}

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        require(
            substrate,
            self.requires,
            "aeqprop"
            if self.homeostasis == "feedback"
            else "aeqprop with native homeostasis (else --homeostasis feedback)",
        )
        substrate = as_aeqprop(substrate, "aeqprop")
        beta1, beta2 = self.betas()
        report = StepReport(loss=0.0, outputs=np.empty(0), delta={})
        trips = round_trips(substrate)
        report.loss, report.outputs, rep = free_phase(substrate, x, y, report)
        theta = None if self.homeostasis == "feedback" else averaged(substrate.parameters, self.averages)

        if beta1 != 0.0:
            substrate.nudge(beta1, y)
            report.record("beta1", substrate.relax())
        t0 = time.perf_counter()
        if self.homeostasis == "native":
            as_homeostasis(substrate, "aeqprop").homeostasis()  # required when native (see __init__)
        else:
            loop = self.feedback(substrate)
            theta = loop.reference  # theta is held from the free phase on: its reads serve as the start
            report.extra.update(
                {
                    "homeostasis_iterations": float(loop.probes),
                    "homeostasis_reads": float(loop.reads),
                    "homeostasis_residual": loop.residual,
                    "homeostasis_tolerance": loop.tolerance,
                    "homeostasis_probe": loop.probe,
                    "homeostasis_max_iter": float(self.feedback.max_iter),
                    "homeostasis_capped": float(loop.capped),
                    "read_noise": loop.read_noise,
                    "homeostasis_next_probe": self.feedback.probe,  # carried to the next step (resume)
                }
            )
        report.seconds["homeostasis"] = time.perf_counter() - t0

        substrate.nudge(beta2, y)
        released, after = release_and_read(substrate, self.release, self.averages)  # one exchange on a bench
        report.record("beta2", released)
        substrate.nudge(0.0)
        assert theta is not None  # read in the free phase (native) or by the feedback loop
        report.delta = step_change(after, theta)
        report.extra["reads"] = float(
            self.averages * 2 if self.homeostasis == "native" else report.extra["homeostasis_reads"] + self.averages
        )
        report.round_trips = round_trips(substrate) - trips
        return report
