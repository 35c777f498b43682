"""The wiring map (TOML, validated by pydantic): which instrument channel plays which role.

Roles: ``inputs`` (one channel per input i), ``outputs`` (per output j),
``nudge`` (a target source per output j and one strength channel: the
conductance beta in S toward the targets), per parameter tensor ``knob``,
``readout``, ``program`` and ``gradient`` groups (one channel per entry,
row-major), ``hold`` (the line that releases the floating parameters) and an
optional ``homeostasis`` trigger. A group gives ``channels = [...]`` or
``first = N`` (consecutive), a ``scale`` (channel value = scale * substrate
value) and, for sources, ``limits``. See examples/wiring-*.toml and docs/hardware.md.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aeqprop.errors import ConfigurationError

if TYPE_CHECKING:
    from aeqprop.substrate import SubstrateInfo

PROFILE_NAMES = ("keithley2450", "keysight-b2900", "multichannel", "board")

#: Channel layout of a ``multichannel`` instrument serving a whole substrate (the virtual lab):
#: first channel of each role; parameters are flattened tensor by tensor, row-major.
LAB_CHANNELS = {
    "input": 1001,
    "output": 2001,
    "beta": 3000,
    "target": 3001,
    "hold": 9000,
    "homeostasis": 9001,
    "knob": 100001,
    "readout": 200001,
    "program": 300001,
    "gradient": 400001,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Instrument(Strict):
    """One instrument. Example: ``{address = "TCPIP0::127.0.0.1::5025::SOCKET", profile = "multichannel"}``."""

    address: str
    profile: Literal["keithley2450", "keysight-b2900", "multichannel", "board"]
    timeout: float = Field(2.0, gt=0, description="read timeout, s")
    write_timeout: float | None = Field(None, gt=0, description="write timeout, s")
    min_interval: float = Field(0.0, ge=0, description="least time between two commands, s")
    retries: int = Field(2, ge=0, le=10)
    backend: str = "@py"  # pyvisa backend; "file.yaml@sim" for pyvisa-sim
    baudrate: int = 115200


class Limits(Strict):
    """Limits of a source channel, in channel units (V or A).

    ``range`` bounds every value; ``compliance`` (A) is programmed at start;
    ``max_step`` is the largest change in one write (larger changes are ramped
    in steps of max_step, ``ramp_rate`` units per s); ``settle`` s are waited
    after a write before measuring.
    """

    range: tuple[float, float]
    compliance: float | None = Field(None, gt=0)
    max_step: float | None = Field(None, gt=0)
    ramp_rate: float | None = Field(None, gt=0)
    settle: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> Limits:
        lo, hi = self.range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"range {self.range}: need finite low < high")
        return self


class Group(Strict):
    """Channels of one role on one instrument. Example: ``{instrument = "lab", first = 1001, limits = {range = [0, 1]}}``."""

    instrument: str
    channels: list[int] | None = None
    first: int | None = Field(None, ge=1)
    scale: float = 1.0
    kind: Literal["voltage", "current"] = "voltage"
    limits: Limits | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Group:
        if (self.channels is None) == (self.first is None):
            raise ValueError("give either channels = [...] or first = N")
        if self.scale == 0 or not np.isfinite(self.scale):
            raise ValueError("scale must be finite and non-zero")
        return self

    def resolve(self, count: int, role: str) -> list[int]:
        """The channel numbers, checked to be ``count`` of them."""
        if self.channels is not None:
            chs = list(self.channels)
        elif self.first is not None:
            chs = list(range(self.first, self.first + count))
        else:  # refused by _one_way; reachable only through model_construct
            raise ConfigurationError(f"{role}: give either channels = [...] or first = N")
        if len(chs) != count:
            raise ConfigurationError(f"{role} wires {len(chs)} channels but needs {count}; fix its channels list")
        return chs


class Hold(Group):
    """The hold line: 0 holds the parameters (the safe level), ``release_level`` releases them.

    ``release = "pulse"``: the instrument times the release (a pulse command);
    ``"timed"``: the controller sets the level, waits, and sets it back.
    ``time_scale`` is the seconds of release per protocol release unit.
    """

    release: Literal["pulse", "timed"] = "pulse"
    release_level: float = 1.0
    time_scale: float = Field(1.0, gt=0)
    joint_timeout: float = Field(10.0, gt=0, description="s allowed to settle jointly (release None)")
    max_seconds: float = Field(10.0, gt=0, description="longest release the controller sends, s")


class Trigger(Group):
    """A trigger line (native homeostasis): a pulse of ``width`` s at ``level`` (times ``scale`` on the channel).

    Where the instrument has no pulse command, the level and then 0 go out in two messages.
    """

    level: float = 1.0
    width: float = Field(1e-3, gt=0, description="trigger pulse length, s")


class Nudge(Strict):
    """Squared-cost nudging: sources at the targets y behind a conductance beta (``strength``, S)."""

    mode: Literal["target"] = "target"
    targets: Group
    strength: Group


class ParameterWiring(Strict):
    """One parameter tensor. ``bounds`` are the physical range of theta (substrate units)."""

    shape: list[int]
    bounds: tuple[float, float]
    knob: Group | None = None
    readout: Group | None = None
    program: Group | None = None
    gradient: Group | None = None


class Relax(Strict):
    """How relax() waits: ``settle`` s after the writes, then, if ``poll``, reads until stable."""

    settle: float = Field(0.0, ge=0)
    poll: bool = False
    poll_tol: float = Field(1e-4, gt=0)
    max_polls: int = Field(50, ge=2)
    poll_interval: float = Field(0.0, ge=0)


class WiringMap(Strict):
    description: str = ""
    instruments: dict[str, Instrument]
    inputs: Group
    outputs: Group
    nudge: Nudge
    parameters: dict[str, ParameterWiring]
    hold: Hold | None = None
    homeostasis: Trigger | None = None
    relax: Relax = Relax()
    n_inputs: int = Field(ge=1)
    n_outputs: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> WiringMap:
        used: dict[tuple[str, int, bool], str] = {}  # a source-measure channel may both source and measure
        for role, group, count in self.groups():
            if group.instrument not in self.instruments:
                raise ValueError(f"{role} names instrument {group.instrument!r}, not among {sorted(self.instruments)}")
            for ch in group.resolve(count, role):
                key = (group.instrument, ch, role in self.source_roles())
                if key in used:
                    raise ValueError(f"channel {ch} of {group.instrument} is wired twice ({used[key]} and {role})")
                used[key] = role
            if role in self.source_roles() and group.limits is None:
                raise ValueError(f"{role} is a source and needs limits = {{range = [low, high], ...}}")
            if group.limits is not None:
                self._within_device(role, group, group.limits)
        for name, p in self.parameters.items():
            lo, hi = p.bounds
            for role in ("program", "knob"):
                g = getattr(p, role)
                if g is not None and role == "program":
                    a, b = sorted((lo * g.scale, hi * g.scale))
                    if a < g.limits.range[0] or b > g.limits.range[1]:
                        raise ValueError(
                            f"parameters.{name}.program limits {g.limits.range} do not cover the bounds "
                            f"{p.bounds} times scale {g.scale}"
                        )
        return self

    def _within_device(self, role: str, group: Group, limits: Limits) -> None:
        """The bench limits of a group must lie inside its instrument profile's device range."""
        from drivers.scpi_profiles import PROFILES

        profile = PROFILES.get(self.instruments[group.instrument].profile)
        if profile is None:  # the board: its ranges are the wiring map's
            return
        device = profile.voltage_range if group.kind == "voltage" else profile.current_range
        lo, hi = limits.range
        if device is not None and not (device[0] <= lo and hi <= device[1]):
            unit = "V" if group.kind == "voltage" else "A"
            raise ValueError(
                f"{role} limits [{lo}, {hi}] {unit} exceed the {profile.name}'s source range "
                f"[{device[0]}, {device[1]}] {unit}; narrow the range in the wiring map"
            )

    def source_roles(self) -> set[str]:
        roles = {"inputs", "nudge.targets", "nudge.strength", "hold", "homeostasis"}
        for name in self.parameters:
            roles |= {f"parameters.{name}.knob", f"parameters.{name}.program"}
        return roles

    def groups(self) -> list[tuple[str, Group, int]]:
        """(role, group, channel count) for every wired role."""
        out = [
            ("inputs", self.inputs, self.n_inputs),
            ("outputs", self.outputs, self.n_outputs),
            ("nudge.targets", self.nudge.targets, self.n_outputs),
            ("nudge.strength", self.nudge.strength, 1),
        ]
        if self.hold is not None:
            out.append(("hold", self.hold, 1))
        if self.homeostasis is not None:
            out.append(("homeostasis", self.homeostasis, 1))
        for name, p in self.parameters.items():
            size = int(np.prod(p.shape, dtype=int))
            for role in ("knob", "readout", "program", "gradient"):
                g = getattr(p, role)
                if g is not None:
                    out.append((f"parameters.{name}.{role}", g, size))
        return out

    def capabilities(self) -> frozenset[str]:
        ps = self.parameters.values()
        caps = set()
        if ps and all(p.program is not None and p.gradient is not None for p in ps):
            caps.add("eqprop")
        if ps and self.hold is not None and all(p.knob is not None and p.readout is not None for p in ps):
            caps.add("aeqprop")
            if self.homeostasis is not None:
                caps.add("homeostasis")
        return frozenset(caps)


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the map"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_wiring(data: dict, source: str = "wiring map") -> WiringMap:
    """Validate a wiring map given as a dict; ConfigurationError in one line on any problem."""
    try:
        return WiringMap.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"{source}: {_one_line(exc)}") from None


