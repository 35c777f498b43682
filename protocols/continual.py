"""Continual equilibrium propagation (C-EP; Ernoult et al. 2020), ALGORITHMS.md section 6.

The free phase settles as in EqProp. In the nudged phase the state moves one
relaxation sweep at a time, and after every sweep t the parameters change by

    d theta_t = -(lr / beta) [dE/dtheta(s_(t+1)) - dE/dtheta(s_t)]

The sum telescopes to ``-(lr / beta) [dE/dtheta(s_T) - dE/dtheta(s_0)]``, the
positive-nudging EqProp update, except that the state after sweep t already
feels the parameters changed before it. The difference from EqProp is
therefore O(lr): Continual EqProp needs learning rates ~10x smaller.

Single sweeps: the substrate's ``max_sweeps`` attribute (simulated substrates)
is set to 1 for the nudged phase and restored afterwards; ``relax()`` is then
called until a sweep moves no unit by more than the substrate's ``tol`` or
the original sweep cap is reached.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import RelaxReport, StepReport, Substrate, require
from protocols.base import as_eqprop, check_beta, check_nudging, difference, free_phase, rates


@runtime_checkable
class SweepBudgeted(Protocol):
    """A settable cap on relaxation sweeps (simulated substrates). Example: ``sub.max_sweeps = 1``
    makes each ``relax()`` one sweep."""

    max_sweeps: int


class ContinualEqProp:
    """Continual EqProp: parameters follow every sweep of the nudged phase.

    Example: ``ContinualEqProp(beta=0.5, lr=0.01)``. ``max_steps`` caps the
    sweeps of the nudged phase (default: the substrate's own ``max_sweeps``).
    """

    name = "continual"
    description = "Continual EqProp: theta changes at every relaxation sweep of the nudged phase"
    requires = frozenset({"eqprop"})

    def __init__(
        self, beta: float = 0.5, lr: float | Mapping[str, float] = 0.01, max_steps: int | None = None, seed: int = 0
    ) -> None:
        self.beta = check_beta(beta)
        check_nudging((0.0, self.beta), "continual eqprop")
        self.lr = lr
        if max_steps is not None and int(max_steps) < 1:
            raise ConfigurationError(f"max_steps={max_steps}: must be >= 1")
        self.max_steps = None if max_steps is None else int(max_steps)

    def expected_rates(self, substrate: Substrate) -> dict[str, float]:
        """First-order learning rate per tensor: the summed update is ``-lr * g_hat`` (positive EqProp)."""
        return rates(self.lr, substrate.info.parameter_shapes)

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        require(substrate, self.requires, "continual eqprop")
        if not isinstance(substrate, SweepBudgeted):
            raise ConfigurationError(
                "continual eqprop needs single relaxation sweeps: the substrate has no max_sweeps setting"
            )
        sub = as_eqprop(substrate, "continual eqprop")  # substrate: its sweep budget; sub: the contract
        report = StepReport(loss=0.0, outputs=np.empty(0), delta={})
        report.loss, report.outputs, _ = free_phase(sub, x, y, report)
        theta0 = sub.parameters()
        lr = rates(self.lr, theta0)
        scale = {n: lr[n] / self.beta for n in lr}
        g_prev = sub.energy_gradients()
        cap, tol = int(substrate.max_sweeps), float(getattr(sub, "tol", 0.0))
        steps = self.max_steps or cap
        total, converged = RelaxReport(), False
        t0 = time.perf_counter()
        sub.nudge(self.beta, y)
        substrate.max_sweeps = 1
        try:
            for _ in range(steps):
                rep = sub.relax()  # one sweep; the state is now settled "as is"
                total = total + rep
                g = sub.energy_gradients()  # read before reprogramming (which marks the state stale)
                theta = sub.parameters()
                sub.set_parameters({n: theta[n] - scale[n] * (g[n] - g_prev[n]) for n in theta})
                g_prev = g
                if rep.residual <= tol:
                    converged = True
                    break
        finally:
            substrate.max_sweeps = cap
            sub.nudge(0.0)
        total.seconds = time.perf_counter() - t0
        total.converged = converged  # its one-sweep relaxations are unsettled by design; the phase is not
        report.record("nudged", total)
        report.extra["nudged_converged"] = float(converged)
        report.delta = difference(sub.parameters(), theta0)
        return report
