"""Vector-field EqProp and the untied substrate: symmetric weights give the EqProp update."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from aeqprop.oracle import fidelity, protocol_update
from protocols.eqprop import EqProp
from protocols.vector_field import VectorFieldEqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.untied import UntiedSubstrate

TIGHT = dict(tol=1e-13, max_sweeps=100_000)


def data(seed=0, n_in=20, n_out=5, batch=8):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (batch, n_in)), np.eye(n_out)[rng.integers(0, n_out, batch)]


def tied_update(delta):
    """Fold each backward tensor B_l into W_l: the update a tied weight would get."""
    return {n: v + delta.get("B" + n[1:], 0.0) if n[0] == "W" else v for n, v in delta.items() if n[0] != "B"}


def test_on_symmetric_weights_it_is_eqprop_to_first_order_in_beta(interior_net, flatten, rel):
    sub, x, y = interior_net()
    errors = []
    for beta in (1e-2, 1e-3):
        reference = flatten(protocol_update(sub, EqProp(beta=beta, lr=1.0, variant="positive"), x, y))
        errors.append(rel(flatten(protocol_update(sub, VectorFieldEqProp(beta=beta, lr=1.0), x, y)), reference))
    assert errors[1] < 1e-3
    assert 7.0 < errors[0] / errors[1] < 13.0  # the missing term ds ds^T / beta is O(beta)


def test_untied_at_angle_zero_is_the_hopfield_network(flatten):
    x, y = data()
    untied = UntiedSubstrate((20, 30, 7, 5), angle=0.0, seed=3, **TIGHT)
    hopfield = HopfieldSubstrate((20, 30, 7, 5), seed=3, **TIGHT)
    for net in (untied, hopfield):
        net.clamp(x)
        net.nudge(0.0)
        net.relax()
    np.testing.assert_allclose(untied.outputs(), hopfield.outputs(), atol=1e-12)
    protocol = VectorFieldEqProp(beta=0.05, lr=0.1)
    a = tied_update(protocol_update(untied, protocol, x, y))
    b = protocol_update(hopfield, protocol, x, y)
    np.testing.assert_allclose(flatten(a), flatten(b), atol=1e-12)


@pytest.mark.parametrize("angle", [30.0, 90.0])
def test_angle_setting_sets_the_angle_and_keeps_the_norm(angle):
    net = UntiedSubstrate((20, 30, 5), angle=angle, seed=1, init_gain=0.3)
    assert net.backward_angles()["B2"] == pytest.approx(angle, abs=1e-9)
    assert np.linalg.norm(net.B[2]) == pytest.approx(np.linalg.norm(net.W[2]), rel=1e-12)


def test_estimate_degrades_with_the_angle(flatten):
    x, y = data(1)
    cosines = []
    for angle in (0.0, 90.0):
        net = UntiedSubstrate((20, 30, 5), angle=angle, seed=1, **TIGHT)
        delta = tied_update(protocol_update(net, VectorFieldEqProp(beta=1e-3, lr=1.0), x, y))
        grad = net.symmetric_gradient(x, y)
        cosines.append(fidelity(flatten(delta), -flatten(grad)).cosine)
    assert cosines[0] > 0.99  # units at a box bound keep it from 1 at finite beta
    assert cosines[1] < 0.9


def test_untied_has_no_energy_gradients():
    net = UntiedSubstrate((4, 3, 2), angle=45.0)
    assert "eqprop" not in net.info.capabilities
    with pytest.raises(ConfigurationError, match="no energy"):
        net.energy_gradients()
