"""Equilibrium propagation: the controller measures dE/dtheta at two equilibria and programs theta.

    g_hat = (dE/dtheta(s_beta2) - dE/dtheta(s_beta1)) / (beta2 - beta1)

| variant     | beta1 | beta2           | bias of g_hat |
|-------------|-------|-----------------|---------------|
| positive    | 0     | +b              | O(b)          |
| negative    | -b    | 0               | O(b)          |
| centered    | -b    | +b              | O(b^2)        |
| random-sign | 0     | +/-b per batch  | O(b), cancels on average |
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from aeqprop.substrate import EqPropSubstrate, StepReport, Substrate, require
from protocols.averaging import averaged, check_averages
from protocols.base import (
    as_eqprop,
    check_beta,
    check_nudging,
    check_variant,
    free_phase,
    rates,
    round_trips,
    sgd_update,
)

VARIANTS = {"centered": (-1.0, 1.0), "positive": (0.0, 1.0), "negative": (-1.0, 0.0), "random-sign": None}


class EqProp:
    """EqProp with a variant of nudging.

    Example: ``EqProp(beta=0.5, lr={"W": 0.1, "b": 0.05}, variant="centered")``.
    ``averages`` repeats each measurement (dE/dtheta per phase, theta before
    programming) that many times and averages, against read noise.
    """

    name = "eqprop"
    description = "Equilibrium propagation: measure dE/dtheta at two nudged equilibria, program theta"
    requires = frozenset({"eqprop"})

    def __init__(
        self,
        beta: float = 0.5,
        lr: float | Mapping[str, float] = 0.1,
        variant: str = "centered",
        seed: int = 0,
        averages: int = 1,
    ) -> None:
        self.beta = check_beta(beta)
        self.averages = check_averages(averages)
        self.lr = lr
        self.variant = check_variant(variant, VARIANTS, "eqprop")
        check_nudging((-self.beta, self.beta) if variant == "random-sign" else self.betas(), f"eqprop {variant}")
        self.rng = np.random.default_rng(seed)

    def betas(self) -> tuple[float, float]:
        """The two nudging strengths of the next step."""
        if self.variant == "random-sign":
            sign = 1.0 if self.rng.random() < 0.5 else -1.0
            return (0.0, sign * self.beta) if sign > 0 else (sign * self.beta, 0.0)
        pair = VARIANTS[self.variant]
        assert pair is not None  # only random-sign has none, handled above
        lo, hi = pair
        return lo * self.beta, hi * self.beta

    def expected_rates(self, substrate: Substrate) -> dict[str, float]:
        """Learning rate per tensor: the update is ``-lr * g_hat``."""
        return rates(self.lr, substrate.info.parameter_shapes)

    def estimate(
        self, substrate: EqPropSubstrate, x: np.ndarray, y: np.ndarray, report: StepReport | None = None
    ) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
        """Return (g_hat, loss, outputs), leaving the parameters untouched."""
        beta1, beta2 = self.betas()
        loss, o, _ = free_phase(substrate, x, y, report)
        grads: dict[str, dict[str, np.ndarray]] = {}
        if 0.0 in (beta1, beta2):  # measured at the free equilibrium, before any nudging
            free = averaged(substrate.energy_gradients, self.averages)
        for phase, beta in (("beta1", beta1), ("beta2", beta2)):
            if beta == 0.0:
                grads[phase] = free
                continue
            substrate.nudge(beta, y)
            rep = substrate.relax()
            if report is not None:
                report.record(phase, rep)
            grads[phase] = averaged(substrate.energy_gradients, self.averages)
        g_hat = {n: (grads["beta2"][n] - grads["beta1"][n]) / (beta2 - beta1) for n in grads["beta1"]}
        substrate.nudge(0.0)
        return g_hat, loss, o

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        require(substrate, self.requires, "eqprop")
        substrate = as_eqprop(substrate, "eqprop")
        report = StepReport(loss=0.0, outputs=np.empty(0), delta={})
        trips = round_trips(substrate)
        g_hat, report.loss, report.outputs = self.estimate(substrate, x, y, report)
        t0 = time.perf_counter()
        if self.averages == 1:
            report.delta = sgd_update(substrate, g_hat, rates(self.lr, g_hat))
        else:
            report.delta = self._averaged_update(substrate, g_hat, rates(self.lr, g_hat))
        report.seconds["update"] = time.perf_counter() - t0
        report.round_trips = round_trips(substrate) - trips
        return report

    def _averaged_update(
        self, substrate: EqPropSubstrate, g_hat: dict[str, np.ndarray], lr: dict[str, float]
    ) -> dict[str, np.ndarray]:
        """sgd_update with theta read ``averages`` times before and after programming."""
        theta = averaged(substrate.parameters, self.averages)
        substrate.set_parameters({n: theta[n] - lr[n] * g_hat[n] for n in g_hat})
        after = averaged(substrate.parameters, self.averages)
        return {n: after[n] - theta[n] for n in theta}
