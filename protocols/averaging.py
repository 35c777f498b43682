"""Repeated measurements, averaged: the protocols' first defence against read noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import RelaxReport


def check_averages(averages: int) -> int:
    if int(averages) != averages or averages < 1:
        raise ConfigurationError(f"averages={averages}: the number of repeated reads must be an integer >= 1")
    return int(averages)


def averaged(read: Callable[[], dict[str, np.ndarray]], averages: int = 1) -> dict[str, np.ndarray]:
    """The mean of ``averages`` calls of ``read`` (a dict of arrays); one call returns it untouched.

    Independent read noise of std sigma falls to sigma / sqrt(averages).
    """
    first = read()
    if averages == 1:
        return first
    total = {n: v.copy() for n, v in first.items()}
    for _ in range(averages - 1):
        for n, v in read().items():
            total[n] += v
    return {n: v / averages for n, v in total.items()}


def release_and_read(
    substrate: Any, duration: float | None, averages: int = 1
) -> tuple[RelaxReport, dict[str, np.ndarray]]:
    """Release for ``duration`` and read theta (the mean of ``averages`` reads): ``(report, theta)``.

    A substrate that can do both in one exchange says so with a ``release_and_read(duration)`` method
    (an instrument substrate whose hold line pulses); otherwise it is ``release`` then ``parameters``.
    Looked up on the class, so a wrapper that forwards unknown attributes (the non-ideal device model)
    never bypasses its own release and reads.
    """
    combined = getattr(type(substrate), "release_and_read", None)
    if combined is None or duration is None:
        report = substrate.release(duration)
        return report, averaged(substrate.parameters, averages)
    report, first = combined(substrate, duration)
    if averages == 1:
        return report, first
    rest = averaged(substrate.parameters, averages - 1)
    return report, {n: (v + (averages - 1) * rest[n]) / averages for n, v in first.items()}
