"""Continual EqProp: its summed update telescopes to the EqProp update, up to O(lr)."""

import pytest

from aeqprop.errors import ConfigurationError
from aeqprop.oracle import protocol_update
from protocols.continual import ContinualEqProp
from protocols.eqprop import EqProp


def test_summed_update_approaches_eqprop_in_proportion_to_lr(interior_net, flatten, rel):
    sub, x, y = interior_net()
    beta = 0.1
    reference = flatten(protocol_update(sub, EqProp(beta=beta, lr=1.0, variant="positive"), x, y))
    errors = []
    for lr in (1e-3, 1e-4):
        delta = flatten(protocol_update(sub, ContinualEqProp(beta=beta, lr=lr), x, y))
        errors.append(rel(delta / lr, reference))
    assert errors[1] < 0.01
    assert 7.0 < errors[0] / errors[1] < 13.0  # first order in lr: 10x smaller lr, 10x smaller difference


def test_restores_the_sweep_cap_and_removes_nudging(interior_net):
    sub, x, y = interior_net()
    cap = sub.max_sweeps
    report = ContinualEqProp(beta=0.2, lr=1e-3).step(sub, x, y)
    assert sub.max_sweeps == cap
    assert sub._beta == 0.0
    assert report.sweeps["nudged"] > 1 and report.extra["nudged_converged"] == 1.0


def test_refuses_a_substrate_without_single_sweeps(interior_net):
    sub, x, y = interior_net()

    class NoSweeps:
        info = sub.info

    with pytest.raises(ConfigurationError, match="max_sweeps"):
        ContinualEqProp().step(NoSweeps(), x, y)
