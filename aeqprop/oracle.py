"""Gradient checks: a protocol's update against the oracle, the oracle against finite differences.

The oracle (``true_gradient``, capability "oracle") is implicit differentiation
on a simulated substrate; it is the yardstick, never a training signal for an
agnostic protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeqprop.substrate import TrainingProtocol, require


@dataclass(frozen=True)
class Fidelity:
    """How close an estimate is to a reference: cosine similarity and relative error ||a - b|| / ||b||."""

    cosine: float
    rel_error: float


def flatten(d: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    names = sorted(d) if names is None else names
    return np.concatenate([np.ravel(d[n]) for n in names])


def fidelity(estimate: np.ndarray, reference: np.ndarray) -> Fidelity:
    ne, nr = np.linalg.norm(estimate), np.linalg.norm(reference)
    cos = float(estimate @ reference / (ne * nr)) if ne > 0 and nr > 0 else float("nan")
    rel = float(np.linalg.norm(estimate - reference) / nr) if nr > 0 else float("inf")
    return Fidelity(cos, rel)


def compare(estimate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, Fidelity]:
    """Fidelity per tensor, and over all of them under the key ``"all"``."""
    out = {n: fidelity(np.ravel(estimate[n]), np.ravel(reference[n])) for n in sorted(reference)}
    out["all"] = fidelity(flatten(estimate, sorted(reference)), flatten(reference))
    return out


def finite_difference(
    substrate: Any, x: np.ndarray, y: np.ndarray, h: float = 1e-6, entries: int | None = None, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Central differences of the loss, ``(L(theta + h e) - L(theta - h e)) / 2h``.

    ``entries`` limits the check to that many randomly chosen entries per tensor.
    Returns (gradient per tensor, mask of the entries computed). Parameters are restored.
    """
    require(substrate, {"oracle", "eqprop"}, "finite differences")
    rng = np.random.default_rng(seed)
    theta = substrate.parameters()
    grads, masks = {}, {}
    try:
        for name, value in theta.items():
            g = np.zeros_like(value)
            mask = np.zeros(value.shape, dtype=bool)
            flat = np.arange(value.size)
            if entries is not None and entries < value.size:
                flat = rng.choice(value.size, entries, replace=False)
            for k in flat:
                i = np.unravel_index(k, value.shape)
                losses = []
                for sign in (1.0, -1.0):
                    probe = value.copy()
                    probe[i] += sign * h
                    substrate.set_parameters({name: probe})
                    losses.append(substrate.loss(x, y))
                substrate.set_parameters({name: value})
                g[i] = (losses[0] - losses[1]) / (2 * h)
                mask[i] = True
            grads[name], masks[name] = g, mask
    finally:
        substrate.set_parameters(theta)
    return grads, masks


def protocol_update(substrate: Any, protocol: TrainingProtocol, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The parameter change of one ``protocol.step``; parameters and knobs are restored afterwards."""
    theta = substrate.parameters()
    knobs = substrate.knobs() if "aeqprop" in substrate.info.capabilities else None
    try:
        return dict(protocol.step(substrate, x, y).delta)
    finally:
        substrate.set_parameters(theta)
        if knobs is not None:
            substrate.set_knobs(knobs)


def update_fidelity(substrate: Any, protocol: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Fidelity]:
    """Compare a protocol's update with ``-lr * grad L`` (lr per tensor from ``protocol.expected_rates``)."""
    delta = protocol_update(substrate, protocol, x, y)
    grad = substrate.true_gradient(x, y)
    lr = protocol.expected_rates(substrate)
    return compare(delta, {n: -lr[n] * grad[n] for n in grad})
