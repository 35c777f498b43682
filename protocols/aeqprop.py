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

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import StepReport, Substrate, require
from protocols.averaging import averaged, check_averages
from protocols.base import check_beta, check_nudging, check_variant, difference, free_phase

VARIANTS = {"centered": (-0.5, 0.5), "optimistic": (0.0, 1.0), "pessimistic": (-1.0, 0.0)}
HOMEOSTASIS = ("native", "feedback")
ON_CAP = ("raise", "hold")
NOISE_MARGIN = 1.5  # tolerance over the spread of two reads of a held theta (atol="auto")


def _max_abs(d: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(v))) if v.size else 0.0 for v in d.values())


class FeedbackHomeostasis:
    """Find the knobs that hold theta still, reading only theta.

    Each probe releases the parameters for ``probe`` (in the substrate's
    release units: the fraction of the way to their floating equilibrium that
    a release of that length moves them; one parameter update in simulation is
    1.0). The drift of a probe gives the holding knob at the start of the probe
    (``u - drift / probe``); the next knob adds a pull back to the starting
    theta. The error shrinks by ``sqrt(probe * eps * |lambda|)`` per probe
    (lambda: curvature of Phi in theta), so a probe that overshoots is halved.
    Stops when a probe moves no entry by more than ``rtol`` times the first
    drift (plus ``atol``) and theta is that close to where it started.

    Against read noise: each read of theta is the mean of ``averages`` reads;
    ``atol="auto"`` reads theta twice at the start and sets the absolute
    tolerance to ``NOISE_MARGIN`` times the largest difference (the noise
    floor; drift below it is not seen, and it does not halve the probe);
    ``on_cap="hold"`` keeps the best holding knob found when ``max_iter``
    probes do not reach the tolerance, instead of raising.
    """

    def __init__(
        self,
        rtol: float = 1e-3,
        max_iter: int = 50,
        probe: float = 1.0,
        atol: float | str = 1e-15,
        averages: int = 1,
        on_cap: str = "raise",
    ):
        if atol != "auto" and not (isinstance(atol, (int, float)) and atol >= 0):
            raise ConfigurationError(f"homeostasis atol={atol!r}: must be a number >= 0 or 'auto'")
        if not (rtol > 0 and max_iter >= 1 and 0 < probe <= 1):
            raise ConfigurationError("homeostasis needs rtol > 0, max_iter >= 1 and 0 < probe <= 1")
        if on_cap not in ON_CAP:
            raise ConfigurationError(f"homeostasis on_cap={on_cap!r}; valid: {', '.join(ON_CAP)}")
        self.rtol, self.max_iter, self.probe = float(rtol), int(max_iter), float(probe)
        self.atol = atol if atol == "auto" else float(atol)
        self.averages, self.on_cap = check_averages(averages), on_cap
        self.last_iterations = 0
        self.last_residual = 0.0
        self.last_tolerance = 0.0
        self.last_capped = False

    def __call__(self, substrate) -> int:
        theta_ref = averaged(substrate.parameters, self.averages)
        floor, atol = 0.0, self.atol
        if atol == "auto":
            again = averaged(substrate.parameters, self.averages)
            floor = atol = NOISE_MARGIN * _max_abs(difference(again, theta_ref))
            theta_ref = {n: 0.5 * (theta_ref[n] + again[n]) for n in theta_ref}
        best = (np.inf, None)
        self.last_capped = False
        u = substrate.knobs()
        u = {n: theta_ref[n].copy() for n in u}  # first guess: the force-free knob when dE/dtheta = 0
        theta_a, probe = theta_ref, self.probe
        tol = previous = None
        for it in range(1, self.max_iter + 1):
            substrate.set_knobs(u)
            substrate.release(probe)
            theta_b = averaged(substrate.parameters, self.averages)
            move = difference(theta_b, theta_a)
            off = difference(theta_b, theta_ref)
            residual = max(_max_abs(move), _max_abs(off))
            if tol is None:
                tol = self.last_tolerance = self.rtol * residual + atol
            # holding knob at theta_a, carried to theta_b (the holding knob moves with theta)
            u_hold = {n: u[n] - move[n] / probe + move[n] for n in u}
            self.last_residual = residual
            if residual <= tol:
                substrate.set_knobs(u_hold)
                self.last_iterations = it
                return it
            if residual < best[0]:
                best = (residual, u_hold)
            if previous is not None and residual > previous + floor and probe > 1e-3:
                probe *= 0.5
            previous = residual
            u = {n: u_hold[n] - off[n] / probe for n in u}
            theta_a = theta_b
        self.last_iterations = self.max_iter
        if self.on_cap == "hold":
            self.last_capped = True
            substrate.set_knobs(best[1])
            return self.max_iter
        raise RelaxationError(
            f"feedback homeostasis did not hold the parameters within rtol={self.rtol:g} in "
            f"{self.max_iter} iterations (last drift {self.last_residual:.3g}); raise "
            "homeostasis_iterations or homeostasis_rtol"
        )


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
        homeostasis_rtol: float = 1e-3,
        homeostasis_iterations: int = 50,
        seed: int = 0,
        lr: object = None,
        averages: int = 1,
        homeostasis_atol: float | str = 1e-15,
        homeostasis_on_cap: str = "raise",
    ):
        self.beta = check_beta(beta)
        self.variant = check_variant(variant, VARIANTS, "aeqprop")
        check_nudging(self.betas(), f"aeqprop {variant}")
        if homeostasis not in HOMEOSTASIS:
            raise ConfigurationError(f"unknown homeostasis {homeostasis!r}; valid: {', '.join(HOMEOSTASIS)}")
        if release == "equilibrium":
            release = None
        if release is not None and not (isinstance(release, (int, float)) and release > 0 and np.isfinite(release)):
            raise ConfigurationError(f"release={release!r}: must be a duration > 0, or 'equilibrium' for joint equilibrium")
        self.homeostasis = homeostasis
        self.release = release
        self.averages = check_averages(averages)
        self.feedback = FeedbackHomeostasis(
            homeostasis_rtol, homeostasis_iterations, atol=homeostasis_atol, averages=averages, on_cap=homeostasis_on_cap
        )

    def betas(self) -> tuple[float, float]:
        lo, hi = VARIANTS[self.variant]
        return lo * self.beta, hi * self.beta

    def expected_rates(self, substrate) -> dict[str, float]:
        """First-order learning rate per tensor, ``eps (beta2 - beta1)`` times the release fraction.

        Reads the substrate's ``eps`` (simulation): for checks only, never during a step.
        """
        beta1, beta2 = self.betas()
        fraction = 1.0 if self.release is None else min(self.release, 1.0)
        return {n: e * (beta2 - beta1) * fraction for n, e in substrate.eps.items()}

    def step(self, substrate: Substrate, x, y) -> StepReport:
        require(substrate, self.requires, "aeqprop")
        beta1, beta2 = self.betas()
        report = StepReport(loss=0.0, outputs=np.empty(0), delta={})
        report.loss, report.outputs, rep = free_phase(substrate, x, y, report)
        theta = averaged(substrate.parameters, self.averages)

        t0 = time.perf_counter()
        if beta1 != 0.0:
            substrate.nudge(beta1, y)
            report.record("beta1", substrate.relax())
        if self.homeostasis == "native":
            substrate.homeostasis()
        else:
            report.extra["homeostasis_iterations"] = self.feedback(substrate)
            report.extra["homeostasis_residual"] = self.feedback.last_residual
            report.extra["homeostasis_tolerance"] = self.feedback.last_tolerance
            report.extra["homeostasis_max_iter"] = self.feedback.max_iter
            report.extra["homeostasis_capped"] = float(self.feedback.last_capped)
        report.seconds["homeostasis"] = time.perf_counter() - t0

        substrate.nudge(beta2, y)
        report.record("beta2", substrate.release(self.release))
        substrate.nudge(0.0)
        report.delta = difference(averaged(substrate.parameters, self.averages), theta)
        return report
