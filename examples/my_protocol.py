"""A user protocol: run it with

    aeqprop train --protocol examples/my_protocol.py:SignEqProp --epochs 3 -q

A protocol is any class with ``name``, ``requires`` (the capabilities it
needs from the substrate) and ``step(substrate, x, y) -> StepReport``. It
touches the substrate only through the contract (aeqprop/substrate.py):
clamp, nudge, relax, outputs, parameters, and, with the "eqprop"
capability, energy_gradients and set_parameters.

This one is positive-nudging EqProp that programs only the *sign* of the
estimated gradient (a fixed step per entry), as a device with up/down
pulses of fixed size would.
"""

from __future__ import annotations

import numpy as np

from aeqprop.substrate import StepReport


class SignEqProp:
    """EqProp with fixed-size up/down steps: theta <- theta - step * sign(g_hat)."""

    name = "sign-eqprop"
    description = "EqProp with fixed-size up/down pulses (the sign of the estimate)"
    requires = frozenset({"eqprop"})  # energy_gradients and set_parameters

    # Constructor options are filled from the command line by name (beta, lr, seed, ...):
    # --lr sets ``lr``, here the size of one pulse.
    def __init__(self, beta: float = 0.5, lr: float = 0.002, seed: int = 0):
        self.beta, self.lr = float(beta), float(lr)

    def step(self, substrate, x, y) -> StepReport:
        # Free phase: inputs clamped, no nudging, settle, measure.
        substrate.clamp(x)
        substrate.nudge(0.0)
        free = substrate.relax()
        outputs = substrate.outputs()
        loss = float(0.5 * np.sum((outputs - y) ** 2) / len(x))
        g_free = substrate.energy_gradients()

        # Nudged phase: pull the outputs toward y with strength beta, settle, measure.
        substrate.nudge(self.beta, y)
        nudged = substrate.relax()
        g_nudged = substrate.energy_gradients()
        substrate.nudge(0.0)  # leave the substrate un-nudged

        # Program theta; the change actually made (after clipping to bounds) is the delta.
        theta = substrate.parameters()
        substrate.set_parameters({n: theta[n] - self.lr * np.sign(g_nudged[n] - g_free[n]) for n in theta})
        after = substrate.parameters()

        report = StepReport(loss=loss, outputs=outputs, delta={n: after[n] - theta[n] for n in theta})
        report.record("free", free)
        report.record("beta2", nudged)
        return report
