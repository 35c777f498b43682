"""The capability "aeqprop" over instruments: knobs, the hold line that releases the parameters, native homeostasis.

A mixin of :class:`~drivers.hardware.InstrumentSubstrate`, which provides the attributes annotated on
:class:`FloatingInstruments` and the methods declared there under TYPE_CHECKING (the queue of checked
writes, ``_queue``; one exchange per instrument, ``_flush``). Writes go through the same limit checks and
the same queue as the rest of the contract; a release is refused past the hold line's ``max_seconds``
(SafetyLimitError, nothing sent).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from aeqprop.errors import ConfigurationError, InstrumentError, SafetyLimitError
from aeqprop.substrate import RelaxReport, SubstrateInfo
from drivers.scpi import Pulse
from drivers.wiring import Hold, WiringMap

if TYPE_CHECKING:
    from drivers.hardware import Driver, _Role


class FloatingInstruments:
    """Knobs, release and homeostasis of :class:`~drivers.hardware.InstrumentSubstrate` (a mixin)."""

    # provided by the host class
    wiring: WiringMap
    info: SubstrateInfo
    roles: dict[str, _Role]
    instruments: dict[str, Driver]
    _pending: list[tuple[_Role, np.ndarray | Pulse]]  # checked writes not yet sent; a Pulse goes out in its place
    _outputs: np.ndarray | None  # outputs read since the last write
    _gradients: dict[str, np.ndarray] | None  # gradients read with them
    _knobs: dict[str, np.ndarray] | None  # the knobs as last read or set (None: read them again)
    _closed: bool

    if TYPE_CHECKING:

        def parameters(self) -> dict[str, np.ndarray]: ...
        def _need(self, capability: str) -> None: ...
        def _queue(self, role: _Role, values: ArrayLike) -> None: ...
        def _flush(
            self, trigger: bool = False, pulse: tuple[_Role, Pulse] | None = None, reads: Sequence[_Role] = ()
        ) -> dict[str, np.ndarray]: ...

    def knobs(self) -> dict[str, np.ndarray]:
        self._need("aeqprop")
        if self._knobs is None:
            self._flush()
            self._knobs = {}
            for n, s in self.info.parameter_shapes.items():
                role = self.roles[f"parameters.{n}.knob"]
                self._knobs[n] = (
                    self.instruments[role.inst].source_levels(role.channels, role.group.kind).reshape(s) / role.scale
                )
        return {n: v.copy() for n, v in self._knobs.items()}

    def set_knobs(self, u: Mapping[str, np.ndarray]) -> None:
        self._need("aeqprop")
        checked = []
        for name, value in u.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown knob {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != self.info.parameter_shapes[name]:
                raise ConfigurationError(f"knob {name} must have shape {self.info.parameter_shapes[name]}")
            role = self.roles[f"parameters.{name}.knob"]
            role.check(value)
            checked.append((name, role, value))
        knobs = self.knobs() if len(checked) < len(self.info.parameter_shapes) else {}
        for name, role, value in checked:
            self._queue(role, value.ravel())
            knobs[name] = value.copy()
        self._knobs = knobs

    def release(self, duration: float | None = None) -> RelaxReport:
        """Release the parameters for ``duration`` release units (x hold.time_scale s), or until they settle.

        The release length in s is bounded by the hold line's ``max_seconds`` (SafetyLimitError, nothing sent).
        """
        self._need("aeqprop")
        t0 = time.perf_counter()
        hold, role = self._hold_line()
        report = RelaxReport(sweeps=1)
        seconds = None if duration is None else self._release_seconds(duration)
        if seconds is not None and hold.release == "pulse":
            self._flush(pulse=(role, Pulse(role.channels[0], seconds, hold.release_level * role.scale)))
        else:
            self._queue(role, [hold.release_level])
            if seconds is not None:
                self._flush()
                time.sleep(seconds)
            else:
                report = self._poll_parameters(hold.joint_timeout)
            self._queue(role, [0.0])
            self._flush()
        self._outputs = self._gradients = None
        report.seconds = time.perf_counter() - t0
        return report

    def _hold_line(self) -> tuple[Hold, _Role]:
        """The hold line's settings and its role (wired wherever the capability "aeqprop" is)."""
        if self.wiring.hold is None:
            raise ConfigurationError("no hold line is wired; add [hold] to the wiring map to release the parameters")
        return self.wiring.hold, self.roles["hold"]

    def _release_seconds(self, duration: float) -> float:
        """A release of ``duration`` units in s, checked against the hold line's level and ``max_seconds``."""
        hold, role = self._hold_line()
        role.check([hold.release_level])
        seconds = float(duration) * hold.time_scale
        if not (0.0 <= seconds <= hold.max_seconds):
            raise SafetyLimitError(
                f"release of {duration!r} units = {seconds!r} s on {role.inst} channel {role.channels[0]} is outside "
                f"[0, {hold.max_seconds}] s (hold.max_seconds); nothing was sent. Shorten the release, or raise "
                "max_seconds in the wiring map if the device allows it"
            )
        return seconds

    def release_and_read(self, duration: float) -> tuple[RelaxReport, dict[str, np.ndarray]]:
        """A timed release and a readout of theta after it, in one exchange where the hold line pulses.

        The pulse, then the readout, go out in one message (the instrument runs them in order, so
        theta is read after the release ends): half the round trips of ``release`` then ``parameters``.
        Without a pulsing hold line or a readout it is exactly those two calls.
        """
        self._need("aeqprop")
        hold, role = self._hold_line()
        keys = [f"parameters.{n}.readout" for n in self.info.parameter_shapes]
        if hold.release != "pulse" or not all(k in self.roles for k in keys):
            return self.release(duration), self.parameters()
        t0 = time.perf_counter()
        pulse = Pulse(role.channels[0], self._release_seconds(duration), hold.release_level * role.scale)
        got = self._flush(pulse=(role, pulse), reads=[self.roles[k] for k in keys])
        self._outputs = self._gradients = None
        theta = {n: got[k].reshape(s) for (n, s), k in zip(self.info.parameter_shapes.items(), keys)}
        return RelaxReport(sweeps=1, seconds=time.perf_counter() - t0), theta

    def _poll_parameters(self, timeout: float) -> RelaxReport:
        flat = lambda d: np.concatenate([np.ravel(d[n]) for n in sorted(d)])  # noqa: E731
        prev, deadline = flat(self.parameters()), time.monotonic() + timeout
        polls = 1
        while time.monotonic() < deadline:
            polls += 1
            now = flat(self.parameters())
            residual = float(np.max(np.abs(now - prev))) if now.size else 0.0
            if residual <= self.wiring.relax.poll_tol:
                return RelaxReport(sweeps=polls, residual=residual, converged=True)
            prev = now
            time.sleep(self.wiring.relax.poll_interval)
        return RelaxReport(sweeps=polls, residual=float("nan"), converged=False)

    def homeostasis(self) -> None:
        """Native homeostasis through the wired trigger line.

        Where the instrument times pulses, a pulse of ``homeostasis.width`` s at ``homeostasis.level``, queued
        in order with the other writes; otherwise the level and then 0 in two messages, so firmware that
        latches a whole message at once still sees the edge.
        """
        line = self.wiring.homeostasis
        if "homeostasis" not in self.roles or line is None:
            raise ConfigurationError("no homeostasis line is wired; use Aeqprop(homeostasis='feedback')")
        role = self.roles["homeostasis"]
        level = role.check([line.level])[0]
        if getattr(self.instruments[role.inst], "can_pulse", False):
            if self._closed:
                raise InstrumentError("the substrate is closed; build a new one to continue")
            self._pending.append((role, Pulse(role.channels[0], line.width, float(level))))
        else:
            self._queue(role, [line.level])
            self._flush()
            self._queue(role, [0.0])
        self._knobs = self._gradients = self._outputs = None
