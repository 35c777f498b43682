"""Pieces shared by the protocols: the free phase, learning rates per tensor, updates."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import StepReport, Substrate, TrainingProtocol  # noqa: F401  (re-exported)


def check_beta(beta: float) -> float:
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0:
        raise ConfigurationError(f"beta={beta}: the nudging strength must be a finite number > 0")
    return beta


def check_nudging(betas: tuple[float, float], who: str) -> None:
    """Refuse a nudging strength <= -1: with the squared cost and unit output
    self-energy it destroys the minimum of F (the outputs run away)."""
    low = min(betas)
    if low <= -1.0:
        raise ConfigurationError(
            f"{who} nudges with beta={low:g}: beta <= -1 destroys the minimum of F with the squared cost; "
            "use a smaller --beta"
        )


def check_variant(variant: str, valid: Mapping[str, object], who: str) -> str:
    if variant not in valid:
        raise ConfigurationError(f"unknown {who} variant {variant!r}; valid: {', '.join(valid)}")
    return variant


def rates(lr: float | Mapping[str, float], names) -> dict[str, float]:
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


def free_phase(substrate: Substrate, x: np.ndarray, y: np.ndarray, report: StepReport | None = None):
    """Clamp x, remove nudging, settle; return (loss, outputs) of the free equilibrium."""
    substrate.clamp(x)
    substrate.nudge(0.0)
    rep = substrate.relax()
    if report is not None:
        report.record("free", rep)
    o = substrate.outputs()
    loss = float(0.5 * np.sum((o - y) ** 2) / o.shape[0])
    return loss, o, rep


def round_trips(substrate) -> int:
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


def sgd_update(substrate, gradients: Mapping[str, np.ndarray], lr: Mapping[str, float]) -> Mapping[str, np.ndarray]:
    """theta <- theta - lr * g, programmed through set_parameters (clipped to bounds). Returns the change."""
    theta = substrate.parameters()
    substrate.set_parameters({n: theta[n] - lr[n] * gradients[n] for n in gradients})
    return step_change(substrate.parameters(), theta)
