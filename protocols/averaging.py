"""Repeated measurements, averaged: the protocols' first defence against read noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aeqprop.errors import ConfigurationError


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
