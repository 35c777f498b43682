"""The serial board protocol (docs/board-protocol.md): framed text lines with a CRC-8.

Request:  ``<seq> <CMD> [args][; <CMD> [args]...]*<crc>\\n``
Reply:    ``<seq> OK [payload][;payload...]*<crc>\\n``  or  ``<seq> ERR <code> <text>*<crc>\\n``

``seq`` is a decimal 0..65535 chosen by the controller, ``crc`` two hex digits
(sent upper case, either case accepted): CRC-8 (polynomial 0x07, initial value
0x00, no reflection, no final XOR) of every byte before the ``*``. A retry
repeats the same line with the same ``seq``; the board answers it from its last
reply without acting twice. Lines stay within ``MAX_LINE`` bytes both ways.
A board reports a reset since it was armed as ERR 8 (:class:`BoardReset`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from aeqprop.errors import ConfigurationError, InstrumentError
from drivers.scpi import Pulse, fmt, parse_numbers
from drivers.transport import GarbledReply, StaleReply, Transport

ERROR_CODES = {
    1: "bad CRC",
    2: "bad syntax",
    3: "unknown command",
    4: "no such channel",
    5: "value out of range",
    6: "compliance tripped",
    7: "busy",
    8: "reset since armed",
}
REPLY = re.compile(r"^(\d{1,5}) (OK|ERR)(?: (.*))?\*([0-9A-Fa-f]{2})$")
#: Longest line in either direction, bytes including the line end (docs/board-protocol.md).
MAX_LINE = 4096
#: Commands in one line are joined with this (the board also accepts ";" without the space).
SEPARATOR = "; "
#: Reply bytes budgeted per value read (a 17-digit float with sign, exponent and comma).
REPLY_BYTES_PER_VALUE = 25
#: Values per GET/SRC command, so that a reply fits in MAX_LINE.
MAX_READ = 150
#: Channel values per SET command.
MAX_SET = 100


def _count(channels: str) -> int:
    """How many channels a list like ``1001-1004,2001`` names."""
    total = 0
    for part in channels.split(","):
        a, _, b = part.strip().partition("-")
        total += int(b) - int(a) + 1 if b else 1
    return total


class BoardReset(InstrumentError):
    """The board rebooted (power, watchdog, reconnect) since it was armed: it is in its safe state."""


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC_TABLE = _table()


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS: polynomial 0x07, init 0x00. ``crc8(b"123456789") == 0xF4``."""
    crc = 0
    for b in data:
        crc = _CRC_TABLE[crc ^ b]
    return crc


def frame(seq: int, body: str) -> str:
    """``"<seq> <body>*<crc>"`` (without the line end)."""
    text = f"{seq} {body}"
    return f"{text}*{crc8(text.encode('ascii')):02X}"


def unframe(line: str) -> tuple[int, str]:
    """(seq, body) of a framed line; ValueError on a bad frame or CRC."""
    head, star, crc = line.rpartition("*")
    if not star or len(crc) != 2 or int(crc, 16) != crc8(head.encode("ascii", errors="replace")):
        raise ValueError(f"bad frame or CRC in {line[:60]!r}")
    seq, _, body = head.partition(" ")
    if not seq.isdigit():
        raise ValueError(f"bad sequence number in {line[:60]!r}")
    return int(seq), body


