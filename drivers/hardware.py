"""InstrumentSubstrate: the Substrate contract over instruments, assembled from a wiring map.

Writes are checked against their channel limits when the contract call is made
(SafetyLimitError, nothing queued, nothing sent), queued, and sent with the
next exchange that needs a reply, so a phase (clamp, nudge, settle, read
outputs) costs one round trip per instrument. Batch size 1.

Opening brings every source within its limits with its output off before any
output is switched on (drivers/safe_state.py). close() puts the hold line of
every instrument to 0 first (which holds the parameters), then ramps every
source to zero and switches outputs off; it runs on every exit path (context
manager, and a finaliser if the object is dropped). Programmed parameters are
non-volatile writes and are left as they are.

Knobs, the hold line and native homeostasis (the capability "aeqprop") are in drivers/floating.py.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from aeqprop.errors import ConfigurationError, InstrumentError, RelaxationError, SafetyLimitError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from drivers.floating import FloatingInstruments
from drivers.safe_state import ramp, safe_all, start_safely
from drivers.scpi import Pulse
from drivers.transport import Transport
from drivers.wiring import Group, Instrument, Limits, WiringMap

EventHook = Callable[[str, str], None]


class Driver(Protocol):
    """What the substrate asks of an instrument driver: ScpiInstrument, BoardInstrument, or a test's fake.

    Optional: ``prepare()`` (the profile's set-up, run at start) and ``safe()`` (the instrument's own
    safe command, run at close), looked up by name.

    Example: ``inst.exchange(sets=[(1001, 0.5)], trigger=True, reads=[3001, 3002])`` -> ``array([0.12, 0.4])``
    (channel units, V or A); ``inst.source_levels([1001])`` -> ``array([0.5])``.
    """

    transport: Transport

    @property
    def address(self) -> str: ...

    def errors(self) -> list[str]: ...

    def output(self, channels: Sequence[int], on: bool) -> None: ...

    def set_compliance(self, ch: int, value: float) -> None: ...

    def exchange(
        self,
        sets: Sequence[tuple[int, float] | Pulse] = (),
        *,
        kind: str = "voltage",
        trigger: bool = False,
        pulse: tuple[int, float] | Pulse | None = None,
        reads: Sequence[int] = (),
        read_kind: str = "voltage",
    ) -> np.ndarray | None: ...

    def source_levels(self, channels: Sequence[int], kind: str = "voltage") -> np.ndarray: ...


def open_instrument(spec: Instrument, on_event: EventHook | None = None) -> Driver:
    """A driver (ScpiInstrument or BoardInstrument) for one wiring-map instrument, opened."""
    from drivers.board import BoardInstrument
    from drivers.scpi import ScpiInstrument
    from drivers.transport import open_transport

    options: dict[str, object] = dict(
        timeout=spec.timeout,
        write_timeout=spec.write_timeout,
        min_interval=spec.min_interval,
        retries=spec.retries,
        on_event=on_event,
    )
    visa = "::" in spec.address  # a VISA resource, else a serial port
    if visa:
        options["backend"] = spec.backend
    else:
        options["baudrate"] = spec.baudrate
    transport = open_transport(spec.address, kind="visa" if visa else "serial", **options)
    return BoardInstrument(transport) if spec.profile == "board" else ScpiInstrument(transport, spec.profile)


class _Role:
    """A resolved group: instrument name, channels, scale, limits, last commanded channel values."""

    def __init__(self, name: str, group: Group, count: int) -> None:
        self.name, self.group = name, group
        self.inst = group.instrument
        self.channels = group.resolve(count, name)
        self.scale = float(group.scale)
        self.limits = group.limits
        self.level = np.full(count, np.nan)  # last commanded, channel units

    @property
    def source_limits(self) -> Limits:
        """The limits of a source role (the wiring map refuses a source without them)."""
        if self.limits is None:
            raise ConfigurationError(
                f"{self.name} is not a source (no limits in the wiring map); nothing is written to it"
            )
        return self.limits

    def check(self, values: ArrayLike) -> np.ndarray:
        """Channel values for substrate values, refused (SafetyLimitError) past the range."""
        v = np.asarray(values, dtype=np.float64).ravel() * self.scale
        lo, hi = self.source_limits.range
        bad = np.flatnonzero(~np.isfinite(v) | (v < lo) | (v > hi))
        if bad.size:
            i = int(bad[0])
            raise SafetyLimitError(
                f"{self.name}[{i}] = {float(v[i])!r} on {self.inst} channel {self.channels[i]} is outside its range "
                f"[{lo}, {hi}]; nothing was sent. Widen the limit in the wiring map only if the device allows it"
            )
        return v


class InstrumentSubstrate(FloatingInstruments):
    """A Substrate over instruments. Example: ``InstrumentSubstrate(load_wiring("bench.toml"))``.

    ``instruments`` maps instrument names to opened drivers (tests pass their
    own); otherwise each is opened from its address. ``on_event(kind, msg)``
    receives transport faults and retries and the substrate's own events.
    """

    def __init__(
        self, wiring: WiringMap, instruments: Mapping[str, Driver] | None = None, on_event: EventHook | None = None
    ) -> None:
        self.wiring = w = wiring
        self.on_event = on_event
        shapes = {n: tuple(p.shape) for n, p in w.parameters.items()}
        self.info = SubstrateInfo(
            n_inputs=w.n_inputs,
            n_outputs=w.n_outputs,
            parameter_shapes=shapes,
            parameter_bounds={n: (p.bounds[0], p.bounds[1]) for n, p in w.parameters.items()},
            max_batch=1,
            capabilities=w.capabilities(),
            description=w.description or "instrument substrate",
        )
        self.roles: dict[str, _Role] = {name: _Role(name, g, n) for name, g, n in w.groups()}
        self._pending: list[tuple[_Role, np.ndarray | Pulse]] = []  # a Pulse goes out in its place
        self._outputs: np.ndarray | None = None
        self._gradients: dict[str, np.ndarray] | None = None
        self._prefetch = False
        self._knobs: dict[str, np.ndarray] | None = None
        self._programmed: dict[str, np.ndarray] = {}
        self._closed = False
        self.instruments: dict[str, Driver] = dict(instruments or {})
        try:
            for name, spec in w.instruments.items():
                if name not in self.instruments:
                    self.instruments[name] = open_instrument(spec, on_event)
            self._start()
        except BaseException:
            self.close()
            raise
        self._settle = max([w.relax.settle] + [r.source_limits.settle for r in self._sources()])
        self._finalizer = weakref.finalize(self, InstrumentSubstrate._safe_all, self.instruments, self.roles)

    # -- start and stop -------------------------------------------------------------
    def _start(self) -> None:
        start_safely(self.instruments, self._sources(), self.on_event)

    def _sources(self) -> list[_Role]:
        return [r for name, r in self.roles.items() if name in self.wiring.source_roles()]

    @staticmethod
    def _safe_all(instruments: Mapping[str, Driver], roles: Mapping[str, _Role]) -> list[str]:
        return safe_all(instruments, roles)

    @staticmethod
    def _ramp(inst: Driver, role: _Role, target: np.ndarray) -> None:
        ramp(inst, role, target)

    def close(self) -> None:
        """Safe state on every instrument (sources to zero, outputs off); InstrumentError if one failed."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        if hasattr(self, "_finalizer"):
            self._finalizer.detach()
        failures = self._safe_all(self.instruments, self.roles)
        if failures:
            if self.on_event:
                self.on_event("failed", "safe state not confirmed: " + "; ".join(failures))
            raise InstrumentError(
                "could not confirm the safe state of "
                + "; ".join(failures)
                + ". Switch the listed instruments' outputs off by hand"
            )

    def __enter__(self) -> InstrumentSubstrate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing and reading ----------------------------------------------------------
    def _queue(self, role: _Role, values: ArrayLike) -> None:
        if self._closed:
            raise InstrumentError("the substrate is closed; build a new one to continue")
        v = role.check(values)
        lim = role.source_limits
        start = np.where(np.isfinite(role.level), role.level, 0.0)
        if lim.max_step and np.max(np.abs(v - start)) > lim.max_step:
            self._flush()
            self._ramp(self.instruments[role.inst], role, v)
        else:
            self._pending.append((role, v))
            role.level = v
        self._outputs = None
        self._gradients = None

    def _flush(
        self, trigger: bool = False, pulse: tuple[_Role, Pulse] | None = None, reads: Sequence[_Role] = ()
    ) -> dict[str, np.ndarray]:
        """Send pending writes (+ pulse, trigger, reads), one exchange per instrument; readings per role."""
        pending, self._pending = self._pending, []
        names = [
            n
            for n in self.instruments
            if trigger
            or any(r.inst == n for r, _ in pending)
            or any(r.inst == n for r in reads)
            or (pulse and pulse[0].inst == n)
        ]
        out: dict[str, np.ndarray] = {}
        for n in names:
            sets: list[tuple[int, float] | Pulse] = []
            for r, v in pending:
                if r.inst == n:
                    sets.extend([v] if isinstance(v, Pulse) else zip(r.channels, v))
            kinds = {r.group.kind for r, v in pending if r.inst == n and not isinstance(v, Pulse)}
            mine = [r for r in reads if r.inst == n]
            chs = [c for r in mine for c in r.channels]
            p = pulse[1] if pulse and pulse[0].inst == n else None
            kind = kinds.pop() if len(kinds) == 1 else "voltage"
            values = self.instruments[n].exchange(sets=sets, kind=kind, trigger=trigger, pulse=p, reads=chs)
            if values is None:
                if chs:
                    raise InstrumentError(f"{n} returned no readings for channels {chs}; check its driver's exchange")
                continue
            i = 0
            for r in mine:
                out[r.name] = np.asarray(values[i : i + len(r.channels)]) / r.scale
                i += len(r.channels)
        return out

    # -- the contract -------------------------------------------------------------------
    def clamp(self, x: np.ndarray) -> None:
        """Set the input sources to x (shape (1, n_inputs)), times the inputs' scale."""
        x = check_array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._queue(self.roles["inputs"], x[0])

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """Nudging conductance beta (S) toward target sources at y; beta = 0 removes it."""
        beta = float(beta)
        if beta != 0.0:
            if y is None:
                raise ConfigurationError("nudge with beta != 0 needs a target y")
            y = check_array("y", y, (1, self.info.n_outputs))
            strength = self.roles["nudge.strength"].check([beta])  # check both before queueing either
            self.roles["nudge.targets"].check(y[0])
            self._queue(self.roles["nudge.targets"], y[0])
            self._queue(self.roles["nudge.strength"], strength / self.roles["nudge.strength"].scale)
        else:
            self._queue(self.roles["nudge.strength"], [0.0])

    def relax(self) -> RelaxReport:
        """Send the writes, trigger settling, wait ``relax.settle`` s, read the outputs (polling if set)."""
        t0 = time.perf_counter()
        cfg, out = self.wiring.relax, self.roles["outputs"]
        settle = self._settle
        grads = [self.roles[f"parameters.{n}.gradient"] for n in self.info.parameter_shapes] if self._prefetch else []
        if settle == 0 and not cfg.poll:
            got = self._flush(trigger=True, reads=[out] + grads)
            o = got["outputs"]
            self._gradients = (
                {n: got[r.name].reshape(r_shape) for (n, r_shape), r in zip(self.info.parameter_shapes.items(), grads)}
                if grads
                else None
            )
            report = RelaxReport(sweeps=1, residual=0.0, converged=True)
        else:
            self._flush(trigger=True)
            time.sleep(settle)
            o = self._flush(reads=[out])["outputs"]
            report = RelaxReport(sweeps=1, residual=0.0, converged=True)
            if cfg.poll:
                for report.sweeps in range(2, cfg.max_polls + 1):
                    time.sleep(cfg.poll_interval)
                    new = self._flush(reads=[out])["outputs"]
                    report.residual, o = float(np.max(np.abs(new - o))), new
                    if report.residual <= cfg.poll_tol:
                        break
                report.converged = report.residual <= cfg.poll_tol
        self._outputs = o
        report.seconds = time.perf_counter() - t0
        return report

    def outputs(self) -> np.ndarray:
        if self._outputs is None or self._pending:
            self._outputs = self._flush(reads=[self.roles["outputs"]])["outputs"]
        return self._outputs[None, :].copy()

    def _read_tensors(self, role: str) -> dict[str, np.ndarray]:
        roles = [self.roles[f"parameters.{n}.{role}"] for n in self.info.parameter_shapes]
        got = self._flush(reads=roles)
        return {n: got[f"parameters.{n}.{role}"].reshape(s) for n, s in self.info.parameter_shapes.items()}

    def parameters(self) -> dict[str, np.ndarray]:
        """theta from the readout channels (or the last programmed values if none are wired)."""
        if all(f"parameters.{n}.readout" in self.roles for n in self.info.parameter_shapes):
            return self._read_tensors("readout")
        if len(self._programmed) == len(self.info.parameter_shapes):
            return {n: v.copy() for n, v in self._programmed.items()}
        raise ConfigurationError("no parameter readout is wired and nothing was programmed yet")

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dtheta measured on the gradient channels (capability eqprop).

        Once a protocol has asked for them, relax() reads them in the same
        exchange as the outputs, and they are served from there until the next write.
        """
        self._need("eqprop")
        self._prefetch = True
        if self._gradients is not None and not self._pending:
            return {n: v.copy() for n, v in self._gradients.items()}
        return self._read_tensors("gradient")

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta, clipped to the bounds; every value checked before any is queued."""
        self._need("eqprop")
        clipped, values = {}, []
        for name, value in theta.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown parameter {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != self.info.parameter_shapes[name] or not np.all(np.isfinite(value)):
                raise RelaxationError(f"parameter {name} must be finite with shape {self.info.parameter_shapes[name]}")
            lo, hi = self.info.parameter_bounds[name]
            kept = np.clip(value, lo, hi)
            clipped[name] = int(np.count_nonzero(kept != value))
            role = self.roles[f"parameters.{name}.program"]
            role.check(kept)
            values.append((name, role, kept))
        for name, role, kept in values:
            self._queue(role, kept.ravel())
            self._programmed[name] = kept.copy()
        return clipped

    @property
    def round_trips(self) -> int:
        return sum(i.transport.round_trips for i in self.instruments.values())

    @property
    def io_seconds(self) -> float:
        return sum(i.transport.io_seconds for i in self.instruments.values())

    @property
    def bytes(self) -> tuple[int, int]:
        """(bytes sent, bytes received) over every instrument."""
        ts = [i.transport for i in self.instruments.values()]
        return sum(t.bytes_out for t in ts), sum(t.bytes_in for t in ts)

    def _need(self, capability: str) -> None:
        if capability not in self.info.capabilities:
            raise ConfigurationError(
                f"the wiring map does not wire what capability {capability!r} needs "
                "(eqprop: program and gradient; aeqprop: knob, readout and hold)"
            )
