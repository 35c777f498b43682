import numpy as np
import pytest

from aeqprop.errors import ConfigurationError, StiffnessError
from aeqprop.oracle import finite_difference
from aeqprop.substrate import AeqpropSubstrate, EqPropSubstrate, Substrate
from sim_backends.hopfield import HopfieldSubstrate


def test_satisfies_the_contract_by_shape():
    sub = HopfieldSubstrate((4, 5, 3))
    assert isinstance(sub, Substrate)
    assert isinstance(sub, EqPropSubstrate)
    assert isinstance(sub, AeqpropSubstrate)
    assert sub.info.parameter_shapes == {"W1": (4, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}
    assert sub.info.n_parameters == 4 * 5 + 5 + 5 * 3 + 3


def test_energy_never_rises_and_relaxation_converges():
    rng = np.random.default_rng(3)
    sub = HopfieldSubstrate((10, 12, 8, 4), seed=3, init_gain=1.5, tol=1e-12, max_sweeps=1)
    sub.clamp(rng.uniform(0, 1, (6, 10)))
    sub.nudge(0.5, np.eye(4)[rng.integers(0, 4, 6)])
    energies = [sub.energy()]
    for _ in range(60):
        sub.relax()
        energies.append(sub.energy())
    assert np.all(np.diff(energies) <= 1e-12)
    assert energies[-1] < energies[1]
    sub.max_sweeps = 10_000
    report = sub.relax()
    assert report.converged and report.residual <= 1e-12


def test_settled_state_is_the_exact_layer_minimiser():
    rng = np.random.default_rng(0)
    sub = HopfieldSubstrate((6, 7, 5, 3), seed=0, tol=1e-14, max_sweeps=10_000)
    x = rng.uniform(0, 1, (4, 6))
    y = rng.uniform(0, 1, (4, 3))
    sub.clamp(x)
    sub.nudge(0.3, y)
    sub.relax()
    s = sub.state()
    W, b = sub.W, sub.b
    assert np.allclose(s[1], np.clip(x @ W[1] + s[2] @ W[2].T + b[1], 0, 1), atol=1e-12)
    assert np.allclose(s[2], np.clip(s[1] @ W[2] + s[3] @ W[3].T + b[2], 0, 1), atol=1e-12)
    assert np.allclose(s[3], np.clip((s[2] @ W[3] + b[3] + 0.3 * y) / 1.3, -1, 2), atol=1e-12)


def test_oracle_agrees_with_finite_differences_two_hidden_layers(interior_net, flatten, rel):
    sub, x, y = interior_net(layers=(6, 8, 7, 4), batch=5, seed=2)
    grad = sub.true_gradient(x, y)
    fd, masks = finite_difference(sub, x, y, h=1e-6)
    assert all(m.all() for m in masks.values())
    assert rel(flatten(grad), flatten(fd)) <= 1e-6
    # the test would see a wrong sign or a missing layer term
    assert np.linalg.norm(flatten(fd)) > 1e-2


def test_oracle_excludes_units_held_at_a_bound():
    rng = np.random.default_rng(1)
    sub = HopfieldSubstrate((5, 9, 3), seed=1, init_gain=1.0, tol=1e-14, max_sweeps=100_000)
    sub.b[1][:] = rng.normal(0, 0.6, 9)
    x = rng.uniform(0, 1, (4, 5))
    y = np.eye(3)[rng.integers(0, 3, 4)]
    grad = sub.true_gradient(x, y)
    s = sub.state()
    assert 0 < np.mean((s[1] == 0) | (s[1] == 1)) < 1  # some units are at a bound
    fd, _ = finite_difference(sub, x, y, h=1e-7)
    for n in grad:
        assert np.allclose(grad[n], fd[n], atol=1e-6)


def test_bad_inputs_are_refused():
    sub = HopfieldSubstrate((4, 5, 3), max_batch=8)
    with pytest.raises(ConfigurationError, match="wider than the substrate takes"):
        sub.clamp(np.zeros((9, 4)))
    with pytest.raises(ConfigurationError, match="shape"):
        sub.clamp(np.zeros((2, 5)))
    with pytest.raises(ConfigurationError, match="NaN"):
        sub.clamp(np.full((2, 4), np.nan))
    sub.clamp(np.zeros((2, 4)))
    with pytest.raises(ConfigurationError, match="beta <= -1"):
        sub.nudge(-1.0, np.zeros((2, 3)))
    with pytest.raises(ConfigurationError, match="needs a target"):
        sub.nudge(0.5)


def test_set_parameters_clips_to_bounds_and_reports_it():
    sub = HopfieldSubstrate((2, 3, 2), bound=0.5)
    theta = sub.parameters()
    theta["b1"] = np.array([0.7, -0.2, -0.9])
    clipped = sub.set_parameters(theta)
    assert clipped["b1"] == 2 and clipped["W1"] == 0
    assert np.array_equal(sub.parameters()["b1"], [0.5, -0.2, -0.5])


def test_native_homeostasis_holds_theta_still_and_release_fraction():
    rng = np.random.default_rng(4)
    sub = HopfieldSubstrate((5, 6, 3), eps=0.05, seed=4, tol=1e-14, max_sweeps=10_000)
    sub.clamp(rng.uniform(0, 1, (3, 5)))
    sub.relax()
    theta = sub.parameters()
    sub.set_knobs(theta)  # knobs at theta: the parameters drift by -eps dE/dtheta
    g = sub.energy_gradients()
    sub.release(0.5)
    moved = sub.parameters()
    for n in theta:
        assert np.allclose(moved[n] - theta[n], -0.5 * 0.05 * g[n], atol=1e-14)
    sub.set_parameters(theta)
    sub.relax()
    sub.homeostasis()
    sub.release(3.0)
    held = sub.parameters()
    for n in theta:
        assert np.allclose(held[n], theta[n], atol=1e-13)


def test_joint_release_runs_away_past_the_stiffness_limit(interior_net):
    sub, x, y = interior_net(eps=5.0)
    sub.clamp(x)
    sub.nudge(-0.05, y)
    sub.relax()
    sub.homeostasis()
    theta = sub.parameters()
    sub.nudge(0.05, y)
    with pytest.raises(StiffnessError, match=r"eps=\{'W1': 5.0") as info:
        sub.release(None)
    assert info.value.eps_max is not None and 0 < info.value.eps_max < 5.0
    after = sub.parameters()
    for n in theta:
        assert np.all(np.isfinite(after[n]))
        assert np.array_equal(after[n], theta[n])
    assert np.all(np.isfinite(sub.outputs()))
