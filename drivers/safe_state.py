"""Entering and leaving the bench safely: every source within its limits before any output is on, and on
every exit the hold lines at 0 on every instrument before any other source moves, then sources to zero and
outputs off.

Instruments keep their programmed levels from one use to the next (an SMU left at 4.9 V starts at 4.9 V).
:func:`start_safely` therefore switches every source output off, reads the levels back, and brings a
level outside its range to the in-range value nearest 0 V (0 when the range holds it) while the output is
still off; only then are outputs switched on. Nothing past a limit is ever sent or connected.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from drivers.board import BoardReset
from drivers.transport import NoAnswer

if TYPE_CHECKING:
    from drivers.hardware import Driver, _Role
    from drivers.wiring import Limits

EventHook = Callable[[str, str], None]


def safe_level(limits: Limits) -> float:
    """The level a channel rests at: 0 clipped into the channel's range (V or A)."""
    lo, hi = limits.range
    return float(min(max(0.0, lo), hi))


def start_safely(instruments: Mapping[str, Driver], roles: Sequence[_Role], on_event: EventHook | None = None) -> int:
    """Outputs off, compliances set, levels read back and brought within range, then outputs on.

    ``roles``: the source roles (drivers.hardware._Role). Returns the number of channels that were outside
    their range and were moved (with their output off) to their safe level.
    """
    channels: dict[str, list[int]] = {}
    for role in roles:
        channels.setdefault(role.inst, []).extend(role.channels)
    for name, inst in instruments.items():
        if hasattr(inst, "prepare"):  # the profile's set-up (function, output-off state; a board is armed)
            inst.prepare()
        inst.errors()
        if name in channels:
            inst.output(channels[name], False)
    moved = 0
    for role in roles:
        inst, lim = instruments[role.inst], role.source_limits
        if lim.compliance:
            for ch in role.channels:
                inst.set_compliance(ch, lim.compliance)
        level = np.asarray(inst.source_levels(role.channels, role.group.kind), float)
        lo, hi = lim.range
        bad = ~np.isfinite(level) | (level < lo) | (level > hi)
        if bad.any():
            target = safe_level(lim)
            inst.exchange(sets=[(ch, target) for ch, b in zip(role.channels, bad) if b], kind=role.group.kind)
            if on_event is not None:
                i = int(np.flatnonzero(bad)[0])
                on_event(
                    "safety",
                    f"{role.name}: {int(bad.sum())} channel(s) found outside [{lo}, {hi}] "
                    f"(channel {role.channels[i]} at {level[i]!r}); set to {target} with the output off",
                )
            level = np.where(bad, target, level)
            moved += int(bad.sum())
        role.level = level
    for name, chs in channels.items():
        instruments[name].output(chs, True)
    return moved


def ramp(inst: Driver, role: _Role, target: np.ndarray) -> None:
    """Move a role's channels to ``target`` (channel units) in steps of at most max_step, at ramp_rate."""
    lim = role.source_limits
    start = np.where(np.isfinite(role.level), role.level, 0.0)
    n = 1
    pause = 0.0  # s between steps
    if lim.max_step:
        n = max(1, int(np.ceil(np.max(np.abs(target - start)) / lim.max_step - 1e-12)))
        pause = lim.max_step / lim.ramp_rate if lim.ramp_rate else 0.0
    for k in range(1, n + 1):
        v = start + (target - start) * (k / n)
        inst.exchange(sets=list(zip(role.channels, v)), kind=role.group.kind)
        if k < n and pause:
            time.sleep(pause)
    role.level = target.copy()


def safe_all(instruments: Mapping[str, Driver], roles: Mapping[str, _Role]) -> list[str]:
    """The safe state on every instrument; returns what could not be confirmed, never raises.

    Order: (1) the hold line of every instrument to 0, so the parameters are held everywhere before
    anything else moves; (2) per instrument, the other volatile sources ramped to zero, every output off,
    the instrument's own SAFE command if it has one. An instrument that does not answer is given up after
    its first unanswered message (sent ``retries + 1`` times), so closing against a dead bench takes
    ``retries + 1`` timeouts per instrument, not one per step.
    """
    failures: list[str] = []
    dead: set[str] = set()

    def attempt(name: str, step: Callable[[], object]) -> None:
        if name in dead:
            return
        inst = instruments[name]
        try:
            step()
        except NoAnswer as exc:
            dead.add(name)
            failures.append(f"{name} ({inst.address}) does not answer: {exc}")
        except BoardReset:  # it rebooted into its power-up safe state and says so; OUT OFF and SAFE still go
            pass
        except Exception as exc:
            failures.append(f"{name} ({inst.address}): {exc}")

    def zero(name: str, role: _Role) -> Callable[[], None]:
        return lambda: ramp(instruments[name], role, np.full(len(role.channels), safe_level(role.source_limits)))

    sources = [r for n, r in roles.items() if r.limits is not None and not n.endswith(".program")]
    for role in sources:  # (1) every hold line first
        if role.name == "hold":
            attempt(role.inst, zero(role.inst, role))
    for name, inst in instruments.items():  # (2)
        attempt(name, inst.errors)
        for role in sources:
            if role.inst == name and role.name != "hold":
                attempt(name, zero(name, role))
        chs = [c for r in roles.values() if r.inst == name and r.limits is not None for c in r.channels]
        if chs:
            attempt(name, functools.partial(inst.output, chs, False))
        if hasattr(inst, "safe"):
            attempt(name, inst.safe)
        try:
            inst.transport.close()
        except Exception:
            pass
    return failures
