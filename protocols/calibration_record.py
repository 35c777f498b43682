"""What a calibration records and how its choices are made and take effect.

:class:`CalibrationSettings` tunes the measurement (protocols/calibration.py) and the choices;
:class:`Calibration` is the record a run keeps (its events) and puts back when it resumes;
:func:`choose_probe` picks the feedback loop's probe length and probe budget from the stiffness and
the noise floor; :func:`apply` puts a record's choices into effect on a protocol and a substrate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from protocols.homeostasis import LoopSettings

if TYPE_CHECKING:
    from protocols.aeqprop import Aeqprop


@dataclass(frozen=True)
class CalibrationSettings:
    """Tuning of the calibration.

    - ``reads``: reads of the held theta for the noise estimate and the reference.
    - ``kick``: RMS knob offset of the gain and stiffness probes (theta units); raised
      to ``kick_sigmas`` read-noise sigmas of an averaged read when the noise is larger.
    - ``gain_probe``: release length of the gain probes (release units); ``gain_error``:
      the loop uses a tensor's measured gain only if its standard error is below
      this (otherwise it assumes 1, as a knob in theta units has). ``release_scatter``:
      when the largest tensor's gain comes out below 0.5 or above 2 (the release lost
      or made up most of the probe's move: conductance levels), take the scatter of
      the moves (at least the probe's move) as the release's resolution; the drift of
      a very stiff held point (k >> 1) can mimic it, so a pure stiffness measurement
      turns it off.
    - ``power_probes``: full-length releases of the stiffness power iteration;
      ``max_move``: it stops once a move exceeds this RMS (theta units), before units
      cross their bounds and the linear picture fails.
    - ``k_target``: the largest stiffness the chosen eps leaves (the loop is stable
      for probes shorter than 1/k, and its shortest probe is 1/32). Once k > 1 the
      per-step signal-to-noise ratio no longer grows with eps (README, "The
      agnostic loop's signal-to-noise bound"), while a smaller eps learns slower,
      so the default only caps k where the loop would run out of probe length;
      ``rounds``: measure-and-scale rounds;
      ``share``: a tensor carrying at least this fraction of the stiff direction's
      mean squared move per entry gets its eps scaled.
    - ``snr``: the per-step signal-to-noise ratio the averaged reads aim at, the step's
      move against ``max(1, k) sigma / sqrt(averages)`` (a full-length update release
      multiplies theta's offset from its read reference by k); ``max_averages``: the most
      reads averaged per read of theta.
    - ``land_below``: a full release lands theta on the holding knob's fixed point only where
      the measured k is below this. Past k = 1 a full release throws theta away, and k is
      measured through noisy reads: at read noise 1e-2 a device measured at k 0.98 took
      theta from 0.004 to 0.086 RMS off its start in the calibration's last landing.
    - ``signal_probes``: the fewest probes of the hold before the step is measured, where k >= land_below.
      There a full release takes theta to the holding knob's fixed point, whose distance from
      the held theta grows with the knob's error: at read noise 1e-2 the usual hold (8 probes)
      left it 0.06 to 0.15 RMS away, and the step was measured there, 1.8 to 3 times the
      step at the start (``benchmarks/calibration_check.py``).
    - ``signal_rtol``: the loop holds theta to this fraction of one learning step's
      RMS move (divided by max(1, k), since a knob estimate errs by about k times
      theta's offset); it sets the loop's tolerance and, with the stiffness, its
      probe length (see :func:`choose_probe`). ``knob_snr``: the ratio of a step's move to the
      noise of the final knob (the mean of the loop's estimates) that the probe budget aims at; the
      update then errs by about 1 / knob_snr of itself per step, well under a minibatch's own scatter.
    - ``jitter``: a probe shorter than 1 / (2 k) only while the knob offset it implies,
      sqrt(2) floor / p, stays under this fraction of the step's move; ``min_estimates``: the
      fewest holding-knob estimates averaged on a device noisy by that measure (conductance
      levels and read noise are averaged out by the loop's dither and telescoping moves).
    - ``asymmetry_kick``, ``asymmetry_margin``, ``asymmetry_max_kick``, ``max_asymmetry``: the
      up/down asymmetry probe (see ``Calibrator._asymmetry``): its knob offset in kicks, its move at least
      ``asymmetry_levels`` release scatters (about a third of a level each, so rounding to levels
      does not hide the asymmetry), raised until the kicked move is ``asymmetry_margin`` times the
      held point's drift, at most
      ``asymmetry_max_kick`` (theta units); measured values are clipped to ``max_asymmetry``.
    """

    reads: int = 16
    kick: float = 1e-3
    kick_sigmas: float = 10.0
    gain_probe: float = 0.1
    gain_error: float = 0.05
    release_scatter: bool = True
    power_probes: int = 6
    max_move: float = 0.02
    k_target: float = 16.0
    rounds: int = 3
    share: float = 0.2
    snr: float = 6.0
    max_averages: int = 16
    land_below: float = 0.5
    signal_probes: int = 32
    signal_rtol: float = 0.01
    asymmetry_kick: float = 10.0
    asymmetry_margin: float = 10.0
    asymmetry_levels: float = 30.0
    asymmetry_max_kick: float = 0.25
    max_asymmetry: float = 0.5
    knob_snr: float = 10.0
    jitter: float = 0.05
    min_estimates: int = 10


@dataclass
class Calibration:
    """What a calibration measured and chose (theta units; k dimensionless)."""

    read_noise: dict[str, float] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)
    gain_error: dict[str, float] = field(default_factory=dict)  # standard error of each gain
    asymmetry: dict[str, float] = field(default_factory=dict)  # up moves g (1 + a), down moves g (1 - a)
    release_noise: float = 0.0  # RMS scatter of where a release lands beyond its ideal move (levels)
    stiffness: float = 0.0  # k at the chosen eps
    stiffness_before: float = 0.0  # k at the eps the run was configured with
    stiff_share: dict[str, float] = field(default_factory=dict)
    signal: float = 0.0  # RMS move of one nudged release
    eps: dict[str, float] | None = None  # chosen compliance per tensor (None: not settable, a bench)
    probe: float = 1.0
    probes: int = 0  # the loop's probe budget (0: a record from before it was calibrated)
    quiet: bool = False  # noise floor negligible against a step: short probes, one reference read
    tolerance: float = 0.0  # the loop's tolerance from the step size (theta units)
    averages: int = 1
    beta: tuple[float, float] = (0.0, 0.0)
    reads: int = 0  # reads of theta the calibration took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        d = dict(d)
        d["beta"] = tuple(d.get("beta", (0.0, 0.0)))
        return cls(**d)

    def summary(self) -> str:
        """One line for ``runs show`` and the CLI."""
        noise = max(self.read_noise.values(), default=0.0)
        eps = ", ".join(f"{n} {v:g}" for n, v in self.eps.items()) if self.eps else "physical (not settable)"
        gain = ", ".join(f"{n} {v:.3g}" for n, v in self.gain.items())
        if any(self.asymmetry.values()):
            gain += " (up/down asymmetry " + ", ".join(f"{n} {v:+.2g}" for n, v in self.asymmetry.items()) + ")"
        return (
            f"read noise {noise:.3g} (largest per tensor), release scatter {self.release_noise:.3g}, "
            f"gain {gain}; stiffness k {self.stiffness_before:.3g} "
            f"-> {self.stiffness:.3g}; eps {eps}; probe {self.probe:.3g} x {self.probes}; averages {self.averages}; "
            f"step signal {self.signal:.3g}; beta {self.beta[0]:g} / {self.beta[1]:g}"
        )


def used_gain(cal: Calibration, max_error: float = CalibrationSettings.gain_error) -> dict[str, float]:
    """The gains the loop uses: the measured ones known to ``max_error`` (and within 0.5 to 2), 1 for the others."""
    return {
        n: (g if cal.gain_error.get(n, np.inf) <= max_error and 0.5 <= g <= 2.0 else 1.0) for n, g in cal.gain.items()
    }


def _settable_eps(substrate: object) -> dict[str, float] | None:
    """A simulation's compliance eps per tensor, changed in place; None where it cannot be set."""
    eps = getattr(substrate, "eps", None)
    return eps if isinstance(eps, dict) else None


def choose_probe(
    k: float, floor: float, signal: float, cfg: CalibrationSettings, loop: LoopSettings
) -> tuple[float, int, bool]:
    """The probe length, the number of knob estimates to average, and whether the device is quiet
    (its floor negligible against a step's move): ``(probe, estimates, quiet)``.

    The longest stable probe is ``p0 = min(1, 1 / (2 k))`` (the loop is stable below ``1 / k``). A
    shorter one settles theta in fewer probes (its offset, first about ``p signal`` from the previous
    step's move under the stale knob, shrinks by ``sqrt(p k)`` per probe down to ``signal_rtol
    signal``) but amplifies the floor: the mean of L estimates carries ``sqrt(2) floor / (p L)``, to
    be under ``signal / knob_snr``, and each probe's knob sits about ``sqrt(2) floor / p`` from the
    holding knob, where a device's response to that offset (write asymmetry, conductance levels)
    biases every estimate. So probes shorter than ``p0`` (halving, down to the loop's shortest) are
    taken only while that offset is under ``jitter`` times the signal, and among those the one that
    needs the fewest probes wins. A device noisy by that measure even at ``p0`` gets ``p0`` and at
    least ``min_estimates`` estimates.
    """
    p0 = min(1.0, max(loop.min_probe, 0.5 / max(k, 1e-12)))
    if signal <= 0:
        return p0, 1, False

    def estimates(p: float) -> int:
        return max(1, math.ceil(math.sqrt(2.0) * cfg.knob_snr * floor / (p * signal)))

    def cost(p: float) -> int:
        shrink = math.sqrt(min(max(p * k, 1e-6), 0.99))
        settle = math.ceil(math.log(cfg.signal_rtol / p) / math.log(shrink)) if p > cfg.signal_rtol else 1
        return max(estimates(p), settle, 1)

    if math.sqrt(2.0) * floor / p0 > cfg.jitter * signal:  # a noisy device: long probes, many estimates
        return p0, max(estimates(p0), cfg.min_estimates), False
    best, p = p0, p0 / 2
    while p >= loop.min_probe and math.sqrt(2.0) * floor / p <= cfg.jitter * signal:
        if cost(p) < cost(best):
            best = p
        p /= 2
    return best, estimates(best), True


def apply(cal: Calibration, protocol: Aeqprop, substrate: object) -> None:
    """Put a calibration's choices into effect: eps (if settable), and the feedback loop's probe,
    gain and averaged reads. Used after a calibration and when a run resumes from its record."""
    eps = _settable_eps(substrate)
    if eps is not None and cal.eps is not None:
        eps.update(cal.eps)
    loop = protocol.feedback
    loop.probe = loop.max_probe = cal.probe
    loop.gain = used_gain(cal)
    loop.release_noise = cal.release_noise
    loop.asymmetry = dict(cal.asymmetry)
    loop.averages = protocol.averages = cal.averages
    if cal.probes:  # a record from before the budget was calibrated keeps the configured one
        loop.read_noise = dict(cal.read_noise)
        loop.signal_atol = cal.tolerance
        loop.probes = min(loop.max_iter, cal.probes)
        loop.reference_reads = 1 if cal.quiet else 2
