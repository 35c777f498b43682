"""What a checkpoint saves of a substrate, and how it is put back when a run resumes.

theta and, with the capability "aeqprop", the knobs u: read through the contract, or taken exactly
from a substrate that offers its true device state (``DeviceStateSubstrate``, e.g. the nonideal
wrapper, whose reads are noisy). A substrate that cannot program theta resumes only where it still
holds the checkpoint's theta (``check_restorable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import AeqpropSubstrate, EqPropSubstrate, Substrate


@runtime_checkable
class DeviceStateSubstrate(Protocol):
    """Optional for a substrate: its true device state, saved and put back without side effects.

    Example: the nonideal wrapper; ``device_state()`` -> ``{"parameters": {...}, "knobs": {...} or None,
    "random": {...}}`` (no read noise drawn), which ``restore_device_state`` puts back exactly.
    """

    def device_state(self) -> dict[str, Any]: ...

    def restore_device_state(self, state: Mapping[str, Any]) -> None: ...


Arrays = dict[str, np.ndarray]


class Snapshot(TypedDict):
    """What a checkpoint saves of a substrate: theta and, with the capability "aeqprop", the knobs u."""

    parameters: Arrays
    knobs: Arrays | None


def snapshot(sub: Substrate, knobbed: bool) -> Snapshot:
    """The state a checkpoint saves: the true device state where the substrate offers it without side
    effects (``device_state``, e.g. the nonideal wrapper: no read noise drawn), else what it reads.
    ``knobbed``: the substrate has the capability "aeqprop" (its knobs are saved)."""
    if isinstance(sub, DeviceStateSubstrate):
        state = sub.device_state()
        return {"parameters": state["parameters"], "knobs": state["knobs"] if knobbed else None}
    knobs = sub.knobs() if knobbed and isinstance(sub, AeqpropSubstrate) else None
    return {"parameters": sub.parameters(), "knobs": knobs}


def restore(sub: Substrate, parameters: Arrays, knobs: Arrays | None) -> None:
    """Put a checkpoint's state back: exactly (``restore_device_state``) where the substrate offers it,
    else through its programming path."""
    if isinstance(sub, DeviceStateSubstrate):
        sub.restore_device_state({"parameters": parameters, "knobs": knobs})
        return
    if "eqprop" in sub.info.capabilities and isinstance(sub, EqPropSubstrate):  # else check_restorable found
        sub.set_parameters(parameters)  # theta held as it was
    if knobs is not None and isinstance(sub, AeqpropSubstrate):
        sub.set_knobs(knobs)


def check_restorable(substrate: Substrate, checkpoint: dict[str, Any] | None, status: str, atol: float = 1e-9) -> None:
    """Refuse, before the run's status is touched, to resume on a substrate that cannot program theta
    (no "eqprop" capability: an Aeqprop-only bench) unless it still holds the checkpoint's theta
    (within ``atol``, parameter units); its knobs are then restored as usual."""
    if checkpoint is None or "eqprop" in substrate.info.capabilities:
        return
    now = substrate.parameters()
    off = max(float(np.max(np.abs(np.asarray(now[n]) - v))) for n, v in checkpoint["parameters"].items())
    if off > atol:
        raise ConfigurationError(
            f"this substrate cannot program its parameters (no eqprop wiring) and they differ from the "
            f"checkpoint's by up to {off:.3g}; the run stays {status}. Resume on the bench that still holds them, "
            "or wire program channels"
        )
