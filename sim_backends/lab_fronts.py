"""The virtual lab's two fronts over one :class:`~sim_backends.lab_model.LabModel`: the multichannel SCPI
dialect and the board protocol, with fault injection (see :mod:`sim_backends.virtual_lab`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from drivers.board import frame, unframe
from sim_backends.lab_model import Faults, LabError, LabModel


class _Front:
    """What both servers share: faults, byte counts, and (board only) the replay of a repeated request."""

    remembers = False  # a board answers a repeated request (same seq and text) from its last reply

    def __init__(self, model: LabModel, faults: Faults | None) -> None:
        self.model = model
        self.faults = faults or Faults()
        self.rng = np.random.default_rng(self.faults.seed)
        self.rng_more = np.random.default_rng([self.faults.seed, 1])  # the later faults: old seeds keep their draws
        self.bytes_received = 0
        self.messages = 0
        self.injected: dict[str, int] = {
            "drop": 0,
            "garble": 0,
            "disconnect": 0,
            "compliance_trip": 0,
            "late": 0,
            "reset": 0,
            "nan": 0,
        }
        self._last: tuple[str, str | None] | None = None
        self.nan_now = False

    def respond(self, line: str, execute: Callable[[str, bool], str | None]) -> str | None:
        """The reply to send (None: send nothing); raises ConnectionAbortedError to disconnect."""
        f, roll = self.faults, self.rng.random(4)
        more = self.rng_more.random(3) if (f.late or f.reset or f.nan) else np.ones(3)
        self.messages += 1
        if self.remembers and self._last is not None and self._last[0] == line:
            reply = self._last[1]  # a repeated request: the same reply, nothing done twice
        else:
            if roll[0] < f.disconnect:
                self.injected["disconnect"] += 1
                raise ConnectionAbortedError("injected disconnect")
            if more[1] < f.reset:
                self.injected["reset"] += 1
                self.reboot()
            self.nan_now = more[2] < f.nan
            with self.model.lock:
                reply = execute(line, roll[3] < f.compliance_trip)
            self._last = (line, reply)
        if f.delay:
            time.sleep(f.delay)
        if more[0] < f.late and reply is not None:
            self.injected["late"] += 1
            time.sleep(f.late_seconds)
        if roll[1] < f.drop and reply is not None:
            self.injected["drop"] += 1
            return None
        if roll[2] < f.garble and reply:
            self.injected["garble"] += 1
            k = int(self.rng.integers(len(reply)))
            return reply[:k] + chr(0x80 + int(self.rng.integers(0x7F))) + reply[k + 1 :]
        return reply

    def reboot(self) -> None:
        """Power cycle: every DAC at 0 V, outputs off, the last reply forgotten."""
        with self.model.lock:
            self.model.safe()
        self._last = None

    def readings(self, values: list[float], overflow: str) -> str:
        """Readings as the wire carries them; a NaN fault replaces one by ``overflow``."""
        text = [repr(v) for v in values]
        if self.nan_now and text:
            self.injected["nan"] += 1
            text[int(self.rng_more.integers(len(text)))] = overflow
        return ",".join(text)

    def trip(self, model: LabModel, channel: int) -> None:
        self.injected["compliance_trip"] += 1
        model.outputs_on.discard(channel)
        model.errors.append(f'-9001,"Compliance tripped on channel {channel}; output switched off"')

    def settle(self) -> None:
        if self.faults.settle:
            time.sleep(self.faults.settle)


def _channels(text: str) -> list[int]:
    """ "(@1001:1004,2001)" or "1001-1004,2001" -> channel numbers."""
    text = text.strip().removeprefix("(@").removesuffix(")")
    out: list[int] = []
    for part in text.replace("-", ":").split(","):
        a, _, b = part.partition(":")
        out.extend(range(int(a), int(b or a) + 1))
    return out


class ScpiFront(_Front):
    """The generic multichannel SCPI dialect (drivers.scpi profile "multichannel").

    Like an instrument: a message without a query gets no reply line; an error goes to the queue with
    its SCPI number (-113 undefined header, -222 data out of range, -224 illegal parameter value) and
    the rest of the message is skipped, its queries still answered so the reply keeps its shape.
    ``SYST:ACT:COUN?`` is the count of non-idempotent actions done (INIT, pulses, trigger edges), which
    the controller reads to tell whether a message whose reply was lost was acted on.
    """

    def execute(self, line: str, trip: bool) -> str | None:
        m, replies, failed, queries = self.model, [], False, 0
        for cmd in line.split(";"):
            cmd = cmd.strip().lstrip(":")
            head, _, arg = cmd.partition(" ")
            head = head.upper()
            queries += head.endswith("?")
            if failed:  # after an error only queries are answered, one answer each
                if head.endswith("?"):
                    replies.append(
                        m.errors.pop(0)
                        if head == "SYST:ERR?" and m.errors
                        else '0,"No error"'
                        if head == "SYST:ERR?"
                        else "0"
                    )
                continue
            try:
                trip = self._command(head, arg, replies, trip)
            except (LabError, ValueError, IndexError) as exc:
                failed, m.pending = True, None
                m.errors.append((exc if isinstance(exc, LabError) else LabError(2, str(exc))).scpi())
        if not failed:
            try:
                m.flush()
            except LabError as exc:
                m.errors.append(exc.scpi())
        return ";".join(replies) if queries else None

    def _command(self, head: str, arg: str, replies: list[str], trip: bool) -> bool:
        m = self.model
        if head == "*IDN?":
            replies.append(f"aeqprop,virtual-lab,{m.sub.info.description.replace(',', ' ')},1")
        elif head == "*OPC?":
            replies.append("1")
        elif head == "*CLS":
            m.errors.clear()
        elif head == "*RST":
            m.safe()
        elif head == "SYST:ERR?":
            m.flush()
            replies.append(m.errors.pop(0) if m.errors else '0,"No error"')
        elif head == "SYST:ACT:COUN?":
            replies.append(str(m.actions))
        elif head in ("SOUR:VOLT", "SOUR:CURR:LIM", "SOUR:PULS"):
            value, _, chs = arg.partition(",")
            ch = _channels(chs)[0]
            if head == "SOUR:VOLT":
                m.set(ch, float(value))
                if trip:
                    self.trip(m, ch)
                    trip = False
            elif head == "SOUR:PULS":
                m.pulse(ch, float(value))
            else:
                if not float(value) > 0:
                    raise LabError(2, f"compliance {value} A must be > 0")
                m.compliance[ch] = float(value)
        elif head in ("SOUR:VOLT?", "MEAS:VOLT?"):
            replies.append(self.readings(m.read(_channels(arg), source=head[0] == "S"), "9.91e+37"))
        elif head == "OUTP":
            state, _, chs = arg.partition(",")
            if state.strip().upper() not in ("ON", "1", "OFF", "0"):
                raise LabError(2, f"OUTP takes ON or OFF, not {state!r}")
            m.output(_channels(chs), state.strip().upper() in ("ON", "1"))
        elif head == "INIT":
            m.relax()
            self.settle()
        else:
            raise LabError(3, f"undefined header {head!r}")
        return trip


class BoardFront(_Front):
    """The board protocol (docs/board-protocol.md): framing, replay of a repeated request, reset reporting."""

    remembers = True
    #: Commands a board answers before it is armed (after power-up, reset or watchdog): reads and safety.
    UNARMED = ("ID", "GET", "SRC", "SAFE", "ARM", "OUT OFF")

    def __init__(self, model: LabModel, faults: Faults | None) -> None:
        super().__init__(model, faults)
        self.armed = False

    def reboot(self) -> None:
        super().reboot()
        self.armed = False

    def execute(self, line: str, trip: bool) -> str:
        try:
            seq, body = unframe(line)
        except ValueError:
            head = line.partition(" ")[0]
            return frame(int(head) if head.isdigit() else 0, "ERR 1 bad CRC")
        m, payloads = self.model, []
        try:
            for cmd in body.split(";"):
                cmd = cmd.strip()
                name, _, arg = cmd.partition(" ")
                if not self.armed and not cmd.startswith(self.UNARMED):
                    raise LabError(8, "reset since armed; send ARM after restoring the levels")
                if name == "ID":
                    payloads.append(f"aeqprop-virtual-lab {m.sub.info.description}")
                elif name == "ARM":
                    self.armed = True
                    payloads.append("")
                elif name == "SET":
                    latched: dict[int, float] = {}  # the whole SET is latched at once: last value per channel
                    for pair in arg.split(","):
                        ch, eq, v = pair.partition("=")
                        if not eq:
                            raise LabError(2, f"bad SET pair {pair!r}")
                        latched[int(ch)] = float(v)
                    for channel, value in latched.items():  # every value checked before any is applied
                        m.check(channel, value)
                    for channel, value in latched.items():
                        m.set(channel, value)
                    if trip:
                        self.trip(m, int(arg.partition("=")[0]))
                        raise LabError(6, "compliance tripped")
                    payloads.append("")
                elif name in ("GET", "SRC"):
                    payloads.append(self.readings(m.read(_channels(arg), source=name == "SRC"), "nan"))
                elif name == "SETTLE":
                    m.relax()
                    self.settle()
                    payloads.append("")
                elif name == "PULSE":
                    ch, s, *level = arg.split()
                    m.pulse(int(ch), float(s), float(level[0]) if level else 1.0)
                    payloads.append("")
                elif name == "OUT":
                    state, _, chs = arg.partition(" ")
                    if state not in ("ON", "OFF"):
                        raise LabError(2, f"OUT takes ON or OFF, not {state!r}")
                    m.output(m.all_channels() if chs.strip() == "ALL" else _channels(chs), state == "ON")
                    payloads.append("")
                elif name == "LIM":
                    ch, _, v = arg.partition(" ")
                    group, _ = m.locate(int(ch))
                    if group in ("output", "readout", "gradient"):
                        raise LabError(4, f"channel {ch} is an ADC channel; LIM applies to source channels")
                    m.compliance[int(ch)] = float(v)
                    payloads.append("")
                elif name == "SAFE":
                    m.safe()
                    payloads.append("")
                else:
                    raise LabError(3, f"unknown command {name!r}")
            m.flush()
        except (LabError, ValueError) as exc:
            m.pending = None
            code = exc.code if isinstance(exc, LabError) else 2
            return frame(seq, f"ERR {code} {exc}".replace("*", "x").replace(";", ","))
        return frame(seq, ("OK " + ";".join(payloads)).rstrip())
