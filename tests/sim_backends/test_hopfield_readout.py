"""The Hopfield substrate's cross-entropy readout, float32 compute, and the shortcuts that make
a step cheap (cached input drive, read-only snapshots, deferred native homeostasis), each
checked against an independent computation."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from aeqprop.oracle import finite_difference
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.readout import softmax


def readout_net(interior_net, layers=(6, 9, 7, 4), **kw):
    sub, x, y = interior_net(layers=layers, cost="cross-entropy", **kw)
    return sub, x, y


def test_readout_oracle_agrees_with_finite_differences(interior_net, flatten, rel):
    sub, x, y = readout_net(interior_net)
    assert sub.T == 2 and sub.info.parameter_shapes["W3"] == (7, 4)
    grad = sub.true_gradient(x, y)
    fd, _ = finite_difference(sub, x, y, h=1e-6)
    assert rel(flatten(grad), flatten(fd)) <= 1e-6
    assert np.linalg.norm(fd["W1"]) > 1e-3  # the hidden layers get a gradient through the readout
    p = sub.outputs()
    assert np.allclose(p.sum(1), 1.0) and sub.loss(x, y) == pytest.approx(-np.mean(np.sum(y * np.log(p), 1)))


def test_readout_equilibrium_is_stationary_and_energy_never_rises(interior_net):
    sub, x, y = readout_net(interior_net)
    sub.clamp(x)
    sub.nudge(0.5, y)
    sub.max_sweeps = 1
    energies = [sub.energy()]
    for _ in range(40):
        sub.relax()
        energies.append(sub.energy())
    assert np.all(np.diff(energies) <= 1e-12)
    sub.max_sweeps = 100_000
    sub.relax()
    s, W, b = sub.state(), sub.W, sub.b
    p = softmax(s[2] @ W[3] + b[3])
    force = -0.5 * (p - y) @ W[3].T
    assert np.allclose(s[2], np.clip(s[1] @ W[2] + b[2] + force, 0, 1), atol=1e-12)
    assert np.allclose(s[1], np.clip(x @ W[1] + s[2] @ W[2].T + b[1], 0, 1), atol=1e-12)


def strong_readout(beta, seed=3):
    """One hidden layer under a readout of +-1 weights: kappa = |beta| |W_r|^2 / 2 is about 7 at
    |beta| = 0.5, where the fixed-point iteration of the top layer (force at the current state) swings."""
    sub = HopfieldSubstrate((6, 12, 4), cost="cross-entropy", seed=seed, tol=1e-10, max_sweeps=1000)
    rng = np.random.default_rng(seed)
    sub.set_parameters({"W2": rng.choice([-1.0, 1.0], size=(12, 4))})
    x = rng.uniform(0, 1, (5, 6))
    y = np.eye(4)[rng.integers(0, 4, 5)]
    sub.clamp(x)
    sub.nudge(beta, y)
    return sub, x, y


def energy_changes(beta, sweeps=300):
    sub, _, _ = strong_readout(beta)
    sub.max_sweeps = 1
    trace = [sub.energy()]
    for _ in range(sweeps):
        sub.relax()
        trace.append(sub.energy())
    return np.diff(trace)


@pytest.mark.parametrize("beta", [0.5, -0.5])
def test_under_a_strong_readout_every_sweep_lowers_the_energy(beta):
    """Where the plain update may raise F, the top layer takes the lower of it and a safe projected
    gradient step (sim_backends.readout.lower_of_two): the energy never rises and the relaxation
    settles, at either sign of the nudge (at beta < 0 the block is not convex)."""
    assert np.all(energy_changes(beta) <= 1e-12)
    assert strong_readout(beta)[0].relax().converged


def test_the_fixed_point_iteration_the_step_replaced_swings_under_a_strong_readout(monkeypatch):
    """The plain iteration (force at the current state, alpha = 1) raises the energy on the same
    network at beta > 0 and never settles: what the conv runs' relaxations cut off at the cap were."""
    import sim_backends.hopfield_relax as relax

    monkeypatch.setattr(relax, "readout_step", lambda beta, w: 1.0)
    assert np.max(energy_changes(0.5)) > 1e-3
    assert not strong_readout(0.5)[0].relax().converged


def test_under_a_strong_readout_the_nudged_state_is_the_minimiser_scipy_finds():
    """At beta > 0 the nudged energy is strictly convex in the hidden layer: the relaxation's state
    is its one minimiser, found independently by L-BFGS-B on F written out here."""
    from scipy.optimize import minimize

    beta = 0.5
    sub, x, y = strong_readout(beta)
    report = sub.relax()
    W1, b1, W2, b2 = (sub.parameters()[n] for n in ("W1", "b1", "W2", "b2"))
    drive = x @ W1 + b1

    def F(flat):
        s = flat.reshape(drive.shape)
        z = s @ W2 + b2
        log_p = z - z.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        return float(np.sum(0.5 * s**2 - s * drive) - beta * np.sum(y * log_p))

    found = minimize(
        F,
        np.full(drive.size, 0.5),
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * drive.size,
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10_000},
    )
    assert report.converged and found.success
    assert np.abs(sub.state()[1] - found.x.reshape(drive.shape)).max() < 1e-5


