"""Step clipping for Aeqprop: a release cut short when a tensor is about to move far more than usual.

A nudged phase can settle some batches in another minimum of the energy than the free phase's (a
trained energy is not convex). The step is then eps times an O(1) contrast instead of the gradient's,
several times the usual length and off in direction; on the conv substrate such jumps drive kernels
and biases to their bounds and switch whole channels off for good. Gradient-norm clipping is the
software answer; here the controller does it with the release alone, with no model of the device:

1. release for a short first part, ``probe`` of the step's release, and read theta;
2. per tensor, project the whole step's length from that move (the move grows with the release:
   exactly in proportion in simulation, for a short release);
3. if a tensor's projected length is above ``factor`` times its typical length (a running mean of
   its past steps' lengths, each counted at most at the cap), the rest of the release is shortened
   so that tensor moves ``factor`` times its typical length; else the release goes on to its end.

The whole step keeps its direction (one release moves every tensor); it is scaled by ``s`` in
``[probe, 1]``. Lengths are counted per unit of release and of nudging, so a schedule of either does
not read as a jump. The typical lengths are carried from step to step and saved with a run
(:meth:`StepClip.state`, :meth:`StepClip.restore`), so a resumed run clips as the unbroken one.

Example: ``Aeqprop(beta=0.5, step_clip=2.0)`` (factor 2, probe 0.1, memory 50 steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from aeqprop.errors import ConfigurationError

PREFIX = "step_clip_typical."  # step report extras: the typical length per tensor
SEEN = "step_clip_seen"  # step report extras: how many steps the typical lengths count


class StepClip:
    """The typical step length per tensor and the scale of the next step.

    ``factor``: a step is cut to this many times the typical length (> 1). ``probe``: the first part
    of the release, a fraction of the step (0 < probe < 1; a step is never cut below it).
    ``memory``: the running mean's horizon in steps. ``warmup``: steps before any cut.
    """

    def __init__(self, factor: float, probe: float = 0.1, memory: int = 50, warmup: int = 10) -> None:
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
            raise ConfigurationError(
                f"step_clip={factor!r}: the cap is a multiple of the typical step, a number > 1 (0 for none)"
            )
        if not (isinstance(probe, (int, float)) and 0 < probe < 1):
            raise ConfigurationError(f"step_clip_probe={probe!r}: the first part of the release, between 0 and 1")
        if int(memory) != memory or memory < 1 or int(warmup) != warmup or warmup < 0:
            raise ConfigurationError(f"step_clip memory {memory!r} and warmup {warmup!r}: integers >= 1 and >= 0")
        self.factor, self.probe, self.memory, self.warmup = float(factor), float(probe), int(memory), int(warmup)
        self.typical: dict[str, float] = {}
        self.seen = 0

    def scale(self, lengths: Mapping[str, float]) -> float:
        """The step's scale in [probe, 1] for these projected lengths (per unit of release and nudging)."""
        if self.seen < self.warmup:
            return 1.0
        s = 1.0
        for name, length in lengths.items():
            cap = self.factor * self.typical.get(name, math.inf)
            if length > cap:
                s = min(s, cap / length)
        return max(s, self.probe)

    def update(self, lengths: Mapping[str, float]) -> None:
        """Count a step's projected lengths, each at most at its cap, into the typical ones."""
        rate = 1.0 / min(self.seen + 1, self.memory)
        for name, length in lengths.items():
            if not math.isfinite(length):
                continue
            old = self.typical.get(name)
            if old is None:
                self.typical[name] = length
            else:
                counted = length if self.seen < self.warmup else min(length, self.factor * old)
                self.typical[name] = old + rate * (counted - old)
        self.seen += 1

    def state(self) -> dict[str, float]:
        """What the next step needs, as step report extras (floats)."""
        return {SEEN: float(self.seen), **{PREFIX + n: v for n, v in self.typical.items()}}

    def restore(self, extra: Mapping[str, float]) -> None:
        """Take back :meth:`state` (a resumed run); extras without it leave the clip as it is."""
        if SEEN not in extra:
            return
        self.seen = int(extra[SEEN])
        self.typical = {k[len(PREFIX) :]: float(v) for k, v in extra.items() if k.startswith(PREFIX)}


def lengths(move: Mapping[str, np.ndarray], per: float) -> dict[str, float]:
    """Each tensor's move length (2-norm) divided by ``per``."""
    return {n: float(np.sqrt(np.vdot(v, v).real)) / per for n, v in move.items()}
