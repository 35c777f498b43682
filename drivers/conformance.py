"""``aeqprop instruments conformance ADDRESS``: does a board follow docs/board-protocol.md?

Each check sends raw framed lines (the driver's own framing and CRC) and compares the replies with
what the document requires. It drives the board (sets a source channel, pulses the hold line, switches
outputs), so run it with nothing connected to the outputs. The board is left in its SAFE state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from drivers.board import MAX_LINE, REPLY, crc8, frame, unframe
from drivers.transport import Transport


@dataclass(frozen=True)
class Channels:
    """Channels used by the checks: a DAC ``source``, an ADC ``adc``, the ``hold`` line (pulsed)."""

    source: int = 1001
    adc: int = 2001
    hold: int = 9000


@dataclass
class Check:
    """One requirement: its name, whether the board met it, and what was seen."""

    name: str
    passed: bool
    detail: str


class _Raw:
    """Framed lines over a transport with no retries: the conformance checks see the board's first answer."""

    def __init__(self, transport: Transport) -> None:
        self.t = transport
        self.seq = 100

    def send(self, body: str, seq: int | None = None, crc: str | None = None) -> str:
        if seq is None:
            self.seq = (self.seq + 1) % 65536
            seq = self.seq
        text = f"{seq} {body}"
        line = f"{text}*{crc if crc is not None else format(crc8(text.encode('ascii')), '02X')}"
        return self.t.query(line)

    def ok(self, body: str, seq: int | None = None, crc: str | None = None) -> list[str] | None:
        """The payloads of an OK reply (None if the reply is not a well-framed OK)."""
        reply = self.send(body, seq, crc)
        m = REPLY.match(reply)
        if not m or m.group(2) != "OK":
            return None
        return [p.strip() for p in (m.group(3) or "").split(";")]

    def err(self, body: str, seq: int | None = None, crc: str | None = None) -> str | None:
        """The code of an ERR reply (None if it is not one)."""
        m = REPLY.match(self.send(body, seq, crc))
        return m.group(3).partition(" ")[0] if m and m.group(2) == "ERR" else None


