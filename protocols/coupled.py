"""Coupled learning (Stern et al. 2021; Dillavou et al. 2022), ALGORITHMS.md section 6.

Free phase: settle with the inputs clamped, read the outputs o_free. Clamped
phase: hold the outputs at ``t = (1 - eta) o_free + eta y`` and settle the rest.
The update contrasts the two states::

    d theta = -(lr / eta) [dE/dtheta(s_clamped) - dE/dtheta(s_free)]

Not a gradient method even as eta -> 0; a baseline that physical learning
machines use.

Clamping through nudging: the contract has no output clamp, so the outputs
are nudged toward t with a large strength ``clamp_beta``. With the squared
cost and unit output self-energy the output settles at
``(drive + clamp_beta t) / (1 + clamp_beta)``: within ``|drive - t| / (1 + clamp_beta)``
of t (about 1e-3 at the default 1000). The hidden units then settle against
those outputs, as under a true clamp; dE/dtheta is the energy's alone (the
nudging cost has no parameters), so the approximation enters only through the
O(1 / clamp_beta) residue of the outputs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import StepReport, Substrate, require
from protocols.base import as_eqprop, check_beta, free_phase, rates, sgd_update


class CoupledLearning:
    """Coupled learning with outputs clamped between their free value and the target.

    Example: ``CoupledLearning(eta=0.5, lr=0.1, clamp_beta=1000.0)``.
    """

    name = "coupled"
    description = "Coupled learning: clamp outputs to (1-eta) o_free + eta y, contrast the two states"
    requires = frozenset({"eqprop"})

    def __init__(
        self, eta: float = 0.5, lr: float | Mapping[str, float] = 0.1, clamp_beta: float = 1000.0, seed: int = 0
    ) -> None:
        eta = float(eta)
        if not (np.isfinite(eta) and 0.0 < eta <= 1.0):
            raise ConfigurationError(f"eta={eta}: the clamping fraction must be in (0, 1]")
        self.eta = eta
        self.clamp_beta = check_beta(clamp_beta)
        self.lr = lr

    def expected_rates(self, substrate: Substrate) -> dict[str, float]:
        return rates(self.lr, substrate.info.parameter_shapes)

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        require(substrate, self.requires, "coupled learning")
        substrate = as_eqprop(substrate, "coupled learning")
        report = StepReport(loss=0.0, outputs=np.empty(0), delta={})
        report.loss, report.outputs, _ = free_phase(substrate, x, y, report)
        g_free = substrate.energy_gradients()
        target = (1.0 - self.eta) * report.outputs + self.eta * np.asarray(y, dtype=np.float64)
        substrate.nudge(self.clamp_beta, target)
        report.record("clamped", substrate.relax())
        report.extra["clamp_residual"] = float(np.max(np.abs(substrate.outputs() - target)))
        g_clamped = substrate.energy_gradients()
        substrate.nudge(0.0)
        t0 = time.perf_counter()
        contrast = {n: (g_clamped[n] - g_free[n]) / self.eta for n in g_free}
        report.delta = sgd_update(substrate, contrast, rates(self.lr, contrast))
        report.seconds["update"] = time.perf_counter() - t0
        return report
