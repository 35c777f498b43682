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

It also measures the up/down asymmetry of a release per tensor (a device that moves
theta up by ``g (1 + a)`` and down by ``g (1 - a)`` per unit of knob offset).

From these it chooses: eps per tensor (on a substrate whose compliance is a
settable ``eps`` mapping, a simulation) scaled down on the stiff tensors until
k <= ``k_target``; the number of averaged reads so that the per-step
signal-to-noise ratio ``signal / (max(1, k) sigma / sqrt(averages))`` reaches
``snr`` (the signal-to-noise bound in the README); the probe length, the probe
budget and the tolerance of the loop (:func:`choose_probe`: on a quiet device,
short probes and a few of them; on a noisy one, ``min(1, 1 / (2 k))`` and at
least ``min_estimates`` estimates). theta is held back at the value it had
when the calibration started (within the loop's noise floor).

The settings, the record and the rules of the choices (``choose_probe``, ``apply``) are in
protocols/calibration_record.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import numpy as np

from aeqprop.substrate import AeqpropSubstrate
from protocols.averaging import averaged
from protocols.base import difference
from protocols.calibration_record import (  # noqa: F401  (apply re-exported)
    Calibration,
    CalibrationSettings,
    _settable_eps,
    apply,
    choose_probe,
    used_gain,
)
from protocols.homeostasis import FeedbackHomeostasis, rms

Read = Callable[[], dict[str, np.ndarray]]  # one averaged read of theta


class Calibrator:
    """Measure a substrate and choose eps, probe length and averages for feedback Aeqprop.

    Example: ``Calibrator().run(substrate, x, y, betas=(-0.5, 0.5))``.
    """

    def __init__(self, settings: CalibrationSettings = CalibrationSettings()) -> None:  # noqa: B008 (frozen)
        self.settings = settings

    def run(self, substrate: AeqpropSubstrate, x: np.ndarray, y: np.ndarray, betas: tuple[float, float]) -> Calibration:
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

        def read() -> dict[str, np.ndarray]:
            return averaged(substrate.parameters, m)

        hold = FeedbackHomeostasis(max_iter=60, probe=0.25, averages=m, on_cap="hold", probes=8)

        def restore() -> None:
            # the loop's final knob holds the reference and theta sits within the loop's floor of it.
            # Where k < 1 a full release lands theta on the reference; past it, it would multiply
            # theta's offset by up to k (on a device whose entries' eps vary tenfold, 0.003 became
            # 0.13 RMS), so theta stays where the loop left it. k is measured through noisy reads:
            # only below land_below does a full release land it (k is 0 until it is measured)
            rep = hold(substrate, reference=ref)
            if cal.stiffness < cfg.land_below:
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
        if cfg.asymmetry_kick > 0:
            # moves many levels long where a release lands on levels (rounding would hide the asymmetry)
            kick_a = max(cfg.asymmetry_kick * kick, cfg.asymmetry_levels * cal.release_noise / cfg.gain_probe)
            cal.asymmetry = self._asymmetry(substrate, signs, kick_a, m, read, cal)
            hold.asymmetry = dict(cal.asymmetry)
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

        # signal: one nudged release from the holding knob, from theta landed on the reference by an
        # un-nudged one (restore lands it only where k < 1): from where the loop left theta, the nudged
        # release would also do the landing, and the landing would count as part of the step. Past
        # k = 1 the landing goes to the knob's fixed point, as far from the reference as the knob
        # errs: a longer hold first (signal_probes) brings the knob closer
        if cal.stiffness >= cfg.land_below:
            hold.probes, hold.max_iter = max(hold.probes, cfg.signal_probes), max(hold.max_iter, 2 * cfg.signal_probes)
            cal.reads += hold(substrate, reference=ref).reads
            substrate.release(1.0)
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
            # the update multiplies theta's offset from the (read) reference by k: SNR signal sqrt(m) / (k sigma)
            noise = max(1.0, cal.stiffness) * sigma
            cal.averages = int(min(cfg.max_averages, max(1, math.ceil((cfg.snr * noise / cal.signal) ** 2))))
        cal.tolerance = cfg.signal_rtol * cal.signal / max(1.0, cal.stiffness)
        floor = math.hypot(sigma / math.sqrt(cal.averages), cal.release_noise)
        cal.probe, estimates, cal.quiet = choose_probe(cal.stiffness, floor, cal.signal, cfg, hold.settings)
        cal.probes = hold.settings.transient + estimates
        return cal

    def _asymmetry(
        self,
        substrate: AeqpropSubstrate,
        signs: dict[str, np.ndarray],
        kick: float,
        m: int,
        read: Read,
        cal: Calibration,
    ) -> dict[str, float]:
        """Per tensor, how much larger an upward move is than a downward one under the same knob offset.

        A probe at the holding knob measures the held point's drift; then a probe under a knob offset
        of random signs, its move less that drift: the entries pushed up move ``g (1 + a) p kick`` on
        average, those pushed down ``-g (1 - a) p kick``, so ``a`` is the ratio of the sum of the two
        mean moves to their difference (whatever the gain g). The drift changes from one probe to the
        next (noise in the holding knob, an unstable held point), so the kick is raised until the
        kicked move is ``asymmetry_margin`` times the drift's RMS (up to ``asymmetry_max_kick``; past
        it nothing is measured). A tensor whose ``a`` is not 3 standard errors from zero (or that has
        fewer than 8 entries pushed each way) gets 0.
        """
        cfg = self.settings
        u, p = substrate.knobs(), cfg.gain_probe
        start = read()
        substrate.release(p)
        middle = read()
        cal.reads += 2 * m
        drift = difference(middle, start)
        kick = max(kick, cfg.asymmetry_margin * rms(drift) / p)
        out = {n: 0.0 for n in u}
        if kick > cfg.asymmetry_max_kick:
            return out
        substrate.set_knobs({n: u[n] + kick * signs[n] for n in u})
        substrate.release(p)
        end = read()
        cal.reads += m
        substrate.set_knobs(u)
        for n, v in end.items():
            move, up = ((v - middle[n]) - drift[n]).ravel(), signs[n].ravel() > 0
            if min(np.count_nonzero(up), np.count_nonzero(~up)) < 8:
                continue
            rise, fall = float(np.mean(move[up])), float(np.mean(move[~up]))
            se = math.sqrt(np.var(move[up]) / np.count_nonzero(up) + np.var(move[~up]) / np.count_nonzero(~up))
            if rise - fall > 0 and abs(rise + fall) > 3 * se:
                out[n] = float(np.clip((rise + fall) / (rise - fall), -cfg.max_asymmetry, cfg.max_asymmetry))
        return out

    def _stiffness(
        self,
        substrate: AeqpropSubstrate,
        signs: dict[str, np.ndarray],
        kick: float,
        m: int,
        read: Read,
        cal: Calibration,
    ) -> tuple[float, dict[str, float]]:
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
        def norm(d: dict[str, np.ndarray]) -> float:
            return math.sqrt(sum(float(np.sum(v * v)) for v in d.values()))

        pairs = [(norm(b) / norm(a), j + 1) for j, (a, b) in enumerate(pairwise(moves)) if norm(a) > 0]
        ratios = [r for r, _ in pairs]  # (levels: a move may vanish)
        j = max(pairs)[1] if pairs else 0
        energy = {n: float(np.mean(v * v)) for n, v in moves[j].items()}  # per entry: small stiff tensors count
        total = sum(energy.values()) or 1.0
        return (float(max(ratios)) if ratios else 0.0), {n: e / total for n, e in energy.items()}
