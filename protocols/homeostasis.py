"""Feedback homeostasis: find the knobs that hold floating parameters still, reading only theta.

Works on any device with knobs, a parameter readout and a release (no model,
no energy gradients): the agnostic counterpart of a substrate's native
homeostasis ``u = theta + eps dE/dtheta``.

The loop's physics (ALGORITHMS.md section 3). A probe of length p (the
fraction of the way to the floating equilibrium a release moves theta) under
knob u moves theta by ``p (u - u*(theta))``, where ``u*(theta) = theta + eps
dPhi/dtheta`` is the holding knob. So one probe gives ``u*`` at the start of the
probe, ``u - move / p``, exactly but for read noise amplified by 1/p. Near the
reference theta_r, ``u*(theta_r + e) = u*_r + (I + eps H) e`` with ``H =
d2Phi/dtheta2 <= 0``; the loop assumes the slope I, and its error along an
eigenvector of stiffness ``k = eps |lambda|`` obeys ``e(j+2) = p k (e(j+1) -
e(j))``: it shrinks by ``sqrt(p k)`` per probe and is stable only for ``p <
1 / k``. Read noise sigma enters each knob estimate as about ``sqrt(2) sigma /
p``, so the probe is only as short as stiffness demands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import AeqpropSubstrate
from protocols.averaging import averaged, check_averages, release_and_read
from protocols.base import difference

ON_CAP = ("raise", "hold")


@dataclass(frozen=True)
class LoopSettings:
    """Tuning of the feedback loop (dimensionless unless stated).

    - ``noise_margin``: the loop has converged when the RMS offset of theta from
      its reference is within this many times the RMS read-noise floor (measured
      each call from two reads of the reference), plus ``rtol`` times the first drift.
    - ``growth``: an RMS offset this much larger than two probes before, and above
      ``noise_margin`` floors / probe, is a runaway (the probe is longer than 1/k).
    - ``shorten``: factor applied to the probe on a runaway; ``recover``: factor
      (> 1) by which a probe that saw no runaway in a call is lengthened again, up
      to the configured probe.
    - ``min_probe``: the shortest probe (release units).
    - ``progress``, ``patience``, ``floor_band``: past the probe budget, ``patience``
      probes whose RMS offset never falls below ``progress`` times the best so far
      mean a floor the read noise does not explain (conductance levels, stuck
      entries): the loop stops and averages the estimates taken within
      ``floor_band`` times the best offset.
    - ``transient``: probes whose holding-knob estimates are left out of the final
      knob; every later estimate taken within the tolerance is averaged into it
      (an estimate errs by about k times theta's offset). The read noise of a probe's
      move enters its estimate as ``noise / p``, but the moves of successive probes
      telescope in the mean, so the mean of L estimates carries about
      ``sqrt(2) sigma / (p L)``.
    """

    noise_margin: float = 3.0
    growth: float = 1.5
    shorten: float = 0.5
    recover: float = 1.25
    min_probe: float = 1.0 / 32
    transient: int = 2
    progress: float = 0.8
    patience: int = 4
    floor_band: float = 1.5


@dataclass
class HomeostasisReport:
    """What one call of the loop measured: probes, reads of theta, the final RMS offset of theta from
    its reference (release units of theta), the stopping tolerance, the probe length it ended with,
    the RMS read noise of one read, the loop's stiffness estimate k (nan if not measurable), and
    whether it stopped at its cap."""

    probes: int = 0
    reads: int = 0
    residual: float = 0.0
    tolerance: float = 0.0
    probe: float = 1.0
    read_noise: float = 0.0
    stiffness: float = float("nan")
    capped: bool = False
    floored: bool = False  # stopped at a floor the read noise does not explain
    reference: dict = field(default_factory=dict, repr=False)  # the mean of the two reference reads


def rms(d: dict[str, np.ndarray]) -> float:
    """Root mean square over every entry of every tensor."""
    n = sum(v.size for v in d.values())
    return float(np.sqrt(sum(float(np.einsum("i,i->", v.ravel(), v.ravel())) for v in d.values()) / max(n, 1)))


def _mean(arrays: list[np.ndarray]) -> np.ndarray:
    """The mean of equally shaped arrays, summed in order (as ``sum(arrays) / len(arrays)``)."""
    return np.asarray(sum(arrays)) / len(arrays)


def stiffness_from_growth(rho: float) -> float:
    """The stiffness k from the loop's error growth rho per full-length probe.

    The error recursion ``e(j+2) = k (e(j+1) - e(j))`` has roots ``z^2 - k z + k =
    0``: complex with ``|z| = sqrt(k)`` for k < 4, real with the larger root
    ``z = k / (z - 1) * z`` beyond. So ``k = rho^2`` up to rho = 2, ``rho^2 / (rho - 1)`` past it.
    """
    return rho * rho if rho <= 2.0 else rho * rho / (rho - 1.0)


class FeedbackHomeostasis:
    """Steer the knobs until a release no longer moves theta away from where the step started.

    Each call reads the reference theta (twice when not calibrated: their
    difference measures the read-noise floor; once with the calibrated noise),
    then runs probes: set the knobs, release for ``probe``, read theta (one
    exchange on a bench that can pulse its hold line, see
    :func:`protocols.averaging.release_and_read`). From the move it estimates the holding
    knob at the new theta (``u - move / probe + move``) and sets the next knob to
    pull theta back to the reference. It runs at least ``probes`` probes (the
    drift left by the previous sample's knob is always removed in expectation;
    there is no early exit on a noise test) and then stops as soon as the RMS
    offset is within ``rtol`` times the first drift plus ``noise_margin`` read-noise
    floors plus ``atol``; at ``max_iter`` it raises (``on_cap="raise"``) or keeps
    its knob (``"hold"``).

    The final knob is the mean of the last few holding-knob estimates, with the
    offset left from the reference subtracted: it holds the reference theta, so
    a release of length 1 returns what the probes moved.

    Probe length and stiffness: a runaway (RMS offset ``growth`` times the one two
    probes before, above the noise floor) halves the probe. The probe length is
    carried from call to call and lengthened slowly after calls without a
    runaway. Each read of theta is the mean of ``averages`` reads.

    A calibration (protocols.calibration) sets, besides the probe length, the
    per-tensor gain and asymmetry (a knob offset moves theta up by ``g (1 + a)``
    and down by ``g (1 - a)``; an estimate that assumed ``a = 0`` would sit low by
    ``a |u - u*|`` whatever the offset's sign, a bias that every step would add),
    the read noise, the probe budget and a tolerance from the step size.
    """

    def __init__(
        self,
        rtol: float = 1e-4,
        max_iter: int = 50,
        probe: float = 1.0,
        atol: float = 0.0,
        averages: int = 1,
        on_cap: str = "raise",
        probes: int = 12,
        settings: LoopSettings = LoopSettings(),
    ) -> None:
        if not (isinstance(atol, (int, float)) and atol >= 0):
            raise ConfigurationError(f"homeostasis atol={atol!r}: must be a number >= 0 (theta units)")
        if not (rtol > 0 and max_iter >= 1 and 0 < probe <= 1):
            raise ConfigurationError("homeostasis needs rtol > 0, max_iter >= 1 and 0 < probe <= 1")
        if not (int(probes) == probes and 1 <= probes <= max_iter):
            raise ConfigurationError(f"homeostasis probes={probes}: must be an integer from 1 to max_iter ({max_iter})")
        if on_cap not in ON_CAP:
            raise ConfigurationError(f"homeostasis on_cap={on_cap!r}; valid: {', '.join(ON_CAP)}")
        self.rtol, self.max_iter, self.max_probe = float(rtol), int(max_iter), float(probe)
        self.probe = float(probe)  # carried from call to call
        self.atol, self.probes, self.settings = float(atol), int(probes), settings
        self.averages, self.on_cap = check_averages(averages), on_cap
        self.gain: dict[str, float] = {}  # knob-to-theta gain per tensor (calibration); 1 if absent
        self.release_noise = 0.0  # RMS scatter of where a release lands beyond its ideal move (calibration)
        self.asymmetry: dict[str, float] = {}  # per tensor: up moves (1 + a), down moves (1 - a) (calibration)
        # one read's RMS noise per tensor (calibration); None: measured each call from two reads
        self.read_noise: dict[str, float] | None = None
        self.signal_atol = 0.0  # tolerance set from a learning step's size (calibration, theta units)
        self.reference_reads = 2  # reads of the reference once calibrated (1 on a quiet device)
        # knob dither, used only once a release is quantized; made here so a checkpoint always holds its state
        self.dither = np.random.default_rng(0)

    def __call__(
        self, substrate: AeqpropSubstrate, reference: dict[str, np.ndarray] | None = None
    ) -> HomeostasisReport:
        """Run the loop; ``reference``: the theta to hold (default: theta as read now)."""
        cfg, m = self.settings, self.averages

        def read() -> dict[str, np.ndarray]:
            return averaged(substrate.parameters, m)

        # the reference: two reads (their difference measures the noise floor when not calibrated), or
        # as many as the calibration asked for (one on a quiet device)
        refs = [read() for _ in range(2 if self.read_noise is None else self.reference_reads)]
        first = refs[0]
        ref = {n: _mean([r[n] for r in refs]) for n in first} if reference is None else reference
        if self.read_noise is None:
            per_tensor = {n: rms({n: refs[1][n] - first[n]}) / np.sqrt(2.0) * np.sqrt(m) for n in first}
        else:
            per_tensor = {n: self.read_noise.get(n, 0.0) for n in first}
        reads, ref_share = len(refs) * m, 1.0 / len(refs)  # variance of the reference, in averaged reads
        if reference is not None:
            ref_share = 0.0
        sigma = float(np.sqrt(np.mean([v**2 for v in per_tensor.values()])))  # one read's noise (RMS)
        # RMS floor of a probe's read minus the reference: read noise, and the release's own resolution
        # (conductance levels; measured by the calibration, theta units)
        spread = np.sqrt((1.0 + ref_share) / m)
        floor = float(np.hypot(sigma * spread, self.release_noise))
        floors = np.hypot(np.array([per_tensor[n] for n in first]) * spread, self.release_noise)
        report = HomeostasisReport(reads=reads, read_noise=sigma, reference=ref)
        u = substrate.knobs()
        theta_a, p = ref, self.probe
        holds: list[dict[str, np.ndarray]] = []
        settled: list[bool] = []  # whether each estimate was taken within the tolerance
        residuals: list[float] = []
        offsets: list[np.ndarray] = []  # RMS offset per tensor, per probe
        best, since_best = np.inf, 0
        tol: float | None = None
        runaway = False
        for it in range(1, self.max_iter + 1):
            if self.release_noise > 0:  # dither the knob by a level's worth of theta move, so the
                # rounding of a quantized release averages out over the estimates (subtractive dither)
                half = np.sqrt(3.0) * self.release_noise / p
                u = {n: v + self.dither.uniform(-half, half, v.shape) for n, v in u.items()}
            substrate.set_knobs(u)
            _, theta_b = release_and_read(substrate, p, m)
            report.reads += m
            move = difference(theta_b, theta_a)
            off = difference(theta_b, ref)
            residual = rms(off)
            if tol is None:
                tol = self.rtol * residual + cfg.noise_margin * floor + self.atol + self.signal_atol
            g = self.gain  # knob-to-theta gain: a knob change du moves the floating equilibrium by g du
            a = self.asymmetry  # a knob offset moves theta up by g (1 + a), down by g (1 - a), per unit
            hold = {  # holds theta_b
                n: u[n] - (move[n] / (p * (1.0 + a.get(n, 0.0) * np.sign(move[n]))) - move[n]) / g.get(n, 1.0)
                for n in u
            }
            holds.append({n: hold[n] - off[n] / g.get(n, 1.0) for n in u})  # holds the reference
            settled.append(residual <= tol / p)  # the read noise of theta's moves is amplified by 1/p
            offsets.append(np.array([rms({n: v}) for n, v in off.items()]))  # per tensor
            residuals.append(residual)
            report.probes, report.residual = it, residual
            if it >= self.probes and residual <= tol:
                break
            best, since_best = (residual, 0) if residual < cfg.progress * best else (best, since_best + 1)
            if it >= self.probes and since_best >= cfg.patience:
                # a floor the read noise does not explain (conductance levels, stuck entries): keep the
                # estimates taken at it
                settled = [r <= cfg.floor_band * best for r in residuals]
                report.floored = True
                break
            grown = len(offsets) >= 3 and np.any(
                (offsets[-1] > cfg.growth * offsets[-3]) & (offsets[-1] > cfg.noise_margin * floors / p)
            )
            if grown:
                if p == 1.0:
                    ratio = np.max(offsets[-1] / np.maximum(offsets[-3], 1e-300))
                    report.stiffness = stiffness_from_growth(float(np.sqrt(ratio)))
                runaway = True
                p = max(cfg.min_probe, p * cfg.shorten)
                holds, settled, residuals = holds[-1:], settled[-1:], residuals[-1:]
                offsets.clear()
                best, since_best = np.inf, 0
            u = {n: hold[n] - off[n] / (p * self.gain.get(n, 1.0)) for n in u}
            theta_a = theta_b
        else:
            report.capped = True
            if self.on_cap == "raise":
                raise RelaxationError(
                    f"feedback homeostasis did not hold the parameters within rtol={self.rtol:g} in "
                    f"{self.max_iter} probes (RMS offset {residual:.3g}, tolerance {tol:.3g}); raise "
                    "homeostasis_iterations or homeostasis_rtol"
                )
        # Each estimate errs by about k times theta's offset when it was taken (the slope-1 assumption),
        # so average only those taken within the tolerance (the noise floor), past the transient.
        last = [h for j, (h, ok) in enumerate(zip(holds, settled)) if ok and j >= cfg.transient] or holds[-1:]
        substrate.set_knobs({n: _mean([h[n] for h in last]) for n in u})
        self.probe = p if runaway else min(self.max_probe, p * cfg.recover)
        report.probe, report.tolerance = p, float("nan") if tol is None else tol  # set by the first probe
        return report