def run_conformance(transport: Transport, channels: Channels = Channels()) -> list[Check]:
    """Every check, in order; a check that raises counts as failed with the exception's text."""
    raw, ch = _Raw(transport), channels
    checks: list[Check] = []

    def check(name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        try:
            passed, detail = fn()
        except Exception as exc:  # a board that does not answer fails this check, not the whole run
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        checks.append(Check(name, passed, detail))

    def ident() -> tuple[bool, str]:
        reply = raw.send("ID")
        m = REPLY.match(reply)
        text = (m.group(3) or "") if m else ""
        good = m is not None and m.group(2) == "OK" and bool(text) and ";" not in text and unframe(reply)[0] == raw.seq
        return good, f"{reply!r}"

    def arm() -> tuple[bool, str]:
        return raw.ok("ARM") == [""], "ARM answers OK with an empty payload"

    def empty_payload() -> tuple[bool, str]:
        reply = raw.send(f"SET {ch.source}=0.0")
        head = reply.rpartition("*")[0]
        return head.endswith(" OK"), f"{reply!r} (a single empty payload is 'OK' with nothing after it)"

    def payload_per_command() -> tuple[bool, str]:
        got = raw.ok(f"SET {ch.source}=0.25; SRC {ch.source}")
        return got is not None and len(got) == 2 and got[0] == "" and _num(
            got[1]
        ) == 0.25, f"payloads {got} (want ['', '0.25'])"

    def bare_separator() -> tuple[bool, str]:
        got = raw.ok(f"SET {ch.source}=0.125;SRC {ch.source}")
        return got is not None and len(got) == 2 and _num(got[1]) == 0.125, f"payloads {got}"

    def lower_crc() -> tuple[bool, str]:
        text = f"{raw.seq + 1} SRC {ch.source}"
        raw.seq += 1
        got = raw.t.query(f"{text}*{crc8(text.encode('ascii')):02x}")
        return got.split(" ")[1] == "OK", f"{got!r} for a lower-case CRC"

    def bad_crc() -> tuple[bool, str]:
        code = raw.err(f"SRC {ch.source}", crc="00" if crc8(f"{raw.seq + 1} SRC {ch.source}".encode()) else "01")
        return code == "1", f"ERR {code} (want ERR 1)"

    def unknown() -> tuple[bool, str]:
        code = raw.err("FROB 1")
        return code == "3", f"ERR {code} (want ERR 3)"

    def out_of_range() -> tuple[bool, str]:
        code = raw.err(f"SET {ch.source}=1e+30")
        level = raw.ok(f"SRC {ch.source}")
        return code == "5" and level is not None and _num(
            level[0]
        ) == 0.125, f"ERR {code} (want 5), level after: {level} (want unchanged 0.125)"

    def nan() -> tuple[bool, str]:
        code = raw.err(f"SET {ch.source}=nan")
        return code == "2", f"ERR {code} for a NaN value (want ERR 2)"

    def lim_on_adc() -> tuple[bool, str]:
        code = raw.err(f"LIM {ch.adc} 0.001")
        return code == "4", f"ERR {code} for LIM on ADC channel {ch.adc} (want ERR 4)"

    def duplicate() -> tuple[bool, str]:
        seq = raw.seq = (raw.seq + 1) % 65536
        first = raw.send(f"SET {ch.source}=0.5", seq=seq)
        again = raw.send(f"SET {ch.source}=0.5", seq=seq)
        return first == again and " OK" in first, f"{first!r} then {again!r} (want the same reply)"

    def long_line() -> tuple[bool, str]:
        body, pairs = f"SET {ch.source}=0.0", 0
        while len(frame(65535, body + f",{ch.source}=0.0")) + 1 <= MAX_LINE:
            body += f",{ch.source}=0.0"
            pairs += 1
        line_bytes = len(frame(raw.seq + 1, body)) + 1
        got = raw.ok(body)
        return got == [""], f"a {line_bytes}-byte line: {'OK' if got == [''] else 'refused'}"

    def readings() -> tuple[bool, str]:
        got = raw.ok(f"SETTLE; GET {ch.adc}")
        value = _num(got[1]) if got and len(got) == 2 else None
        return value is not None and math.isfinite(value) and abs(value) < 9.9e37, f"SETTLE; GET payloads {got}"

    def pulse() -> tuple[bool, str]:
        got = raw.ok(f"PULSE {ch.hold} 0.01 1.0; SRC {ch.hold}")
        return got is not None and len(got) == 2 and _num(
            got[1]
        ) == 0.0, f"payloads {got} (want the hold line back at 0 V when PULSE replies)"

    def outputs() -> tuple[bool, str]:
        return raw.ok(f"OUT ON {ch.source}") == [""] and raw.ok("OUT OFF ALL") == [""], "OUT ON / OUT OFF ALL"

    def safe() -> tuple[bool, str]:
        raw.ok(f"SET {ch.source}=0.5")
        got = raw.ok(f"SAFE; SRC {ch.source},{ch.hold}")
        again = raw.ok("SAFE")
        levels = [_num(v) for v in got[1].split(",")] if got and len(got) == 2 else None
        return levels == [0.0, 0.0] and again == [""], f"levels after SAFE {levels} (want 0 V), SAFE twice: {again}"

    for name, fn in [
        ("ID answers one line of text without ';'", ident),
        ("ARM is accepted", arm),
        ("a lone empty payload is 'OK'", empty_payload),
        ("one payload per command, empty ones kept", payload_per_command),
        ("';' without a space separates commands", bare_separator),
        ("a lower-case CRC is accepted", lower_crc),
        ("a bad CRC is ERR 1", bad_crc),
        ("an unknown command is ERR 3", unknown),
        ("a value past the board's range is ERR 5 and nothing changes", out_of_range),
        ("NaN is ERR 2", nan),
        ("LIM on an ADC channel is ERR 4", lim_on_adc),
        ("a repeated seq is answered again, not redone", duplicate),
        (f"a {MAX_LINE}-byte line is accepted", long_line),
        ("SETTLE then GET reads a finite number", readings),
        ("PULSE replies when the line is back at 0 V", pulse),
        ("outputs switch", outputs),
        ("SAFE zeroes every DAC and may repeat", safe),
    ]:
        check(name, fn)
    return checks


def _num(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def conformance(
    address: str, channels: Channels = Channels(), baudrate: int = 115200, timeout: float = 2.0
) -> list[Check]:
    """Open ``address`` (serial port or URL) without retries, run every check, leave the board SAFE."""
    from drivers.transport import open_transport

    transport = open_transport(address, kind="serial", baudrate=baudrate, timeout=timeout, retries=0)
    try:
        return run_conformance(transport, channels)
    finally:
        try:
            _Raw(transport).send("SAFE")
        except Exception:
            pass
        transport.close()
