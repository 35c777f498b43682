import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from protocols.eqprop import EqProp


def estimator_error(sub, x, y, beta, variant, flatten, rel):
    grad = flatten(sub.true_gradient(x, y))
    g_hat, _, _ = EqProp(beta=beta, variant=variant).estimate(sub, x, y)
    return rel(flatten(g_hat), grad)


def test_centered_eqprop_matches_the_oracle(interior_net, flatten, rel):
    sub, x, y = interior_net()
    assert estimator_error(sub, x, y, 1e-3, "centered", flatten, rel) <= 1e-4


@pytest.mark.parametrize("variant,order", [("positive", 1), ("negative", 1), ("centered", 2)])
def test_bias_order_in_beta(interior_net, flatten, rel, variant, order):
    sub, x, y = interior_net()
    e_big = estimator_error(sub, x, y, 2e-3, variant, flatten, rel)
    e_small = estimator_error(sub, x, y, 1e-3, variant, flatten, rel)
    assert e_big / e_small == pytest.approx(2.0**order, rel=0.2)


def test_step_programs_minus_lr_times_the_estimate(interior_net, flatten):
    sub, x, y = interior_net()
    protocol = EqProp(beta=1e-3, lr={"W": 0.2, "b": 0.1}, variant="negative")
    g_hat, _, _ = protocol.estimate(sub, x, y)
    theta = sub.parameters()
    report = protocol.step(sub, x, y)
    for n in theta:
        lr = 0.2 if n[0] == "W" else 0.1
        assert np.allclose(report.delta[n], -lr * g_hat[n], atol=1e-15)
        assert np.allclose(sub.parameters()[n], theta[n] + report.delta[n], atol=1e-15)
    assert set(report.sweeps) == {"free", "beta1"}  # negative: beta2 = 0 is measured at the free state
    assert report.sweeps["free"] > 0


def test_random_sign_draws_both_signs_and_is_seeded():
    p = EqProp(beta=0.1, variant="random-sign", seed=5)
    draws = [p.betas() for _ in range(200)]
    assert {d for d in draws} == {(0.0, 0.1), (-0.1, 0.0)}
    q = EqProp(beta=0.1, variant="random-sign", seed=5)
    assert [q.betas() for _ in range(200)] == draws


def test_bad_options_are_refused():
    with pytest.raises(ConfigurationError, match="valid: centered, positive, negative, random-sign"):
        EqProp(variant="sideways")
    with pytest.raises(ConfigurationError, match="beta <= -1"):
        EqProp(beta=1.0, variant="centered")
    with pytest.raises(ConfigurationError, match="must be a finite number > 0"):
        EqProp(beta=float("nan"))
