"""Feedback homeostasis: find the knobs that hold floating parameters still, reading only theta.

Works on any device with knobs, a parameter readout and a release (no model,
no energy gradients): the agnostic counterpart of a substrate's native
homeostasis ``u = theta + eps dE/dtheta``.
"""

from __future__ import annotations

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from protocols.averaging import averaged, check_averages
from protocols.base import difference

ON_CAP = ("raise", "hold")
NOISE_MARGIN = 1.5  # tolerance over the spread of two reads of a held theta (atol="auto")
MIN_PROBE = 1.0 / 16
GROWTH = 1.5  # a residual this much larger than the one two probes before is a runaway
PROGRESS = 0.8  # a residual below this fraction of the best so far is progress ...
PATIENCE = 5  # ... and this many probes without progress is the noise floor,
STALL = 0.1  # if below this fraction of the first drift or NOISE_FLOOR times the read-noise
NOISE_FLOOR = 4.0  # tolerance (above both: a marginally stable loop, not noise)


def _max_abs(d: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(v))) if v.size else 0.0 for v in d.values())


class FeedbackHomeostasis:
    """Steer the knobs until a release no longer moves theta.

    Each probe sets the knobs, releases the parameters for ``probe`` (in the
    substrate's release units: the fraction of the way to their floating
    equilibrium that a release of that length moves them; one parameter update
    in simulation is 1.0) and reads theta. The drift gives the holding knob at
    the start of the probe, ``u - drift / probe``, which moves with theta; the
    next knob adds a pull back to the starting theta. The error shrinks by
    ``sqrt(probe * eps * |lambda|)`` per probe (lambda: curvature of Phi in
    theta). Three ways out:

    - converged: a probe moves no entry by more than ``rtol`` times the first
      drift plus ``atol``, and theta is that close to where it started;
    - noise floor: ``PATIENCE`` probes without progress (read or programming
      noise dominates); the knob holding the current theta is kept and the
      step reports it (``last_stalled``);
    - cap: ``max_iter`` probes; ``on_cap="raise"`` raises RelaxationError,
      ``"hold"`` keeps the knob holding the current theta.

    A residual larger than ``GROWTH`` times the one two probes before means
    the probe overshoots (the loop is unstable when probe * eps * |lambda| >= 1):
    the probe is shortened so the error would shrink fourfold every two probes,
    down to ``MIN_PROBE``; so is a loop that stalls above ``STALL`` times the
    first drift and ``NOISE_FLOOR`` times the read-noise tolerance (marginally
    stable, not noise). Noise never shortens it, since a short probe divides the
    noise of the drift by its length.

    Against read noise: each read of theta is the mean of ``averages`` reads;
    ``atol="auto"`` reads theta twice at the start and sets the absolute
    tolerance to ``NOISE_MARGIN`` times the largest difference.
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
        self.last_stalled = False

    def __call__(self, substrate) -> int:
        read = lambda: averaged(substrate.parameters, self.averages)  # noqa: E731
        theta_ref = read()
        atol = self.atol
        if atol == "auto":
            again = read()
            atol = NOISE_MARGIN * _max_abs(difference(again, theta_ref))
            theta_ref = {n: 0.5 * (theta_ref[n] + again[n]) for n in theta_ref}
        self.last_capped = self.last_stalled = False
        # First guess: the knobs as they are. After a step they held the previous sample's theta,
        # so the first drift is eps times a change of dE/dtheta between samples, not all of it.
        u = substrate.knobs()
        theta_a, probe = theta_ref, self.probe
        tol = None
        residuals: list[float] = []
        best, since_best = np.inf, 0
        for it in range(1, self.max_iter + 1):
            substrate.set_knobs(u)
            substrate.release(probe)
            theta_b = read()
            move = difference(theta_b, theta_a)
            off = difference(theta_b, theta_ref)
            residual = self.last_residual = max(_max_abs(move), _max_abs(off))
            if tol is None:
                tol = self.last_tolerance = self.rtol * residual + atol
                residuals_first = residual
            u_hold = {n: u[n] - move[n] / probe + move[n] for n in u}  # holds theta_b
            self.last_iterations = it
            if residual <= tol:
                substrate.set_knobs(u_hold)
                return it
            residuals.append(residual)
            # the error turns by a complex factor per probe: compare with two probes before
            if len(residuals) >= 3 and residual > GROWTH * residuals[-3] and probe > MIN_PROBE:
                # |error| grows by about probe * eps * |lambda| every two probes: aim that at 1/4
                probe = max(MIN_PROBE, probe * max(0.125, 0.25 * residuals[-3] / residual))
                best, since_best = np.inf, 0
                residuals.clear()
            elif residual < PROGRESS * best:
                best, since_best = residual, 0
            else:
                since_best += 1
            if since_best >= PATIENCE:
                if residual > max(STALL * residuals_first, NOISE_FLOOR * atol) and probe > MIN_PROBE:
                    probe, best, since_best = max(MIN_PROBE, probe / 2), np.inf, 0
                    residuals.clear()
                else:
                    self.last_stalled = True
                    substrate.set_knobs(u_hold)
                    return it
            u = {n: u_hold[n] - off[n] / probe for n in u}
            theta_a = theta_b
        if self.on_cap == "hold":
            self.last_capped = True
            substrate.set_knobs(u_hold)
            return self.max_iter
        raise RelaxationError(
            f"feedback homeostasis did not hold the parameters within rtol={self.rtol:g} in "
            f"{self.max_iter} iterations (last drift {self.last_residual:.3g}); raise "
            "homeostasis_iterations or homeostasis_rtol"
        )
