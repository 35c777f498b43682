"""Vector-field EqProp (Scellier et al. 2018), ALGORITHMS.md section 6.

For dynamics without an energy, each weight learns from the change of the unit
it drives, times the free value of the unit it comes from::

    dW_ij = (lr / beta) (s_i^beta - s_i^0) s_j^0

On a layered substrate with parameters named ``W<l>`` (forward, s_(l-1) -> s_l),
``B<l>`` (backward, s_l -> s_(l-1); untied substrate) and ``b<l>``:

    dW_l = (lr / beta) s_(l-1)^0T ds_l,   dB_l = (lr / beta) ds_(l-1)^T s_l^0,   db_l = (lr / beta) ds_l

batch means, ds = s^beta - s^0. A tied weight (no ``B<l>``: Hopfield) drives both
of its units and gets both terms; that is the EqProp update to first order in
beta (EqProp adds ds_(l-1)^T ds_l / beta = O(beta)). The protocol reads the
layer states through ``substrate.state()``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Protocol, cast

import numpy as np

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import StepReport, Substrate
from protocols.base import check_beta, check_nudging, difference, free_phase, rates

_NAME = re.compile(r"^([WBb])(\d+)$")


class LayeredSubstrate(Substrate, Protocol):
    """What the vector-field rule reads and programs beyond the contract (no capability names it)."""

    def state(self) -> list[np.ndarray]:
        """The layers' states, one (batch, n_l) array per layer."""

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta, clipped to its bounds; entries clipped per tensor."""


class VectorFieldEqProp:
    """Vector-field EqProp with positive nudging.

    Example: ``VectorFieldEqProp(beta=0.5, lr=0.1)`` on an ``UntiedSubstrate``.
    """

    name = "vector-field"
    description = "Vector-field EqProp: (1/beta)(s_i^beta - s_i^0) s_j^0, for dynamics without an energy"
    requires: frozenset[str] = frozenset()

    def __init__(self, beta: float = 0.5, lr: float | Mapping[str, float] = 0.1, seed: int = 0) -> None:
        self.beta = check_beta(beta)
        check_nudging((0.0, self.beta), "vector-field eqprop")
        self.lr = lr

    def expected_rates(self, substrate: Substrate) -> dict[str, float]:
        return rates(self.lr, substrate.info.parameter_shapes)

    def increments(self, substrate: Substrate, s0: list[np.ndarray], sb: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The update direction per tensor (before the learning rate) from the free and nudged states."""
        names = substrate.info.parameter_shapes
        n = s0[0].shape[0]
        ds = [(a - b) / self.beta for a, b in zip(sb, s0)]
        out: dict[str, np.ndarray] = {}
        for name in names:
            m = _NAME.match(name)
            if m is None or not 1 <= int(m.group(2)) < len(s0):
                raise ConfigurationError(
                    f"vector-field eqprop needs layered parameters named W<l>, B<l>, b<l>; the substrate has {name!r}"
                )
            kind, l = m.group(1), int(m.group(2))
            if kind == "b":
                out[name] = ds[l].mean(axis=0)
            elif kind == "B":
                out[name] = ds[l - 1].T @ s0[l] / n
            else:
                out[name] = s0[l - 1].T @ ds[l] / n
                if f"B{l}" not in names:  # tied: the weight also drives layer l-1
                    out[name] = out[name] + ds[l - 1].T @ s0[l] / n
        return out

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        for method in ("state", "set_parameters"):
            if not callable(getattr(substrate, method, None)):
                raise ConfigurationError(
                    f"vector-field eqprop needs the substrate method {method}() to read layers and program theta"
                )
        substrate = cast(LayeredSubstrate, substrate)  # its two methods beyond the contract, checked above
        report = StepReport(loss=0.0, outputs=np.empty(0), delta={})
        report.loss, report.outputs, _ = free_phase(substrate, x, y, report)
        s0 = substrate.state()
        substrate.nudge(self.beta, y)
        report.record("beta2", substrate.relax())
        sb = substrate.state()
        substrate.nudge(0.0)
        t0 = time.perf_counter()
        inc = self.increments(substrate, s0, sb)
        lr = rates(self.lr, inc)
        theta = substrate.parameters()
        substrate.set_parameters({n: theta[n] + lr[n] * inc[n] for n in inc})
        report.delta = difference(substrate.parameters(), theta)
        report.seconds["update"] = time.perf_counter() - t0
        return report
