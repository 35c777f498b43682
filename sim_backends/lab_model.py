"""The virtual lab's model: a simulated substrate's operations as instrument channels.

:class:`LabModel` maps channel writes and reads (layout in ``CHANNELS``) to
substrate calls; :class:`Faults` describes the faults the servers in
:mod:`sim_backends.virtual_lab` inject. Writes to one channel group (inputs,
nudging, knobs, programmed parameters) are applied as one substrate call when a
message ends or another group or an action begins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from aeqprop.substrate import AeqpropSubstrate, EqPropSubstrate, HomeostasisSubstrate, Substrate
from drivers.wiring import LAB_CHANNELS

#: First channel of each role (the layout drivers.wiring.lab_wiring_toml wires).
CHANNELS = LAB_CHANNELS


@dataclass
class Faults:
    """Fault injection, probabilities per reply. Example: ``Faults(drop=0.01, garble=0.01, seed=1)``."""

    delay: float = 0.0  # s before each reply
    drop: float = 0.0
    garble: float = 0.0
    disconnect: float = 0.0
    compliance_trip: float = 0.0  # per message that sets a level
    settle: float = 0.0  # s that each relax (INIT / SETTLE) takes
    late: float = 0.0  # probability that a reply comes late_seconds late (after the message was acted on)
    late_seconds: float = 0.5
    reset: float = 0.0  # board only: probability per message that the board reboots before acting on it
    nan: float = 0.0  # probability that a reading is NaN (a board sends "nan", SCPI its overflow value 9.91e37)
    seed: int = 0


#: SCPI error number for each lab error code (the board protocol's codes, docs/board-protocol.md).
SCPI_ERRORS = {
    2: (-224, "Illegal parameter value"),
    3: (-113, "Undefined header"),
    4: (-224, "Illegal parameter value"),
    5: (-222, "Data out of range"),
    6: (-9001, "Compliance tripped"),
    7: (-200, "Execution error"),
}


class LabError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text

    def scpi(self) -> str:
        """The SCPI error-queue entry: ``-222,"Data out of range; <text>"``."""
        number, meaning = SCPI_ERRORS.get(self.code, (-200, "Execution error"))
        return f'{number},"{meaning}; {self.text.replace(chr(34), chr(39))}"'


#: The lab's own limits per source group, V (what its DACs can do; a wiring map's limits must lie inside).
LAB_RANGES = {
    "input": (-10.0, 10.0),
    "target": (-10.0, 10.0),
    "beta": (-1.0, 100.0),
    "hold": (0.0, 10.0),
    "homeostasis": (0.0, 10.0),
    "knob": (-1000.0, 1000.0),
    "program": (-1000.0, 1000.0),
}


class LabModel:
    """Channels over a substrate (thread-safe). Sources: inputs, beta, targets, hold, homeostasis, knobs, program."""

    def __init__(self, substrate: Substrate, update_seconds: float = 1.0) -> None:
        self.sub = substrate
        info = substrate.info
        self.update_seconds = float(update_seconds)
        self.names = list(info.parameter_shapes)
        self.shapes = dict(info.parameter_shapes)
        self.n_params = info.n_parameters
        c = CHANNELS
        self.groups = {
            "input": (c["input"], info.n_inputs),
            "output": (c["output"], info.n_outputs),
            "target": (c["target"], info.n_outputs),
            "beta": (c["beta"], 1),
            "hold": (c["hold"], 1),
            "homeostasis": (c["homeostasis"], 1),
            "knob": (c["knob"], self.n_params),
            "readout": (c["readout"], self.n_params),
            "program": (c["program"], self.n_params),
            "gradient": (c["gradient"], self.n_params),
        }
        self.levels = {g: np.zeros(n) for g, (_, n) in self.groups.items()}
        self.levels["knob"] = (
            self._flat(self._aeqprop().knobs()) if "aeqprop" in info.capabilities else self.levels["knob"]
        )
        self.outputs_on: set[int] = set()
        self.compliance: dict[int, float] = {}
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self.pending: str | None = None
        self.calls: list[str] = []  # substrate operations, in order (for tests)
        self.actions = 0  # non-idempotent actions done (relax, pulses, trigger edges): SCPI SYST:ACT:COUN?

    # -- channel map ---------------------------------------------------------------
    def locate(self, ch: int) -> tuple[str, int]:
        for g, (first, n) in self.groups.items():
            if first <= ch < first + n:
                return g, ch - first
        raise LabError(4, f"no such channel {ch}")

    def _flat(self, d: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(d[n]) for n in self.names]) if self.names else np.zeros(0)

    def _unflat(self, v: np.ndarray) -> dict[str, np.ndarray]:
        out, i = {}, 0
        for n in self.names:
            size = int(np.prod(self.shapes[n], dtype=int))
            out[n] = v[i : i + size].reshape(self.shapes[n]).copy()
            i += size
        return out

    # -- operations ----------------------------------------------------------------
    def check(self, ch: int, value: float) -> str:
        """The group of source channel ``ch``; LabError if the channel or value is not acceptable."""
        group, _ = self.locate(ch)
        if group in ("output", "readout", "gradient"):
            raise LabError(4, f"channel {ch} ({group}) is a measurement channel")
        lo, hi = LAB_RANGES[group]
        if not np.isfinite(value):
            raise LabError(2, f"illegal value {value!r} for channel {ch}")
        if not lo <= value <= hi:
            raise LabError(5, f"{value!r} on channel {ch} is outside the lab's range [{lo}, {hi}]")
        return group

    def set(self, ch: int, value: float) -> None:
        group = self.check(ch, value)
        i = self.locate(ch)[1]
        if group != self.pending:
            self.flush()
        before, self.levels[group][i] = self.levels[group][i], value
        if group == "hold":
            if value != 0.0 and before == 0.0:  # a rising edge releases
                self.actions += 1
                self._call("release(None)", lambda: self._aeqprop().release(None))
        elif group == "homeostasis":
            if value != 0.0 and before == 0.0:  # a rising edge triggers
                self._homeostasis()
        else:
            self.pending = group

    def flush(self) -> None:
        """Apply the pending group of writes as one substrate call."""
        group, self.pending = self.pending, None
        lv = self.levels
        if group == "input":
            self._call("clamp", lambda: self.sub.clamp(lv["input"][None, :].copy()))
        elif group in ("target", "beta"):
            beta = float(lv["beta"][0])
            y = lv["target"][None, :].copy() if beta != 0.0 else None
            self._call("nudge", lambda: self.sub.nudge(beta, y))
        elif group == "knob":
            self._call("set_knobs", lambda: self._aeqprop().set_knobs(self._unflat(lv["knob"])))
        elif group == "program":
            self._call("set_parameters", lambda: self._eqprop().set_parameters(self._unflat(lv["program"])))

    # -- the substrate narrowed to a capability: an operation it lacks fails as the instrument's error 5
    def _eqprop(self) -> EqPropSubstrate:
        if not isinstance(self.sub, EqPropSubstrate):
            raise LabError(5, f"the {type(self.sub).__name__} cannot read or program its parameters (no 'eqprop')")
        return self.sub

    def _aeqprop(self) -> AeqpropSubstrate:
        if not isinstance(self.sub, AeqpropSubstrate):
            raise LabError(5, f"the {type(self.sub).__name__} has no knobs (no 'aeqprop')")
        return self.sub

    def _homeostatic(self) -> HomeostasisSubstrate:
        if not isinstance(self.sub, HomeostasisSubstrate):
            raise LabError(5, f"the {type(self.sub).__name__} has no native homeostasis (no 'homeostasis')")
        return self.sub

    def _call(self, name: str, fn: Callable[[], object]) -> None:
        self.calls.append(name)
        try:
            fn()
        except Exception as exc:  # the physics refused: report it like an instrument would
            raise LabError(5, f"{name} failed: {exc}") from exc

    def relax(self) -> None:
        self.flush()
        self.actions += 1
        self._call("relax", self.sub.relax)

    def _homeostasis(self) -> None:
        self.actions += 1
        self._call("homeostasis", lambda: self._homeostatic().homeostasis())
        self.levels["knob"] = self._flat(self._aeqprop().knobs())

    def pulse(self, ch: int, seconds: float, level: float = 1.0) -> None:
        """A pulse on the hold line releases for ``seconds``; on the homeostasis line it triggers homeostasis."""
        group, _ = self.locate(ch)
        if group not in ("hold", "homeostasis"):
            raise LabError(
                4,
                f"channel {ch} cannot pulse (only the hold and homeostasis lines, "
                f"{CHANNELS['hold']} and {CHANNELS['homeostasis']})",
            )
        if not (seconds >= 0 and level != 0):
            raise LabError(5, f"pulse of {seconds} s at {level} V: need a length >= 0 s and a non-zero level")
        lo, hi = LAB_RANGES[group]
        if not lo <= level <= hi:
            raise LabError(5, f"pulse level {level!r} on channel {ch} is outside the lab's range [{lo}, {hi}]")
        self.flush()
        if group == "homeostasis":
            self._homeostasis()
        else:
            self.actions += 1
            self._call("release", lambda: self._aeqprop().release(seconds / self.update_seconds))

    def read(self, channels: list[int], source: bool = False) -> list[float]:
        self.flush()
        cache: dict[str, np.ndarray] = {}
        out = []
        for ch in channels:
            group, i = self.locate(ch)
            if group not in cache:
                if group == "output" and not source:
                    self.calls.append("outputs")
                    cache[group] = self.sub.outputs()[0]
                elif group == "readout":
                    cache[group] = self._flat(self.sub.parameters())
                elif group == "gradient":
                    self.calls.append("energy_gradients")
                    cache[group] = self._flat(self._eqprop().energy_gradients())
                elif group == "knob" and "aeqprop" in self.sub.info.capabilities:
                    cache[group] = self._flat(self._aeqprop().knobs())
                else:
                    cache[group] = self.levels[group]
            out.append(float(cache[group][i]))
        return out

    def output(self, channels: list[int], on: bool) -> None:
        for ch in channels:
            self.locate(ch)
            (self.outputs_on.add if on else self.outputs_on.discard)(ch)

    def safe(self) -> None:
        """The hold line to 0 first (parameters held), then every DAC to 0 V (inputs, nudging, knobs, trigger)
        and every output off. Programmed (non-volatile) parameters are left as they are."""
        self.pending = None
        self.levels["hold"][:] = 0.0
        for g in ("input", "target", "beta", "homeostasis", "knob"):
            self.levels[g][:] = 0.0
        if "aeqprop" in self.sub.info.capabilities:
            self._aeqprop().set_knobs(self._unflat(self.levels["knob"]))
        self.outputs_on.clear()

    def all_channels(self) -> list[int]:
        return [first + i for first, n in self.groups.values() for i in range(n)]
