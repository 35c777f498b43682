import numpy as np
import pytest

from aeqprop.errors import ConfigurationError, StiffnessError
from aeqprop.oracle import update_fidelity
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp


class NoPeeking:
    """Forwards to a substrate but fails if a protocol reads the model."""

    def __init__(self, sub):
        self._sub = sub
        self.info = sub.info

    def __getattr__(self, name):
        if name in ("energy_gradients", "true_gradient", "loss", "set_parameters", "eps", "W", "b"):
            raise AssertionError(f"an agnostic protocol called {name}")
        return getattr(self._sub, name)


def test_centered_step_is_an_sgd_step(interior_net, flatten, rel):
    sub, x, y = interior_net(eps=1e-3)
    grad = flatten(sub.true_gradient(x, y))
    report = Aeqprop(beta=0.01).step(NoPeeking(sub), x, y)
    assert rel(flatten(report.delta), -1e-3 * 0.01 * grad) <= 1e-2


@pytest.mark.parametrize("release", [1.0, None])
def test_feedback_and_native_homeostasis_give_the_same_step(interior_net, flatten, rel, release):
    steps = {}
    for mode in ("native", "feedback"):
        sub, x, y = interior_net(eps=1e-3)
        protocol = Aeqprop(beta=0.01, homeostasis=mode, release=release, homeostasis_rtol=1e-9)
        report = protocol.step(NoPeeking(sub) if mode == "feedback" else sub, x, y)
        steps[mode] = flatten(report.delta)
        if mode == "feedback":
            assert 2 <= report.extra["homeostasis_iterations"] < 50
    assert rel(steps["feedback"], steps["native"]) <= 1e-6


def test_short_release_equals_eps_times_the_eqprop_estimator(interior_net, flatten):
    # ALGORITHMS.md section 3: one exact update gives -eps (beta2 - beta1) g_hat exactly.
    sub, x, y = interior_net(eps={"W": 0.02, "b": 0.01})
    g_hat, _, _ = EqProp(beta=0.05, variant="centered").estimate(sub, x, y)  # beta1 = -0.05, beta2 = 0.05
    delta = Aeqprop(beta=0.1, variant="centered").step(sub, x, y).delta  # beta1 = -0.05, beta2 = 0.05
    for n in delta:
        eps = 0.02 if n[0] == "W" else 0.01
        assert np.allclose(delta[n], -eps * 0.1 * g_hat[n], rtol=1e-9, atol=1e-15)


def test_joint_release_gains_a_preconditioner_but_stays_a_descent_step(interior_net):
    sub, x, y = interior_net(eps=0.02)
    fid = update_fidelity(sub, Aeqprop(beta=0.01, release="equilibrium"), x, y)["all"]
    assert fid.cosine > 0.95
    assert 1e-3 < fid.rel_error < 0.5  # the O(eps) preconditioner is visible


@pytest.mark.parametrize("variant", ["optimistic", "pessimistic", "centered"])
def test_each_variant_lowers_the_loss(interior_net, variant):
    sub, x, y = interior_net(eps=0.05)
    before = sub.loss(x, y)
    for _ in range(5):
        Aeqprop(beta=0.2, variant=variant).step(sub, x, y)
    assert sub.loss(x, y) < 0.97 * before


def test_stiffness_violation_stops_with_a_clear_error_and_no_nan(interior_net):
    sub, x, y = interior_net(eps=2.0)
    theta = sub.parameters()
    with pytest.raises(StiffnessError, match="eps="):
        Aeqprop(beta=0.1, release="equilibrium").step(sub, x, y)
    after = sub.parameters()
    assert all(np.array_equal(after[n], theta[n]) for n in theta)
    assert np.all(np.isfinite(sub.outputs()))


def test_bad_options_are_refused():
    with pytest.raises(ConfigurationError, match="valid: native, feedback"):
        Aeqprop(homeostasis="psychic")
    with pytest.raises(ConfigurationError, match="valid: centered, optimistic, pessimistic"):
        Aeqprop(variant="positive")
    with pytest.raises(ConfigurationError, match="release"):
        Aeqprop(release=-1.0)
    with pytest.raises(ConfigurationError, match="beta <= -1"):
        Aeqprop(beta=2.0, variant="centered")


def test_feedback_homeostasis_shortens_its_probe_when_the_coupling_is_soft(interior_net, flatten, rel):
    # eps = 0.2 is past 1 / |lambda_min| of this net: a full-length probe overshoots and the loop
    # runs away; the loop must see it, shorten the probe and still reach the native knobs.
    steps = {}
    for mode in ("native", "feedback"):
        sub, x, y = interior_net(eps=0.2)
        protocol = Aeqprop(beta=0.01, homeostasis=mode, homeostasis_rtol=1e-9, homeostasis_iterations=300)
        report = protocol.step(sub, x, y)
        steps[mode] = flatten(report.delta)
    assert rel(steps["feedback"], steps["native"]) <= 1e-5