def load_wiring(path: str | Path) -> WiringMap:
    """Read and validate a wiring map TOML file (nothing is opened or sent)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"wiring map {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"wiring map {path} is not valid TOML: {exc}") from None
    return parse_wiring(data, str(path))


def lab_wiring_toml(
    info: SubstrateInfo,
    address: str,
    profile: str = "multichannel",
    timeout: float = 2.0,
    retries: int = 3,
    knob_range: float = 100.0,
) -> str:
    """A wiring map (TOML text) for an instrument laid out as ``LAB_CHANNELS`` serving a substrate with this info."""
    C = LAB_CHANNELS
    big = f"limits = {{ range = [{-knob_range}, {knob_range}] }}"
    lines = [
        f'description = "virtual lab: {info.description}"',
        f"n_inputs = {info.n_inputs}",
        f"n_outputs = {info.n_outputs}",
        "",
        "[instruments.lab]",
        f'address = "{address}"',
        f'profile = "{profile}"',
        f"timeout = {timeout}",
        f"retries = {retries}",
        "",
        "[inputs]",
        'instrument = "lab"',
        f"first = {C['input']}",
        "limits = { range = [-10.0, 10.0] }",
        "",
        "[outputs]",
        'instrument = "lab"',
        f"first = {C['output']}",
        "",
        "[nudge.targets]",
        'instrument = "lab"',
        f"first = {C['target']}",
        "limits = { range = [-10.0, 10.0] }",
        "",
        "[nudge.strength]",
        'instrument = "lab"',
        f"channels = [{C['beta']}]",
        "limits = { range = [-0.99, 100.0] }",
        "",
        "[hold]",
        'instrument = "lab"',
        f"channels = [{C['hold']}]",
        "limits = { range = [0.0, 1.0] }",
        "",
        "[homeostasis]",
        'instrument = "lab"',
        f"channels = [{C['homeostasis']}]",
        "limits = { range = [0.0, 1.0] }",
        "",
    ]
    offset = 0
    for name, shape in info.parameter_shapes.items():
        lo, hi = info.parameter_bounds[name]
        lines += [
            f"[parameters.{name}]",
            f"shape = {list(shape)}",
            f"bounds = [{lo}, {hi}]",
            f'knob = {{ instrument = "lab", first = {C["knob"] + offset}, {big} }}',
            f'readout = {{ instrument = "lab", first = {C["readout"] + offset} }}',
            f'program = {{ instrument = "lab", first = {C["program"] + offset}, {big} }}',
            f'gradient = {{ instrument = "lab", first = {C["gradient"] + offset} }}',
            "",
        ]
        offset += int(np.prod(shape, dtype=int))
    return "\n".join(lines)
