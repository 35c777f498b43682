"""A generic SCPI instrument driven by command templates, with profiles.

Every settable quantity goes out as a template filled with ``{ch}`` (channel
number) and ``{value}`` (``repr`` of a float: full precision, round-trips
exactly). Several commands go out chained in one message (``;:``) where the
profile allows, and every message that sets something ends with the error
query, so the error queue is checked after each set at no extra round trip.

Profiles (``PROFILES``) are in :mod:`drivers.scpi_profiles`.

A message that acts (a pulse, a trigger) is never sent twice: if its reply is lost, the instrument's
action counter (``action_count`` of the profile) tells whether it was acted on; then only what the
message asked after its actions is asked again. Without a counter the run stops (resume it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial

import numpy as np

from aeqprop.errors import ConfigurationError, InstrumentError
from drivers.scpi_profiles import (  # noqa: F401  (re-exported)
    ERROR_REPLY,
    NUMBER_LIST,
    OVERFLOW,
    PROFILES,
    Overload,
    Pulse,
    ScpiProfile,
    channel_list,
    fmt,
    parse_numbers,
    split_reply,
)
from drivers.transport import GarbledReply, Transport, Unconfirmed


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
        self.sourcing: set[int] = set()  # channels set or switched on: their trip state is polled
        self.actions: int | None = None  # the instrument's action count after our last message

    @property
    def address(self) -> str:
        return self.transport.address

    def prepare(self) -> None:
        """Check the command language, then send the profile's set-up (reset, clear, function, off-state)."""
        p = self.profile
        if p.language is not None:
            query, wanted = p.language
            got = self.transport.query(query, parse=self._text).strip().strip('"')
            if got.upper() != wanted:
                raise InstrumentError(
                    f"{self.address} speaks {got!r}, not {wanted}: switch its command set to "
                    f"{wanted} on the front panel (menu System > Settings), then start again"
                )
        commands = [c for t in p.setup for c in self._setup_lines(t)]
        if commands:
            self._send_checked(commands)
        if p.action_count is not None:
            self.actions = self._action_count()

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
        if on:
            self.sourcing.update(int(c) for c in channels)
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
        sets: Sequence[tuple[int, float] | Pulse] = (),
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
        commands: list[str] = []
        acting: set[int] = set()
        for item in sets:
            if isinstance(item, Pulse):
                acting.add(len(commands))
                commands.append(self._pulse_command(item))
            else:
                commands.append(template.format(ch=p.check_channel(item[0]), value=fmt(item[1])))
                self.sourcing.add(int(item[0]))
        if pulse is not None:
            acting.add(len(commands))
            commands.append(self._pulse_command(Pulse(*pulse)))
        if trigger and p.trigger is not None:
            acting.add(len(commands))
            commands.append(p.trigger)
        mt = p.measure_voltage if read_kind == "voltage" else p.measure_current
        if not commands:
            return self._read(mt, reads) if len(reads) else None
        tail = None
        if len(reads) and p.multi and "{chs}" in mt and len(commands) + 2 <= p.max_chain:
            tail = (mt.format(chs=channel_list([p.check_channel(c) for c in reads])), len(reads))
        parts = self._send_checked(commands, tail, acting)
        if tail is not None:
            return np.array(parse_numbers(parts[-2], len(reads)))
        return self._read(mt, reads) if len(reads) else None

    # -- internals -------------------------------------------------------------------
    def _pulse_command(self, pulse: Pulse) -> str:
        p = self.profile
        if p.pulse is None:
            raise ConfigurationError(f"profile {p.name} has no pulse command; use a timed hold instead")
        return p.pulse.format(ch=p.check_channel(pulse.ch), value=fmt(pulse.seconds), level=fmt(pulse.level))

    def _setup_lines(self, template: str) -> list[str]:
        """One set-up line of the profile, repeated for each of its channels where it holds ``{ch}``."""
        p = self.profile
        if "{ch}" not in template:
            return [template]
        if p.channels is None:
            raise ConfigurationError(
                f"profile {p.name}: set-up line {template!r} repeats per channel; list its channels"
            )
        return self._fill_many(template, p.channels)

    def _fill_many(self, template: str, channels: Sequence[int]) -> list[str]:
        chs = [self.profile.check_channel(c) for c in channels]
        if "{chs}" in template:
            return [template.format(chs=channel_list(chs))]
        if "{ch}" in template:
            return [template.format(ch=c) for c in chs]
        return [template]

    def _send_checked(
        self, commands: list[str], tail: tuple[str, int] | None = None, acting: Collection[int] = frozenset()
    ) -> list[str]:
        """Send commands chained, each message ending with the error query; raise on a reported error.

        ``tail``: (measurement query, number of values) to read in the last message, before the
        error query. ``acting``: indices of commands that act (pulses, triggers) and must not run twice.
        Each message also asks the action count (if the profile has one) and the trip state of the
        channels sourced. Returns the replies of the last message.
        """
        p = self.profile
        meta = ([p.action_count] if p.action_count else []) + (
            [p.trip_query.format(ch=c) for c in sorted(self.sourcing)] if p.trip_query else []
        )
        per = max(1, p.max_chain - 1 - len(meta) - (tail is not None))
        replies: list[str] = []
        for i in range(0, len(commands), per):
            chunk = commands[i : i + per]
            extra, count = ([tail[0]], tail[1]) if (i + per >= len(commands) and tail is not None) else ([], 0)
            acts = sorted(k - i for k in acting if i <= k < i + per)
            replies = self._message(chunk, meta, extra, count, acts)
        return replies

    def _message(self, chunk: list[str], meta: list[str], extra: list[str], count: int, acts: list[int]) -> list[str]:
        """One message: chunk, meta queries, extra (a measurement), error query; replies checked."""
        p = self.profile

        def send(parts: list[str], resend: bool) -> list[str]:
            message = p.separator.join(parts + meta + extra + [p.error_query])
            n = sum(c.count("?") for c in parts + meta + extra) + 1
            replies = self.transport.query(
                message, parse=lambda r: self._check_chain(r, n, count, len(meta), bool(extra)), resend=resend
            )
            self._check_meta(replies, meta, len(extra), message)
            return replies

        if not acts:
            return send(chunk, True)
        if self.actions is None and p.action_count is not None:
            self.actions = self._action_count()
        before = self.actions
        for attempt in range(self.transport.retries + 1):
            try:
                return send(chunk, False)
            except Unconfirmed as exc:
                if before is None:
                    raise InstrumentError(
                        f"{exc}; profile {p.name} has no action counter to tell whether it was "
                        "acted on, so the run stops here: resume it"
                    ) from exc
                now = self._action_count()
                if now == before:  # not acted on: send it again
                    self.transport._event("retry", f"{self.address}: retry {attempt + 1} of a message not acted on")
                    continue
                if now == before + len(acts):  # acted on: ask again only what followed the last action
                    self.transport._event("retry", f"{self.address}: message was acted on; asking its replies again")
                    self.actions = now
                    return send(chunk[acts[-1] + 1 :], True)
                raise InstrumentError(
                    f"{exc}; {now - before} of its {len(acts)} actions ran, so the state is "
                    "unknown: the run stops here, resume it from its checkpoint"
                ) from exc
        raise InstrumentError(
            f"{self.address}: a message that acts got no reply after "
            f"{self.transport.retries + 1} attempts; resume the run when the instrument answers"
        )

    def _action_count(self) -> int:
        query = self.profile.action_count
        if query is None:
            raise ConfigurationError(f"profile {self.profile.name} has no action counter to read")
        return int(self.transport.query(query, parse=lambda r: parse_numbers(r, 1))[0])

    def _check_meta(self, replies: list[str], meta: list[str], n_extra: int, message: str) -> None:
        """Read the action count and trip states in ``replies``; raise on a reported error or a trip."""
        error = self._error_reply(replies[-1])
        if error is not None:
            rest = self.errors()
            raise InstrumentError(
                f"{self.address} reported {error} after {message[:80]!r}"
                + (f" (then {'; '.join(rest)})" if rest else "")
                + "; check the wiring map's limits and the instrument's state"
            )
        if not meta:
            return
        values = [float(r) for r in replies[len(replies) - 1 - n_extra - len(meta) : len(replies) - 1 - n_extra]]
        if self.profile.action_count:
            self.actions, values = int(values[0]), values[1:]
        tripped = [c for c, v in zip(sorted(self.sourcing), values) if v != 0]
        if tripped:
            raise InstrumentError(
                f"{self.address}: channel(s) {', '.join(map(str, tripped))} tripped their current compliance "
                "(the instrument's trip state); check the device and the compliance in the wiring map, then resume"
            )

    def _check_chain(self, reply: str, n: int, count: int = 0, n_meta: int = 0, extra: bool = False) -> list[str]:
        parts = split_reply(reply)
        if len(parts) != n:
            raise GarbledReply(f"expected {n} replies, got {reply[:80]!r}")
        if not ERROR_REPLY.match(parts[-1]):
            raise GarbledReply(f"malformed error-queue reply {parts[-1][:60]!r}")
        if self._error_reply(parts[-1]) is None:
            if count:
                parse_numbers(parts[-2], count)
            end = len(parts) - 1 - extra
            for text in parts[end - n_meta : end]:
                parse_numbers(text, 1)
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
            chunk = queries[i : i + per]
            msg = self.profile.separator.join(chunk)
            out += self.transport.query(msg, parse=partial(self._numbers_chain, n=len(chunk)))
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
