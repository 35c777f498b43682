"""Coupled learning: the outputs are held near their clamp value, and training lowers the loss."""

import pytest

from aeqprop.errors import ConfigurationError
from protocols.coupled import CoupledLearning


def test_training_lowers_the_loss(interior_net):
    sub, x, y = interior_net(tol=1e-8)
    protocol = CoupledLearning(eta=0.5, lr=0.5)
    before = sub.loss(x, y)
    for _ in range(30):
        protocol.step(sub, x, y)
    assert sub.loss(x, y) < 0.5 * before


def test_outputs_are_clamped_within_one_over_clamp_beta(interior_net):
    sub, x, y = interior_net()
    report = CoupledLearning(eta=0.3, clamp_beta=1e3).step(sub, x, y)
    assert 0 < report.extra["clamp_residual"] < 3e-3
    assert CoupledLearning(eta=0.3, clamp_beta=1e5).step(sub, x, y).extra["clamp_residual"] < 3e-5


def test_eta_outside_the_unit_interval_is_refused():
    with pytest.raises(ConfigurationError, match="eta=0.0"):
        CoupledLearning(eta=0.0)
    with pytest.raises(ConfigurationError, match="eta=1.5"):
        CoupledLearning(eta=1.5)
