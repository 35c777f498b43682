"""Checks of a run before and after it trains: option types against the factory's annotations,
the memory a layered network needs, whether a completed run learned anything, and the nudging
strengths a protocol (or a beta schedule) may reach."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError


def check_nudging(betas: tuple[float, float], who: str) -> None:
    """Refuse a nudging strength <= -1: with the squared cost and unit output
    self-energy it destroys the minimum of F (the outputs run away)."""
    low = min(betas)
    if low <= -1.0:
        raise ConfigurationError(
            f"{who} nudges with beta={low:g}: beta <= -1 destroys the minimum of F with the squared cost; "
            "use a smaller --beta"
        )


def _accepts(kind: str, value: Any) -> bool | None:
    """Whether ``value`` fits one part of an annotation (``float``, ``int``, ``Mapping[str, float]``...);
    None when the part is not one this check knows."""
    import math

    kind = kind.strip()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "float":
        return number and math.isfinite(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("str", "Path"):
        return isinstance(value, str)
    if kind == "None":
        return value is None
    if kind == "Mapping[str, float]":
        return isinstance(value, dict) and all(_accepts("float", v) for v in value.values())
    if kind == "Sequence[int]":
        return isinstance(value, (list, tuple)) and all(_accepts("int", v) for v in value)
    return None


def check_type(value: Any, param: inspect.Parameter, what: str) -> None:
    """Refuse an option whose value the factory's annotation cannot take (``eps = "abc"``, ``beta = inf``)."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        default = param.default
        if default is inspect.Parameter.empty or default is None or not isinstance(default, (bool, int, float, str)):
            return
        annotation = type(default).__name__
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", None) or str(annotation)
    verdicts = [_accepts(part, value) for part in annotation.split("|")]
    if any(v is None or v for v in verdicts):
        return
    hint = {
        "float": "a finite number",
        "int": "an integer",
        "bool": "true or false",
        "str": "a text in quotes",
        "Mapping[str, float]": "a table of finite numbers per tensor",
        "Sequence[int]": "a list of integers",
    }
    wanted = " or ".join(hint.get(p.strip(), p.strip()) for p in annotation.split("|"))
    raise ConfigurationError(f"{what} = {value!r:.60}: give {wanted}")


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a layered simulated run is allowed to ask for.

    parameter_copies: float64 arrays of the parameters' size a run holds at once (theta, knobs,
        gradients, updates, temporaries of the relaxation and of a checkpoint).
    state_copies: float64 arrays of (batch x units) the relaxation holds at once.
    fraction: the share of the memory available now that a run may take.
    """

    parameter_copies: int = 12
    state_copies: int = 16
    fraction: float = 0.8


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(layers: Sequence[int], batch: int, what: str, budget: MemoryBudget = MemoryBudget()) -> None:
    """Refuse a layered network whose training cannot fit in memory, with the figures, before allocating it."""
    sizes = [int(n) for n in layers]
    parameters = sum(a * b for a, b in zip(sizes, sizes[1:])) + sum(sizes[1:])
    need = 8 * (budget.parameter_copies * parameters + budget.state_copies * max(1, batch) * sum(sizes))
    have = available_memory()
    if have is not None and need > budget.fraction * have:
        raise ConfigurationError(
            f"{what} {sizes}: {parameters:.3g} parameters need about {need / 2**30:.1f} GiB to train, "
            f"this machine has {have / 2**30:.1f} GiB available; use fewer or smaller layers"
        )


@dataclass(frozen=True)
class HealthPolicy:
    """When a completed run is reported as not having learned.

    margin: the best test accuracy must beat always answering the most common class of the
        held-out split by more than this (a fraction, 0.02 = 2 points) ...
    z: ... and by more than ``z`` standard errors of that split's accuracy at chance,
        ``sqrt(p (1 - p) / n)`` for majority share p and n test samples, so that on a small
        split a lucky figure does not pass for learning.
    """

    margin: float = 0.02
    z: float = 2.0


def health(result: Any, data: Any, policy: HealthPolicy = HealthPolicy()) -> list[str]:
    """Warnings for a completed run: it did not learn (its step underflowed, or it diverged to the
    bounds), or some of its relaxations ended at their sweep cap unsettled."""
    warnings = unsettled(result.history)
    labels = np.asarray(data.labels_test)
    if labels.size == 0:
        return warnings
    majority = float(np.max(np.bincount(labels.astype(int)))) / labels.size
    best = result.best_test_accuracy
    sampling = policy.z * float(np.sqrt(majority * (1.0 - majority) / labels.size))
    if best <= majority + max(policy.margin, sampling):
        warnings.insert(
            0,
            f"the run did not learn: best test accuracy {best:.1%}, no better than always answering the most "
            f"common class ({majority:.1%} of {labels.size} test samples); check beta, lr and eps (a step too "
            "small underflows, one too large throws the parameters to their bounds)",
        )
    return warnings


def unsettled(history: Sequence[Any]) -> list[str]:
    """A warning if any epoch had relaxations that ended at the sweep cap: their steps hold the
    unfinished settling as well as the gradient (a small nudging suffers most)."""
    counts = [(r.epoch, r.unsettled_phases) for r in history if getattr(r, "unsettled_phases", 0)]
    if not counts:
        return []
    total = sum(n for _, n in counts)
    epochs = ", ".join(str(e) for e, _ in counts[:5]) + (", ..." if len(counts) > 5 else "")
    return [
        f"{total} relaxations ended unsettled at the sweep cap (epochs {epochs}); their steps are not the "
        "gradient's: raise max_sweeps (or tol)"
    ]
