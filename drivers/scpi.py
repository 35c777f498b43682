"""A generic SCPI instrument driven by command templates, with profiles.

Every settable quantity goes out as a template filled with ``{ch}`` (channel
number) and ``{value}`` (``repr`` of a float: full precision, round-trips
exactly). Several commands go out chained in one message (``;:``) where the
profile allows, and every message that sets something ends with the error
query, so the error queue is checked after each set at no extra round trip.

Profiles (``PROFILES``):

| name          | class of instrument                        | channels |
|---------------|--------------------------------------------|----------|
| keithley2450  | Keithley 2450-class source-measure unit    | 1        |
| keysight-b2900| Keysight B2900-class two-channel SMU        | 1, 2     |
| multichannel  | generic multichannel DAC/ADC (virtual lab) | any >= 1 |
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from aeqprop.errors import ConfigurationError, InstrumentError
from drivers.transport import GarbledReply, Transport

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
#: A comma-separated list of decimal numbers (one C-level match for a whole reply).
NUMBER_LIST = re.compile(rf"\s*{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*")
ERROR_REPLY = re.compile(r'^([+-]?\d+),"(.*)"$')


class Pulse(NamedTuple):
    """A timed pulse: channel ``ch`` driven to ``level`` (V) for ``seconds`` s, then back to 0 V.

    It may stand among the ``sets`` of an exchange, where it goes out in its place in the order.
    """

    ch: int
    seconds: float
    level: float = 1.0


@dataclass(frozen=True)
class ScpiProfile:
    """Command templates of one class of instrument. ``{chs}`` is a SCPI channel list ``1,2`` or ``101:104``."""

    name: str
    channels: tuple[int, ...] | None  # valid channel numbers; None: any integer >= 1
    set_voltage: str
    set_current: str
    get_voltage: str  # source level query, "{chs}" or "{ch}"
    get_current: str
    measure_voltage: str
    measure_current: str
    output_on: str
    output_off: str
    compliance: str  # current limit while sourcing voltage, A
    multi: bool = True  # one query reads many channels ("{chs}"), else one query per channel
    error_query: str = "SYST:ERR?"
    identity: str = "*IDN?"
    trigger: str | None = None  # starts settling/acquisition; must end in a query if set
    pulse: str | None = None  # timed pulse on a channel: "{ch}", "{value}" in s
    max_chain: int = 64  # commands per message, the error query included
    separator: str = ";:"

    def check_channel(self, ch: int) -> int:
        ch = int(ch)
        if (self.channels is not None and ch not in self.channels) or ch < 1:
            valid = "any integer >= 1" if self.channels is None else ", ".join(map(str, self.channels))
            raise ConfigurationError(f"profile {self.name} has no channel {ch}; valid: {valid}")
        return ch


PROFILES: dict[str, ScpiProfile] = {
    "keithley2450": ScpiProfile(
        "keithley2450", (1,),
        set_voltage="SOUR:VOLT {value}", set_current="SOUR:CURR {value}",
        get_voltage="SOUR:VOLT?", get_current="SOUR:CURR?",
        measure_voltage="MEAS:VOLT?", measure_current="MEAS:CURR?",
        output_on="OUTP ON", output_off="OUTP OFF", compliance="SOUR:VOLT:ILIM {value}",
        multi=False, max_chain=16,
    ),
    "keysight-b2900": ScpiProfile(
        "keysight-b2900", (1, 2),
        set_voltage="SOUR{ch}:VOLT {value}", set_current="SOUR{ch}:CURR {value}",
        get_voltage="SOUR{ch}:VOLT?", get_current="SOUR{ch}:CURR?",
        measure_voltage="MEAS:VOLT? (@{chs})", measure_current="MEAS:CURR? (@{chs})",
        output_on="OUTP{ch} ON", output_off="OUTP{ch} OFF", compliance="SENS{ch}:CURR:PROT {value}",
        max_chain=32,
    ),
    "multichannel": ScpiProfile(
        "multichannel", None,
        set_voltage="SOUR:VOLT {value},(@{ch})", set_current="SOUR:CURR {value},(@{ch})",
        get_voltage="SOUR:VOLT? (@{chs})", get_current="SOUR:CURR? (@{chs})",
        measure_voltage="MEAS:VOLT? (@{chs})", measure_current="MEAS:CURR? (@{chs})",
        output_on="OUTP ON,(@{chs})", output_off="OUTP OFF,(@{chs})", compliance="SOUR:CURR:LIM {value},(@{ch})",
        trigger="INIT;:*OPC?", pulse="SOUR:PULS {value},(@{ch})", max_chain=100_000,
    ),
}


def channel_list(channels: Iterable[int]) -> str:
    """SCPI channel list with runs compressed: [1, 2, 3, 7] -> "1:3,7"."""
    chs = [int(c) for c in channels]
    parts, i = [], 0
    while i < len(chs):
        j = i
        while j + 1 < len(chs) and chs[j + 1] == chs[j] + 1:
            j += 1
        parts.append(str(chs[i]) if j - i < 2 else f"{chs[i]}:{chs[j]}")
        if 0 < j - i < 2:
            parts.extend(str(c) for c in chs[i + 1:j + 1])
        i = j + 1
    return ",".join(parts)


def split_reply(reply: str) -> list[str]:
    """Split a chained reply at ';' outside double quotes (``0,"No error"`` has none inside)."""
    parts, pending = [], None
    for piece in reply.split(";"):
        pending = piece if pending is None else pending + ";" + piece
        if pending.count('"') % 2 == 0:  # quotes balanced: a whole part
            parts.append(pending.strip())
            pending = None
    if pending is not None:
        parts.append(pending.strip())
    return parts


def parse_numbers(text: str, count: int) -> list[float]:
    """Exactly ``count`` comma-separated numbers, else GarbledReply."""
    tokens = text.split(",")
    if len(tokens) != count or not NUMBER_LIST.fullmatch(text):
        raise GarbledReply(f"expected {count} numbers, got {text[:80]!r}")
    return [float(t) for t in tokens]


def fmt(value: float) -> str:
    """Full-precision text of a finite float (``repr``); refuses NaN and infinities."""
    value = float(value)
    if not np.isfinite(value):
        raise ConfigurationError(f"refusing to send the non-finite value {value}")
    return repr(value)


class ScpiInstrument:
    """A SCPI instrument over a transport, driven by a profile.

    Example: ``ScpiInstrument(open_transport("TCPIP0::127.0.0.1::5025::SOCKET"), "multichannel")``.
    """

    def __init__(self, transport: Transport, profile: str | ScpiProfile = "multichannel"):
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ConfigurationError(f"unknown SCPI profile {profile!r}; valid: {', '.join(PROFILES)}")
            profile = PROFILES[profile]
        self.transport = transport
        self.profile = profile

    @property
    def address(self) -> str:
        return self.transport.address

    # -- single operations ------------------------------------------------------------
    def identify(self) -> str:
        """The identity string (``*IDN?``)."""
        return self.transport.query(self.profile.identity, parse=self._text)

    def errors(self, limit: int = 32) -> list[str]:
        """Drain the error queue; returns the errors found (empty if none)."""
        found = []
        for _ in range(limit):
            reply = self.transport.query(self.profile.error_query, parse=self._error_reply)
            if reply is None:
                break
            found.append(reply)
        return found

    def set_voltage(self, ch: int, value: float) -> None:
        """Control the source voltage of channel ``ch`` in V (float; limits are the caller's)."""
        self.exchange(sets=[(ch, value)])

    def set_current(self, ch: int, value: float) -> None:
        """Control the source current of channel ``ch`` in A."""
        self.exchange(sets=[(ch, value)], kind="current")

    def source_levels(self, channels: Sequence[int], kind: str = "voltage") -> np.ndarray:
        """Read back the programmed source levels (V or A)."""
        template = self.profile.get_voltage if kind == "voltage" else self.profile.get_current
        return self._read(template, channels)

    def measure(self, channels: Sequence[int], kind: str = "voltage") -> np.ndarray:
        """Measure channels: voltage in V or current in A."""
        template = self.profile.measure_voltage if kind == "voltage" else self.profile.measure_current
        return self._read(template, channels)

    def output(self, channels: Sequence[int], on: bool) -> None:
        """Switch channel outputs on or off; the error queue is checked."""
        template = self.profile.output_on if on else self.profile.output_off
        self._send_checked(self._fill_many(template, channels))

    def set_compliance(self, ch: int, value: float) -> None:
        """Control the current compliance of channel ``ch`` in A."""
        ch = self.profile.check_channel(ch)
        self._send_checked([self.profile.compliance.format(ch=ch, value=fmt(value))])

    def pulse(self, ch: int, seconds: float) -> None:
        """A timed pulse of ``seconds`` s on a channel (profiles with a pulse command only)."""
        if self.profile.pulse is None:
            raise ConfigurationError(f"profile {self.profile.name} has no pulse command; use a timed hold instead")
        self.exchange(pulse=(ch, seconds))

    @property
    def can_pulse(self) -> bool:
        """Whether the instrument times pulses itself (the profile has a pulse command)."""
        return self.profile.pulse is not None

    # -- the workhorse ---------------------------------------------------------------
    def exchange(
        self,
        sets: Sequence[tuple[int, float]] = (),
        *,
        kind: str = "voltage",
        trigger: bool = False,
        pulse: tuple[int, float] | Pulse | None = None,
        reads: Sequence[int] = (),
        read_kind: str = "voltage",
    ) -> np.ndarray | None:
        """Set levels, optionally pulse and trigger, then read, in as few messages as the profile allows.

        Order on the wire: sets (a :class:`Pulse` among them in its place), pulse, trigger, measurement,
        error query. Returns the readings of ``reads`` (or None).
        """
        p = self.profile
        template = p.set_voltage if kind == "voltage" else p.set_current
        commands = [self._pulse_command(item) if isinstance(item, Pulse)
                    else template.format(ch=p.check_channel(item[0]), value=fmt(item[1])) for item in sets]
        if pulse is not None:
            commands.append(self._pulse_command(Pulse(*pulse)))
        if trigger and p.trigger is not None:
            commands.append(p.trigger)
        mt = p.measure_voltage if read_kind == "voltage" else p.measure_current
        if not commands:
            return self._read(mt, reads) if len(reads) else None
        tail = None
        if len(reads) and p.multi and "{chs}" in mt and len(commands) + 2 <= p.max_chain:
            tail = (mt.format(chs=channel_list([p.check_channel(c) for c in reads])), len(reads))
        parts = self._send_checked(commands, tail)
        if tail is not None:
            return np.array(parse_numbers(parts[-2], len(reads)))
        return self._read(mt, reads) if len(reads) else None

    # -- internals -------------------------------------------------------------------
    def _pulse_command(self, pulse: Pulse) -> str:
        p = self.profile
        if p.pulse is None:
            raise ConfigurationError(f"profile {p.name} has no pulse command; use a timed hold instead")
        return p.pulse.format(ch=p.check_channel(pulse.ch), value=fmt(pulse.seconds), level=fmt(pulse.level))

    def _fill_many(self, template: str, channels: Sequence[int]) -> list[str]:
        chs = [self.profile.check_channel(c) for c in channels]
        if "{chs}" in template:
            return [template.format(chs=channel_list(chs))]
        if "{ch}" in template:
            return [template.format(ch=c) for c in chs]
        return [template]

    def _send_checked(self, commands: list[str], tail: tuple[str, int] | None = None) -> list[str]:
        """Send commands chained, each message ending with the error query; raise on a reported error.

        ``tail``: (measurement query, number of values) to read in the last message, before the
        error query. Returns the replies of the last message.
        """
        p = self.profile
        per = max(1, p.max_chain - 1 - (tail is not None))
        replies: list[str] = []
        for i in range(0, len(commands), per):
            chunk = commands[i:i + per]
            last = i + per >= len(commands)
            extra = [tail[0]] if (last and tail is not None) else []
            n_queries = sum(c.count("?") for c in chunk + extra) + 1
            count = tail[1] if extra else 0
            message = p.separator.join(chunk + extra + [p.error_query])
            replies = self.transport.query(message, parse=lambda r, n=n_queries, k=count: self._check_chain(r, n, k))
            error = self._error_reply(replies[-1])
            if error is not None:
                rest = self.errors()
                raise InstrumentError(
                    f"{self.address} reported {error} after {message[:80]!r}"
                    + (f" (then {'; '.join(rest)})" if rest else "")
                    + "; check the wiring map's limits and the instrument's state"
                )
        return replies

    def _check_chain(self, reply: str, n: int, count: int = 0) -> list[str]:
        parts = split_reply(reply)
        if len(parts) != n:
            raise GarbledReply(f"expected {n} replies, got {reply[:80]!r}")
        if not ERROR_REPLY.match(parts[-1]):
            raise GarbledReply(f"malformed error-queue reply {parts[-1][:60]!r}")
        if count and self._error_reply(parts[-1]) is None:
            parse_numbers(parts[-2], count)
        return parts

    def _read(self, template: str, channels: Sequence[int]) -> np.ndarray:
        chs = [self.profile.check_channel(c) for c in channels]
        if "{chs}" in template and self.profile.multi:
            query = template.format(chs=channel_list(chs))
            return np.array(self.transport.query(query, parse=lambda r: parse_numbers(r, len(chs))))
        queries = [template.format(ch=c, chs=c) for c in chs]
        out: list[float] = []
        per = max(1, self.profile.max_chain)
        for i in range(0, len(queries), per):
            chunk = queries[i:i + per]
            msg = self.profile.separator.join(chunk)
            out += self.transport.query(msg, parse=lambda r, n=len(chunk): self._numbers_chain(r, n))
        return np.array(out)

    def _numbers_chain(self, reply: str, n: int) -> list[float]:
        parts = split_reply(reply)
        if len(parts) != n:
            raise GarbledReply(f"expected {n} replies, got {reply[:80]!r}")
        return [parse_numbers(p, 1)[0] for p in parts]

    @staticmethod
    def _text(reply: str) -> str:
        if not reply or any(ord(c) < 32 for c in reply):
            raise GarbledReply(f"unprintable reply {reply[:60]!r}")
        return reply

    @staticmethod
    def _error_reply(reply: str) -> str | None:
        """None for "no error", else 'code,"text"'; GarbledReply if it is not an error-queue reply."""
        m = ERROR_REPLY.match(reply.strip())
        if not m:
            raise GarbledReply(f"malformed error-queue reply {reply[:60]!r}")
        return None if int(m.group(1)) == 0 else f"error {int(m.group(1))} ({m.group(2)})"
