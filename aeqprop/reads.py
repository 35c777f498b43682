"""Counting a substrate's reads of theta and dE/dtheta: the measured cost of a training step.

A read is one call of ``parameters()`` or ``energy_gradients()`` that the controller
makes on the substrate it holds: one measurement of every parameter on a device
(averaged reads count each repetition). Reads the substrate makes of itself are its
own business and are not counted: a wrapper reading the device it wraps, or a
simulation reading its own theta while it releases or holds its parameters.

Example::

    with ReadCounter(substrate) as counter:
        protocol.step(substrate, x, y)
    counter.reads   # e.g. 4 for centered EqProp: dE/dtheta twice, theta before and after programming
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The contract's methods that read every parameter (or its energy gradient) once per call.
READS = ("parameters", "energy_gradients")
#: The contract's other methods: a read made while one of them runs is the substrate's own.
OTHERS = ("clamp", "nudge", "relax", "outputs", "set_parameters", "knobs", "set_knobs", "release", "homeostasis")

_ABSENT = object()


class ReadCounter:
    """Counts the controller's calls of :data:`READS` on one substrate while entered.

    Entering puts a wrapper in front of each contract method the substrate has (an
    attribute of the instance, so the substrate's code is untouched; the wrappers only
    count and delegate); leaving takes them away again. A substrate that takes no
    instance attributes (``__slots__``) is not counted: ``counting`` is then False and
    ``reads`` stays 0.
    """

    def __init__(self, substrate: Any):
        self.substrate = substrate
        self.reads = 0
        self.counting = False
        self._depth = 0  # contract calls under way: a read inside one is the substrate's own
        self._previous: dict[str, Any] = {}  # name -> the instance's own attribute before (_ABSENT: none)

    def __enter__(self) -> ReadCounter:
        own = getattr(self.substrate, "__dict__", None)
        if own is None:
            return self
        for name in READS + OTHERS:
            method = getattr(self.substrate, name, None)
            if not callable(method):
                continue
            self._previous[name] = own.get(name, _ABSENT)
            own[name] = self._wrap(method, name in READS)
        self.counting = any(name in self._previous for name in READS)
        return self

    def _wrap(self, method: Callable[..., Any], read: bool) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if read and self._depth == 0:
                self.reads += 1
            self._depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1

        return call

    def __exit__(self, *exc: object) -> None:
        own = self.substrate.__dict__ if self._previous else {}
        for name, previous in self._previous.items():
            if previous is _ABSENT:
                own.pop(name, None)
            else:
                own[name] = previous
        self._previous = {}
        self.counting = False