@pytest.mark.parametrize("cost", ["squared", "cross-entropy"])
def test_centered_eqprop_matches_the_oracle(interior_net, flatten, rel, cost):
    sub, x, y = interior_net(layers=(6, 9, 4), cost=cost)
    beta = 1e-3
    g_hat, _, _ = EqProp(beta=beta).estimate(sub, x, y)
    assert rel(flatten(g_hat), flatten(sub.true_gradient(x, y))) <= 1e-4


@pytest.mark.parametrize("cost", ["squared", "cross-entropy"])
def test_one_update_after_native_homeostasis_equals_the_knob_formula(interior_net, cost):
    """The shortcut (state difference, one product per tensor) against u - eps dE/dtheta with
    the knobs formed explicitly, and against -eps (beta2 - beta1) times EqProp's estimate."""
    sub, x, y = interior_net(layers=(6, 9, 7, 4), cost=cost, eps=0.05)
    sub.tol = 1e-13
    theta = sub.parameters()
    fast = Aeqprop(beta=0.2).step(sub, x, y).delta
    sub.set_parameters(theta)
    sub.clamp(x)
    sub.nudge(-0.1, y)
    sub.relax()
    sub.homeostasis()
    u = sub.knobs()  # reading the knobs forms them: the general path follows
    sub.nudge(0.1, y)
    sub.relax()
    g2 = sub.energy_gradients()
    sub.release(1.0)
    slow = {n: sub.parameters()[n] - theta[n] for n in theta}
    for n in theta:
        assert np.allclose(fast[n], slow[n], atol=1e-15, rtol=1e-12)
        assert np.allclose(slow[n], u[n] - 0.05 * g2[n] - theta[n], atol=1e-15)
    sub.set_parameters(theta)
    g_hat, _, _ = EqProp(beta=0.1).estimate(sub, x, y)
    for n in theta:
        assert np.allclose(fast[n], -0.05 * 0.2 * g_hat[n], atol=1e-13)


def test_parameters_are_read_only_snapshots_and_the_drive_follows_w1():
    rng = np.random.default_rng(0)
    sub = HopfieldSubstrate((5, 7, 3), seed=0, tol=1e-13, max_sweeps=10_000)
    x = rng.uniform(0, 1, (4, 5))
    before = sub.parameters()
    with pytest.raises(ValueError):
        before["W1"][0, 0] = 1.0
    kept = before["W1"].copy()
    sub.clamp(x)
    sub.relax()
    sub.set_parameters({"W1": before["W1"] * -1.0})  # after the clamp: the cached drive must go
    o = sub.outputs()
    fresh = HopfieldSubstrate((5, 7, 3), seed=0, tol=1e-13, max_sweeps=10_000)
    fresh.set_parameters({"W1": kept * -1.0})
    fresh.clamp(x)
    assert np.allclose(o, fresh.outputs(), atol=1e-12)
    assert np.array_equal(before["W1"], kept)  # the old snapshot did not change


def test_float32_trains_like_float64_and_its_oracle_is_float64(interior_net, flatten, rel):
    sub64, x, y = interior_net(layers=(6, 9, 4))
    sub32 = HopfieldSubstrate((6, 9, 4), eps=1e-3, dtype="float32", tol=1e-6, max_sweeps=10_000)
    sub32.set_parameters(sub64.parameters())
    assert sub32.parameters()["W1"].dtype == np.float32
    sub32.clamp(x)
    assert sub32.outputs().dtype == np.float32
    g32 = sub32.true_gradient(x, y)
    assert g32["W1"].dtype == np.float64
    assert rel(flatten(g32), flatten(sub64.true_gradient(x, y))) <= 1e-6  # parameters rounded to float32
    sub64.tol = 1e-6
    d64 = Aeqprop(beta=0.5).step(sub64, x, y).delta
    d32 = Aeqprop(beta=0.5).step(sub32, x, y).delta
    assert rel(flatten(d32), flatten(d64)) <= 1e-3
    with pytest.raises(ConfigurationError, match="dtype='float16': valid: float64, float32"):
        HopfieldSubstrate((2, 3, 2), dtype="float16")


def test_readout_needs_a_hidden_layer_and_a_known_cost():
    with pytest.raises(ConfigurationError, match="at least one hidden layer"):
        HopfieldSubstrate((4, 3), cost="cross-entropy")
    with pytest.raises(ConfigurationError, match="cost='hinge': valid: squared, cross-entropy"):
        HopfieldSubstrate((4, 5, 3), cost="hinge")


def test_the_untied_network_refuses_the_readout():
    from sim_backends.untied import UntiedSubstrate

    with pytest.raises(ConfigurationError, match="squared cost only"):
        UntiedSubstrate((4, 5, 3), cost="cross-entropy")
