"""Calibration of the agnostic loop: read noise, knob gain and stiffness, and the settings they call for.

A protocol-side step that uses only the Substrate contract (clamp, nudge,
relax, parameters, knobs, set_knobs, release), so it runs the same on a
simulation and on a bench. It measures, with the nudging of the homeostatic
phase (beta1) on one batch:

- read noise sigma per tensor: the spread of repeated reads of the held theta;
- knob-to-theta gain per tensor: a knob offset of random signs moves theta by
  ``gain * probe * offset`` in a probe; the scatter of those moves beyond read
  noise is the release's own resolution (conductance levels), a floor the loop
  adds to its read-noise floor;
- stiffness k = eps |lambda_min(d2Phi/dtheta2)|: under a fixed knob, successive
  full-length releases move theta by ``m(j+1) = -eps H m(j)``, a power
  iteration whose growth ratio is k (and whose last move shows which tensors
  carry the stiff direction);
- the signal: the RMS move of one nudged release (beta1 -> beta2) from the
  holding knob, i.e. one learning step, ``eps (beta2 - beta1) |g|``.

From these it chooses: eps per tensor (on a substrate whose compliance is a
settable ``eps`` mapping, a simulation) scaled down on the stiff tensors until
k <= ``k_target``; the first probe length ``min(1, 1 / (2 k))`` (a bench, where
eps is physics); and the number of averaged reads so that the per-step
signal-to-noise ratio ``signal / (sigma / sqrt(averages))`` reaches ``snr``
(ALGORITHMS-level bound in the README). theta is held back at the value it had
when the calibration started (within the loop's noise floor).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from protocols.averaging import averaged
from protocols.base import difference
from protocols.homeostasis import FeedbackHomeostasis, rms


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
    - ``snr``: the per-step signal-to-noise ratio the averaged reads aim at;
      ``max_averages``: the most reads averaged per read of theta.
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
    snr: float = 12.0
    max_averages: int = 16


@dataclass
class Calibration:
    """What a calibration measured and chose (theta units; k dimensionless)."""

    read_noise: dict[str, float] = field(default_factory=dict)
    gain: dict[str, float] = field(default_factory=dict)
    gain_error: dict[str, float] = field(default_factory=dict)  # standard error of each gain
    release_noise: float = 0.0  # RMS scatter of where a release lands beyond its ideal move (levels)
    stiffness: float = 0.0  # k at the chosen eps
    stiffness_before: float = 0.0  # k at the eps the run was configured with
    stiff_share: dict[str, float] = field(default_factory=dict)
    signal: float = 0.0  # RMS move of one nudged release
    eps: dict[str, float] | None = None  # chosen compliance per tensor (None: not settable, a bench)
    probe: float = 1.0
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
        return (
            f"read noise {noise:.3g} (largest per tensor), release scatter {self.release_noise:.3g}, "
            f"gain {gain}; stiffness k {self.stiffness_before:.3g} "
            f"-> {self.stiffness:.3g}; eps {eps}; probe {self.probe:.3g}; averages {self.averages}; "
            f"step signal {self.signal:.3g}; beta {self.beta[0]:g} / {self.beta[1]:g}"
        )


def used_gain(cal: Calibration, max_error: float = CalibrationSettings.gain_error) -> dict[str, float]:
    """The gains the loop uses: the measured ones known to ``max_error`` (and within 0.5 to 2), 1 for the others."""
    return {
        n: (g if cal.gain_error.get(n, np.inf) <= max_error and 0.5 <= g <= 2.0 else 1.0) for n, g in cal.gain.items()
    }


def _settable_eps(substrate) -> dict | None:
    eps = getattr(substrate, "eps", None)
    return eps if isinstance(eps, dict) else None


class Calibrator:
    """Measure a substrate and choose eps, probe length and averages for feedback Aeqprop.

    Example: ``Calibrator().run(substrate, x, y, betas=(-0.5, 0.5))``.
    """

    def __init__(self, settings: CalibrationSettings = CalibrationSettings()):
        self.settings = settings

    def run(self, substrate, x: np.ndarray, y: np.ndarray, betas: tuple[float, float]) -> Calibration:
        cfg = self.settings
        cal = Calibration(beta=(float(betas[0]), float(betas[1])))
        substrate.clamp(x)
        substrate.nudge(betas[0], y)
        substrate.relax()
        reads = [substrate.parameters() for _ in range(cfg.reads)]
        cal.reads += cfg.reads
        names = list(reads[0])
        ref = {n: np.mean([r[n] for r in reads], axis=0) for n in names}
        cal.read_noise = {n: float(np.sqrt(np.mean(np.var([r[n] for r in reads], axis=0, ddof=1)))) for n in names}
        sigma = max(cal.read_noise.values())
        m = int(min(64, max(1, math.ceil((cfg.kick_sigmas * sigma / cfg.kick) ** 2))))  # reads per averaged read
        kick = max(cfg.kick, cfg.kick_sigmas * sigma / math.sqrt(m))

        def read():
            return averaged(substrate.parameters, m)

        hold = FeedbackHomeostasis(max_iter=60, probe=0.25, averages=m, on_cap="hold", probes=8)

        def restore() -> None:
            # the loop's final knob holds the reference; a full release lands theta on it
            rep = hold(substrate, reference=ref)
            substrate.release(1.0)
            cal.reads += rep.reads

        restore()
        rng = np.random.default_rng(0)
        signs = {n: rng.choice([-1.0, 1.0], size=ref[n].shape) for n in names}

        # knob-to-theta gain: two short probes with opposite knob offsets from the held theta. The held
        # point may be an unstable equilibrium of the release (k > 1): the drift it adds is common
        # to both probes and cancels in their difference, up to O(probe) (corrected to first order).
        u = substrate.knobs()
        p = cfg.gain_probe
        a = read()
        substrate.set_knobs({n: u[n] + kick * signs[n] for n in names})
        substrate.release(p)
        b = read()
        substrate.set_knobs({n: u[n] - kick * signs[n] for n in names})
        substrate.release(p)
        c = read()
        cal.reads += 3 * m
        substrate.set_knobs(u)
        scatter, count = 0.0, 0
        for n in names:
            d = (b[n] - a[n]) - (c[n] - b[n])
            per_entry = d * signs[n] / (2 * p * kick * (1 + p / 2))
            cal.gain[n] = float(np.mean(per_entry))
            cal.gain_error[n] = float(np.std(per_entry) / np.sqrt(per_entry.size)) if per_entry.size > 1 else np.inf
            scatter += float(np.sum((d - np.mean(per_entry) * signs[n] * 2 * p * kick * (1 + p / 2)) ** 2))
            count += d.size
        # d's variance beyond three averaged reads (6 sigma^2 / m) is the scatter of two releases
        sigma_read = float(np.sqrt(np.mean([v**2 for v in cal.read_noise.values()])))
        scatter = float(np.sqrt(max(0.0, scatter / count - 6 * sigma_read**2 / m) / 2))
        largest = max(names, key=lambda n: ref[n].size)
        lost = not 0.5 <= cal.gain[largest] <= 2.0  # most of the probe's move lost or made up
        if cfg.release_scatter and lost:  # the release cannot resolve the probe's move (levels)
            cal.release_noise = max(scatter, p * kick)
            cal.gain_error = {n: float("inf") for n in names}
        hold.gain = used_gain(cal, cfg.gain_error)
        hold.release_noise = cal.release_noise
        restore()

        eps = _settable_eps(substrate)
        for round_ in range(cfg.rounds):
            k, share = self._stiffness(substrate, signs, kick, m, read, cal)
            if round_ == 0:
                cal.stiffness_before = k
            cal.stiffness, cal.stiff_share = k, share
            hold.probe = min(1.0, max(hold.settings.min_probe, 0.5 / max(k, 1e-12)))
            restore()
            if eps is None or k <= cfg.k_target:
                break
            for n, s in share.items():
                if s >= cfg.share:
                    eps[n] *= cfg.k_target / k * 0.9
            restore()  # the knob that held theta at the old eps does not at the new one
        cal.eps = None if eps is None else {n: float(v) for n, v in eps.items()}
        cal.probe = float(min(1.0, max(hold.settings.min_probe, 0.5 / max(cal.stiffness, 1e-12))))

        # signal: one nudged release from the holding knob
        before = read()
        substrate.nudge(betas[1], y)
        substrate.release(1.0)
        after = read()
        cal.reads += 2 * m
        cal.signal = rms(difference(after, before))
        substrate.nudge(betas[0], y)
        substrate.relax()
        restore()
        substrate.nudge(0.0)
        if sigma > 0 and cal.signal > 0:
            cal.averages = int(min(cfg.max_averages, max(1, math.ceil((cfg.snr * sigma / cal.signal) ** 2))))
        return cal

    def _stiffness(self, substrate, signs, kick, m, read, cal) -> tuple[float, dict[str, float]]:
        """k from a power iteration of -eps H under a fixed knob; the tensors' shares of the stiff direction."""
        cfg = self.settings
        u = substrate.knobs()
        substrate.set_knobs({n: u[n] + kick * signs[n] for n in u})
        prev = read()
        moves = []
        for _ in range(cfg.power_probes):
            substrate.release(1.0)
            now = read()
            moves.append(difference(now, prev))
            prev = now
            if len(moves) >= 3 and rms(moves[-1]) > cfg.max_move:
                break
        cal.reads += m * (1 + len(moves))
        substrate.set_knobs(u)

        # The first ratio is a Rayleigh quotient over the random kick; later ones approach the largest
        # eigenvalue, until units cross their box bounds (the net is piecewise linear): take the largest.
        def norm(d):
            return math.sqrt(sum(float(np.sum(v * v)) for v in d.values()))

        pairs = [(norm(b) / norm(a), j + 1) for j, (a, b) in enumerate(pairwise(moves)) if norm(a) > 0]
        ratios = [r for r, _ in pairs]  # (levels: a move may vanish)
        j = max(pairs)[1] if pairs else 0
        energy = {n: float(np.mean(v * v)) for n, v in moves[j].items()}  # per entry: small stiff tensors count
        total = sum(energy.values()) or 1.0
        return (float(max(ratios)) if ratios else 0.0), {n: e / total for n, e in energy.items()}


def apply(cal: Calibration, protocol, substrate) -> None:
    """Put a calibration's choices into effect: eps (if settable), and the feedback loop's probe,
    gain and averaged reads. Used after a calibration and when a run resumes from its record."""
    eps = _settable_eps(substrate)
    if eps is not None and cal.eps is not None:
        eps.update(cal.eps)
    loop = protocol.feedback
    loop.probe = loop.max_probe = cal.probe
    loop.gain = used_gain(cal)
    loop.release_noise = cal.release_noise
    loop.averages = protocol.averages = cal.averages
