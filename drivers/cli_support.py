"""The logic behind ``aeqprop instruments list|probe|check``, and ``aeqprop train --wiring``.

Plain functions returning plain data; the CLI prints them. None of them
changes an instrument's output: ``probe`` identifies, drains the error queue
and reads back a programmed source level; ``check_wiring`` opens nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from aeqprop.errors import ConfigurationError, InstrumentError
from drivers.wiring import Group, WiringMap, load_wiring

if TYPE_CHECKING:
    from drivers.hardware import InstrumentSubstrate


def list_instruments(backend: str = "@py") -> dict[str, list[str]]:
    """VISA resources seen by ``backend`` and serial ports (``"port - description"``)."""
    import warnings

    out: dict[str, list[str]] = {"visa": [], "serial": []}
    try:
        import pyvisa

        rm = pyvisa.ResourceManager(backend)
        try:
            with warnings.catch_warnings():  # pyvisa-py's notes on optional discovery packages
                warnings.simplefilter("ignore")
                out["visa"] = list(rm.list_resources())
        finally:
            rm.close()
    except Exception as exc:  # a missing backend must not hide the serial ports
        out["visa"] = [f"(VISA backend {backend} unavailable: {exc})"]
    from serial.tools import list_ports

    out["serial"] = [f"{p.device} - {p.description}" for p in sorted(list_ports.comports(), key=lambda p: p.device)]
    return out


def guess_profile(identity: str) -> str:
    """The SCPI profile for an identity string (``*IDN?``); "multichannel" when unknown."""
    text = identity.upper()
    if "2450" in text or "2460" in text or "2470" in text:
        return "keithley2450"
    if "B290" in text or "B291" in text:
        return "keysight-b2900"
    return "multichannel"


class ProbeReport(TypedDict):
    """What ``probe`` found. ``safe_read``: (channel, its programmed source level in V)."""

    address: str
    profile: str
    identity: str
    errors: list[str]
    safe_read: tuple[int, float]
    round_trips: int


def probe(
    address: str,
    profile: str | None = None,
    channel: int | None = None,
    backend: str = "@py",
    timeout: float = 2.0,
    baudrate: int = 115200,
) -> ProbeReport:
    """Identity, error queue and one safe read (a programmed source level) of one instrument.

    ``profile``: a SCPI profile or "board"; None guesses from the identity
    (serial addresses default to "board"). Returns ``{"address", "profile",
    "identity", "errors", "safe_read", "round_trips"}``. Raises InstrumentError
    when the instrument does not answer.
    """
    from drivers.board import BoardInstrument
    from drivers.scpi import ScpiInstrument
    from drivers.transport import open_transport

    visa = "::" in address
    transport = (
        open_transport(address, timeout=timeout, retries=1, backend=backend)
        if visa
        else open_transport(address, timeout=timeout, retries=1, baudrate=baudrate)
    )
    try:
        inst: BoardInstrument | ScpiInstrument
        if profile == "board" or (profile is None and not visa):
            inst, profile = BoardInstrument(transport), "board"
        else:
            inst = ScpiInstrument(transport, profile or "multichannel")
        identity = inst.identify()
        if profile is None or (profile == "multichannel" and guess_profile(identity) != "multichannel"):
            profile = guess_profile(identity)
            inst = ScpiInstrument(transport, profile)
        if channel is None:
            channel = 1001 if "virtual-lab" in identity else 1
        errors = inst.errors()
        safe_read = float(inst.source_levels([channel])[0])
        return {
            "address": address,
            "profile": profile,
            "identity": identity,
            "errors": errors,
            "safe_read": (channel, safe_read),
            "round_trips": transport.round_trips,
        }
    finally:
        transport.close()


def protocol_betas(name: str, options: Mapping[str, Any] | None = None, beta_max: float | None = None) -> list[float]:
    """The nudging strengths a protocol will apply (largest schedule value if ``beta_max``).

    ``options``: the protocol's options of the run config (values of any type; beta and variant are read).
    """
    options = dict(options or {})
    b = float(beta_max if beta_max is not None else options.get("beta", 1.0 if name == "aeqprop" else 0.5))
    variants: Mapping[str, tuple[float, float] | None]
    if name == "aeqprop":
        from protocols import aeqprop

        variants = aeqprop.VARIANTS
    elif name == "eqprop":
        from protocols import eqprop

        variants = eqprop.VARIANTS
    else:
        return [b, -b]
    table = variants.get(options.get("variant", "centered")) or (-1.0, 1.0)  # random-sign: either sign
    return sorted({lo * b for lo in table} | {0.0})


def check_wiring(
    path: str | Path,
    betas: Sequence[float] = (),
    x: np.ndarray | None = None,
    targets: tuple[float, float] = (0.0, 1.0),
    capabilities: Sequence[str] = (),
) -> list[str]:
    """Validate a wiring map and the values a run will send, without opening anything.

    ``betas``: nudging strengths of the run (see protocol_betas); ``x``: the
    inputs it will clamp; ``targets``: the range of y (one-hot: 0 and 1);
    ``capabilities``: those the protocol needs. Returns the findings, one line
    each; raises ConfigurationError with every problem found.
    """
    w = load_wiring(path)
    lines = [
        f"{path}: valid; {w.n_inputs} inputs, {w.n_outputs} outputs, "
        f"{sum(int(np.prod(p.shape)) for p in w.parameters.values())} parameters, "
        f"capabilities {sorted(w.capabilities()) or 'none'}"
    ]
    problems = []
    missing = set(capabilities) - w.capabilities()
    if missing:
        problems.append(f"the protocol needs {sorted(missing)}, which this map does not wire")

    def within(role: str, group: Group, values: np.ndarray) -> None:
        if values.size == 0 or group.limits is None:  # every source role has limits (validated)
            return
        v = values * group.scale
        lo, hi = group.limits.range
        if v.min() < lo or v.max() > hi:
            problems.append(f"{role}: the run sends {v.min():.6g} .. {v.max():.6g}, outside the range [{lo}, {hi}]")
        else:
            lines.append(f"{role}: the run sends {v.min():.6g} .. {v.max():.6g} within [{lo}, {hi}]")

    if x is not None:
        within("inputs", w.inputs, np.asarray(x, dtype=float))
    within("nudge.strength", w.nudge.strength, np.asarray(betas, dtype=float))
    if any(b != 0 for b in betas):
        within("nudge.targets", w.nudge.targets, np.asarray(targets, dtype=float))
    for name, p in w.parameters.items():
        for role in ("program", "knob"):
            g = getattr(p, role)
            if g is not None:
                within(f"parameters.{name}.{role}", g, np.asarray(p.bounds, dtype=float))
    if problems:
        raise ConfigurationError(f"{path}: " + "; ".join(problems))
    return lines


def build_substrate(
    wiring: str | Path | WiringMap, on_event: Callable[[str, str], None] | None = None
) -> InstrumentSubstrate:
    """An InstrumentSubstrate opened from a wiring map (for ``aeqprop train --wiring``).

    The caller must call ``close()`` (or use it as a context manager) on every exit path.
    """
    from drivers.hardware import InstrumentSubstrate

    w = wiring if isinstance(wiring, WiringMap) else load_wiring(wiring)
    return InstrumentSubstrate(w, on_event=on_event)


__all__ = ["list_instruments", "probe", "check_wiring", "protocol_betas", "build_substrate", "InstrumentError"]