class BoardInstrument:
    """A board speaking the framed protocol over a transport (usually serial).

    Offers the same channel operations as :class:`drivers.scpi.ScpiInstrument`.
    Example: ``BoardInstrument(open_transport("/dev/ttyACM0", baudrate=115200))``.
    """

    profile_name = "board"

    def __init__(self, transport: Transport):
        self.transport = transport
        self.seq = 0

    @property
    def address(self) -> str:
        return self.transport.address

    def command(self, *commands: str, count: int = 0) -> list[str]:
        """Send commands chained in framed lines of at most ``MAX_LINE`` bytes; return each command's payload.

        ``count``: the last command reads that many numbers (checked inside the exchange, so a bad
        reading is retried like any garbled reply).
        """
        lines: list[list[str]] = [[]]
        for c in commands:
            if lines[-1] and not self._fits(lines[-1] + [c]):
                lines.append([])
            lines[-1].append(c)
        payloads: list[str] = []
        for k, chunk in enumerate(lines):
            payloads += self._line(chunk, count if k == len(lines) - 1 else 0)
        return payloads

    def _fits(self, chunk: list[str]) -> bool:
        # "<seq> " + commands joined + "*XX\n", seq at most 5 digits
        request = 6 + sum(len(c) for c in chunk) + len(SEPARATOR) * (len(chunk) - 1) + 4
        reply = 16 + sum(REPLY_BYTES_PER_VALUE * _count(c[4:]) + 1 for c in chunk if c.startswith(("GET", "SRC")))
        return request <= MAX_LINE and reply <= MAX_LINE

    def _line(self, commands: list[str], count: int) -> list[str]:
        self.seq = (self.seq + 1) % 65536
        seq = self.seq
        line = frame(seq, SEPARATOR.join(commands))

        def parse(reply: str) -> list[str]:
            m = REPLY.match(reply)
            if not m:
                raise GarbledReply(f"malformed board reply {reply[:60]!r}")
            got, _ = unframe(reply)
            if got != seq:
                if 0 < (seq - got) % 65536 < 256:  # a late reply to an earlier line: skip it
                    raise StaleReply(f"late reply to sequence {got} while waiting for {seq}")
                raise GarbledReply(f"reply to sequence {got}, expected {seq}")
            if m.group(2) == "ERR":
                code, _, text = (m.group(3) or "").partition(" ")
                if code == "1":  # the board saw a corrupted request: resend it
                    raise GarbledReply("the board reports a bad CRC on our request")
                if code == "8":
                    raise BoardReset(
                        f"board {self.address} has reset since it was armed ({text}): its outputs are off and its "
                        "levels at 0 V, so the run cannot go on; check its power and cable, then resume the run"
                    )
                meaning = ERROR_CODES.get(int(code) if code.isdigit() else -1, "unknown error")
                raise InstrumentError(
                    f"board {self.address} refused {line[:60]!r}: ERR {code} ({meaning}: {text}); "
                    "check the wiring map against the board's channels and limits"
                )
            payloads = [p.strip() for p in (m.group(3) or "").split(";")]
            if len(payloads) != len(commands):
                raise GarbledReply(f"expected {len(commands)} payloads, got {reply[:60]!r}")
            if count:
                parse_numbers(payloads[-1], count)
            return payloads

        return self.transport.query(line, parse=parse)

    # -- the operations hardware.py uses ----------------------------------------------
    def identify(self) -> str:
        return self.command("ID")[0]

    def errors(self) -> list[str]:
        """The board reports errors inline, so its queue is always empty."""
        return []

    def prepare(self) -> None:
        """Arm the board (``ARM``): from here a reset (power, watchdog, reconnect) is reported as ERR 8."""
        self.command("ARM")

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
        """SET, PULSE, SETTLE and GET in one framed line; returns the GET readings or None.

        A :class:`Pulse` among ``sets`` ends the SET before it and goes out in its place.
        """
        if kind != "voltage" or read_kind != "voltage":
            raise ConfigurationError("the board sources and measures voltages only (DAC/ADC)")
        commands: list[str] = []
        group: list[str] = []
        for item in list(sets) + ([Pulse(*pulse)] if pulse is not None else []):
            if isinstance(item, Pulse) or len(group) == MAX_SET:
                if group:
                    commands.append("SET " + ",".join(group))
                    group = []
            if isinstance(item, Pulse):
                commands.append(f"PULSE {int(item.ch)} {fmt(item.seconds)} {fmt(item.level)}")
            else:
                group.append(f"{int(item[0])}={fmt(item[1])}")
        if group:
            commands.append("SET " + ",".join(group))
        if trigger:
            commands.append("SETTLE")
        if not commands and not len(reads):
            return None
        if not len(reads):
            self.command(*commands)
            return None
        return self._read("GET", reads, commands)

    def _read(self, name: str, channels: Sequence[int], before: Sequence[str] = ()) -> np.ndarray:
        """``before`` then GET/SRC of ``channels`` in blocks of MAX_READ; the readings, checked in the exchange."""
        chs = [int(c) for c in channels]
        blocks = [chs[i : i + MAX_READ] for i in range(0, len(chs), MAX_READ)]
        values: list[float] = []
        for k, block in enumerate(blocks):
            payloads = self.command(
                *(list(before) if k == 0 else []), f"{name} {self._channels(block)}", count=len(block)
            )
            values += parse_numbers(payloads[-1], len(block))
        return np.array(values)

    def measure(self, channels: Sequence[int], kind: str = "voltage") -> np.ndarray:
        readings = self.exchange(reads=channels, read_kind=kind)
        return np.empty(0) if readings is None else readings  # None: no channel asked for

    def source_levels(self, channels: Sequence[int], kind: str = "voltage") -> np.ndarray:
        return self._read("SRC", channels)

    def set_voltage(self, ch: int, value: float) -> None:
        self.exchange(sets=[(ch, value)])

    can_pulse = True  # PULSE is part of the protocol

    def output(self, channels: Sequence[int], on: bool) -> None:
        self.command(f"OUT {'ON' if on else 'OFF'} {self._channels(channels)}")

    def set_compliance(self, ch: int, value: float) -> None:
        self.command(f"LIM {int(ch)} {fmt(value)}")

    def pulse(self, ch: int, seconds: float) -> None:
        self.exchange(pulse=(ch, seconds))

    def safe(self) -> None:
        """Every DAC to 0 V and every output off, in the board's own order."""
        self.command("SAFE")

    @staticmethod
    def _channels(channels: Sequence[int]) -> str:
        from drivers.scpi import channel_list

        return channel_list(channels).replace(":", "-")
