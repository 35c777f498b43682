"""Oracle-gradient SGD: the "backprop" baseline on a simulated substrate (capability "oracle")."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from aeqprop.substrate import StepReport, Substrate, require
from protocols.base import as_eqprop, as_oracle, rates, sgd_update


class OracleSGD:
    """theta <- theta - lr * dL/dtheta, the true gradient by implicit differentiation.

    Example: ``OracleSGD(lr=0.1)``. Simulation only: it reads the model, which
    no agnostic protocol may do. It is the yardstick for the others.
    """

    name = "sgd-oracle"
    description = "SGD on the true gradient (implicit differentiation); simulation baseline"
    requires = frozenset({"eqprop", "oracle"})

    def __init__(self, lr: float | Mapping[str, float] = 0.1, seed: int = 0) -> None:
        self.lr = lr

    def expected_rates(self, substrate: Substrate) -> dict[str, float]:
        return rates(self.lr, substrate.info.parameter_shapes)

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        require(substrate, self.requires, self.name)
        t0 = time.perf_counter()
        grad = as_oracle(substrate, self.name).true_gradient(x, y)
        o = substrate.outputs()
        report = StepReport(loss=float(0.5 * np.sum((o - y) ** 2) / len(o)), outputs=o, delta={})
        report.seconds["free"] = time.perf_counter() - t0
        report.delta = sgd_update(as_eqprop(substrate, self.name), grad, rates(self.lr, grad))
        return report
