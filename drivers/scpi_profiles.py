"""SCPI profiles (command templates and device ranges of a class of instrument) and reply parsing.

| name          | class of instrument                        | channels | source range           |
|---------------|--------------------------------------------|----------|------------------------|
| keithley2450  | Keithley 2450-class source-measure unit    | 1        | +/-210 V, +/-1.05 A    |
| keysight-b2900| Keysight B2900-class two-channel SMU        | 1, 2     | +/-210 V, +/-3.03 A    |
| multichannel  | generic multichannel DAC/ADC (virtual lab) | any >= 1 | the instrument's own   |

At open (``ScpiInstrument.prepare``) a profile checks the command language where the instrument has
a choice (``*LANG?`` on the 2450 must answer SCPI), then sends its set-up: reset and clear, the source
function (voltage), the state of an output that is off (high impedance), and on the B2900 no automatic
output-on by a measurement. Compliance trips are a status bit on both SMUs, not an error-queue entry,
so each message that sets something also asks the trip state of the channels it has sourced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from aeqprop.errors import ConfigurationError, InstrumentError
from drivers.transport import GarbledReply

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
#: A comma-separated list of decimal numbers (one C-level match for a whole reply).
NUMBER_LIST = re.compile(rf"\s*{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*")
ERROR_REPLY = re.compile(r'^([+-]?\d+),"(.*)"$')
#: SCPI's "not a number" (overload, no valid reading): 9.91e37; anything this large is refused as data.
OVERFLOW = 9.9e37


class Overload(InstrumentError):
    """A reading is the SCPI overflow value 9.91e37 (or a board's overload): the channel has no valid value."""


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
    setup: tuple[str, ...] = ()  # sent at open, error-checked; "{ch}" is repeated for every channel
    language: tuple[str, str] | None = None  # (query, required answer), checked at open
    trip_query: str | None = None  # "{ch}": 1 if the channel's compliance tripped, else 0
    action_count: str | None = None  # count of non-idempotent actions done (pulses, INIT, trigger edges)
    voltage_range: tuple[float, float] | None = None  # what the device can source, V
    current_range: tuple[float, float] | None = None  # A
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
        "keithley2450",
        (1,),
        set_voltage="SOUR:VOLT {value}",
        set_current="SOUR:CURR {value}",
        get_voltage="SOUR:VOLT?",
        get_current="SOUR:CURR?",
        measure_voltage="MEAS:VOLT?",
        measure_current="MEAS:CURR?",
        output_on="OUTP ON",
        output_off="OUTP OFF",
        compliance="SOUR:VOLT:ILIM {value}",
        multi=False,
        max_chain=16,
        setup=("*RST", "*CLS", "SOUR:FUNC VOLT", "OUTP:SMOD HIMP"),
        language=("*LANG?", "SCPI"),
        trip_query="SOUR:VOLT:ILIM:TRIP?",
        voltage_range=(-210.0, 210.0),
        current_range=(-1.05, 1.05),
    ),
    "keysight-b2900": ScpiProfile(
        "keysight-b2900",
        (1, 2),
        set_voltage="SOUR{ch}:VOLT {value}",
        set_current="SOUR{ch}:CURR {value}",
        get_voltage="SOUR{ch}:VOLT?",
        get_current="SOUR{ch}:CURR?",
        measure_voltage="MEAS:VOLT? (@{chs})",
        measure_current="MEAS:CURR? (@{chs})",
        output_on="OUTP{ch} ON",
        output_off="OUTP{ch} OFF",
        compliance="SENS{ch}:CURR:PROT {value}",
        max_chain=32,
        setup=("*RST", "*CLS", "SOUR{ch}:FUNC:MODE VOLT", "OUTP{ch}:OFF:MODE HIZ", "OUTP{ch}:ON:AUTO OFF"),
        trip_query="SENS{ch}:CURR:PROT:TRIP?",
        voltage_range=(-210.0, 210.0),
        current_range=(-3.03, 3.03),
    ),
    "multichannel": ScpiProfile(
        "multichannel",
        None,
        set_voltage="SOUR:VOLT {value},(@{ch})",
        set_current="SOUR:CURR {value},(@{ch})",
        get_voltage="SOUR:VOLT? (@{chs})",
        get_current="SOUR:CURR? (@{chs})",
        measure_voltage="MEAS:VOLT? (@{chs})",
        measure_current="MEAS:CURR? (@{chs})",
        output_on="OUTP ON,(@{chs})",
        output_off="OUTP OFF,(@{chs})",
        compliance="SOUR:CURR:LIM {value},(@{ch})",
        trigger="INIT;:*OPC?",
        pulse="SOUR:PULS {value},(@{ch})",
        max_chain=100_000,
        setup=("*CLS",),
        action_count="SYST:ACT:COUN?",
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
            parts.extend(str(c) for c in chs[i + 1 : j + 1])
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
    """Exactly ``count`` comma-separated numbers, else GarbledReply (retried); Overload for 9.91e37 (not retried)."""
    tokens = text.split(",")
    if len(tokens) != count or not NUMBER_LIST.fullmatch(text):
        raise GarbledReply(f"expected {count} numbers, got {text[:80]!r}")
    values = [float(t) for t in tokens]
    for i, v in enumerate(values):
        if abs(v) >= OVERFLOW:
            raise Overload(
                f"reading {i + 1} of {count} is {v:g}, the overflow value (overload or no valid "
                "reading); check the channel's range and wiring, then resume the run"
            )
    return values


def fmt(value: float) -> str:
    """Full-precision text of a finite float (``repr``); refuses NaN and infinities."""
    value = float(value)
    if not np.isfinite(value):
        raise ConfigurationError(f"refusing to send the non-finite value {value}")
    return repr(value)
