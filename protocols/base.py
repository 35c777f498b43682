"""Pieces shared by the protocols: the free phase, learning rates per tensor, updates."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import cast

import numpy as np

from aeqprop.checks import check_nudging  # noqa: F401  (re-exported: the protocols check their nudging)
from aeqprop.errors import ConfigurationError
from aeqprop.substrate import (  # noqa: F401  (TrainingProtocol re-exported)
    AeqpropSubstrate,
    EqPropSubstrate,
    HomeostasisSubstrate,
    OracleSubstrate,
    RelaxReport,
    StepReport,
    Substrate,
    TrainingProtocol,
)


def check_beta(beta: float) -> float:
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0:
        raise ConfigurationError(f"beta={beta}: the nudging strength must be a finite number > 0")
    return beta


def check_variant(variant: str, valid: Mapping[str, object], who: str) -> str:
    if variant not in valid:
        raise ConfigurationError(f"unknown {who} variant {variant!r}; valid: {', '.join(valid)}")
    return variant


def _added_methods(proto: type) -> tuple[str, ...]:
    """The methods a capability Protocol adds to the Substrate contract (its capability bases' included)."""
    return tuple(
        sorted(
            {
                name
                for cls in proto.__mro__
                if Substrate in cls.__mro__ and cls is not Substrate
                for name, value in vars(cls).items()
                if callable(value) and not name.startswith("_")
            }
        )
    )


#: Per capability Protocol, the methods a substrate must have to be narrowed to it.
CAPABILITY_METHODS: dict[type, tuple[str, ...]] = {
    proto: _added_methods(proto) for proto in (EqPropSubstrate, AeqpropSubstrate, HomeostasisSubstrate, OracleSubstrate)
}


def _check(substrate: Substrate, proto: type, capability: str, who: str) -> None:
    """Refuse a substrate without the methods of a capability it claims (after ``require``).

    What ``isinstance(substrate, proto)`` checks beyond the contract, at a fraction of its cost
    (13 us, a few % of a small network's step, once per step).
    """
    missing = [m for m in CAPABILITY_METHODS[proto] if not callable(getattr(substrate, m, None))]
    if missing:
        raise ConfigurationError(
            f"{who}: the {type(substrate).__name__} claims capability {capability!r} but lacks {', '.join(missing)}()"
        )


def as_eqprop(substrate: Substrate, who: str) -> EqPropSubstrate:
    """The substrate narrowed to capability "eqprop" (energy_gradients, set_parameters)."""
    _check(substrate, EqPropSubstrate, "eqprop", who)
    return cast(EqPropSubstrate, substrate)  # its methods checked just above


def as_aeqprop(substrate: Substrate, who: str) -> AeqpropSubstrate:
    """The substrate narrowed to capability "aeqprop" (knobs, set_knobs, release)."""
    _check(substrate, AeqpropSubstrate, "aeqprop", who)
    return cast(AeqpropSubstrate, substrate)  # its methods checked just above


def as_homeostasis(substrate: Substrate, who: str) -> HomeostasisSubstrate:
    """The substrate narrowed to capability "homeostasis" (on top of "aeqprop")."""
    _check(substrate, HomeostasisSubstrate, "homeostasis", who)
    return cast(HomeostasisSubstrate, substrate)  # its methods checked just above


def as_oracle(substrate: Substrate, who: str) -> OracleSubstrate:
    """The substrate narrowed to capability "oracle" (loss, true_gradient)."""
    _check(substrate, OracleSubstrate, "oracle", who)
    return cast(OracleSubstrate, substrate)  # its methods checked just above


def rates(lr: float | Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """One learning rate per tensor from a float or a dict keyed by tensor name or kind ("W", "b")."""
    out = {}
    for n in names:
        if isinstance(lr, Mapping):
            v = lr.get(n, lr.get(n.rstrip("0123456789")))
            if v is None:
                raise ConfigurationError(f"lr gives no value for tensor {n!r} (keys: {sorted(lr)})")
        else:
            v = lr
        v = float(v)
        if not np.isfinite(v) or v < 0:
            raise ConfigurationError(f"lr[{n}] = {v}: must be a finite number >= 0")
        out[n] = v
    return out


def free_phase(
    substrate: Substrate, x: np.ndarray, y: np.ndarray, report: StepReport | None = None
) -> tuple[float, np.ndarray, RelaxReport]:
    """Clamp x, remove nudging, settle; return (loss, outputs, relaxation) of the free equilibrium."""
    substrate.clamp(x)
    substrate.nudge(0.0)
    rep = substrate.relax()
    if report is not None:
        report.record("free", rep)
    o = substrate.outputs()
    d = o - y
    loss = float(0.5 * np.square(d, out=d).sum() / o.shape[0])
    return loss, o, rep


def round_trips(substrate: Substrate) -> int:
    """Instrument exchanges so far (an instrument substrate counts them; a simulation has none)."""
    return int(getattr(substrate, "round_trips", 0))


def difference(after: Mapping[str, np.ndarray], before: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: after[n] - before[n] for n in before}


def step_change(after: Mapping[str, np.ndarray], before: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """A step report's parameter change, ``after - before``. Between read-only snapshots (a substrate
    that replaces its arrays instead of writing them, as the Hopfield network does) it is computed
    when first read: the change is rarely read, and computing it is a pass over every parameter."""
    if all(not a.flags.writeable for a in (*after.values(), *before.values())):
        return Difference(after, before)
    return difference(after, before)


class Difference(Mapping[str, np.ndarray]):
    """``after[n] - before[n]``, computed on first read of each tensor (the snapshots never change)."""

    def __init__(self, after: Mapping[str, np.ndarray], before: Mapping[str, np.ndarray]):
        self._after, self._before = after, before
        self._done: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        d = self._done.get(name)
        if d is None:
            d = self._done[name] = self._after[name] - self._before[name]
        return d

    def __iter__(self) -> Iterator[str]:
        return iter(self._before)

    def __len__(self) -> int:
        return len(self._before)


def sgd_update(
    substrate: EqPropSubstrate, gradients: Mapping[str, np.ndarray], lr: Mapping[str, float]
) -> Mapping[str, np.ndarray]:
    """theta <- theta - lr * g, programmed through set_parameters (clipped to bounds). Returns the change."""
    theta = substrate.parameters()
    substrate.set_parameters({n: theta[n] - lr[n] * gradients[n] for n in gradients})
    return step_change(substrate.parameters(), theta)
