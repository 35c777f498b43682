"""Counting a substrate's reads of theta and dE/dtheta: the measured cost of a training step.

A read is one call of ``parameters()`` or ``energy_gradients()`` on the substrate the
controller holds: one measurement of every parameter on a device (averaged reads count
each repetition). Reads the substrate makes of itself (a wrapper reading the device it
wraps) are not the controller's and are not counted.

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

_ABSENT = object()


class ReadCounter:
    """Counts calls of :data:`READS` on one substrate while entered.

    Entering puts a counting wrapper in front of each method the substrate has (an
    attribute of the instance, so the substrate's own code is untouched); leaving takes
    it away again. A substrate that takes no instance attributes (``__slots__``) is not
    counted: ``counting`` is then False and ``reads`` stays 0.
    """

    def __init__(self, substrate: Any):
        self.substrate = substrate
        self.reads = 0
        self.counting = False
        self._previous: dict[str, Any] = {}  # name -> the instance's own attribute before (_ABSENT: none)

    def __enter__(self) -> ReadCounter:
        sub = self.substrate
        own = getattr(sub, "__dict__", None)
        if own is None:
            return self
        for name in READS:
            method = getattr(sub, name, None)
            if method is None:
                continue
            self._previous[name] = own.get(name, _ABSENT)
            own[name] = self._counted(method)
        self.counting = bool(self._previous)
        return self

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            return method(*args, **kwargs)

        return counted

    def __exit__(self, *exc: object) -> None:
        own = self.substrate.__dict__ if self._previous else {}
        for name, previous in self._previous.items():
            if previous is _ABSENT:
                own.pop(name, None)
            else:
                own[name] = previous
        self._previous = {}
        self.counting = False
