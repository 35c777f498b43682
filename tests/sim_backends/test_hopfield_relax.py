"""The accelerated relaxation of the Hopfield network: same equilibria as plain block coordinate
descent, fewer sweeps, a plain last step, single sweeps unchanged."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.hopfield_relax import Acceleration, extent

PLAIN = Acceleration(enabled=False)


def pair(layers=(12, 40, 6), seed=0, **options):
    """The same network twice, accelerated and plain, with couplings strong enough that plain
    sweeps contract slowly at beta = -0.5 (about 0.75 per sweep)."""
    nets = []
    for acceleration in (None, PLAIN):
        sub = HopfieldSubstrate(layers, seed=seed, init_gain=0.6, acceleration=acceleration, **options)
        sub.set_parameters({"b1": np.full(layers[1], 0.2)})
        nets.append(sub)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (8, layers[0]))
    y = np.eye(layers[-1])[rng.integers(0, layers[-1], 8)]
    return nets, x, y


def phases(sub, x, y, betas=(0.0, -0.5, 0.5)):
    """Free phase then nudged phases on the same inputs: (sweeps, settled state) per phase."""
    sub.clamp(x)
    out = []
    for beta in betas:
        sub.nudge(beta, y if beta else None)
        out.append((sub.relax().sweeps, sub.state()))
    return out


def test_same_equilibria_in_fewer_sweeps():
    (fast, plain), x, y = pair(tol=1e-12, max_sweeps=10_000)
    a, b = phases(fast, x, y), phases(plain, x, y)
    for (_, s_fast), (_, s_plain) in zip(a, b):
        for l in range(1, 3):
            assert np.abs(s_fast[l] - s_plain[l]).max() <= 1e-10
    sweeps_fast, sweeps_plain = [n for n, _ in a], [n for n, _ in b]
    assert sweeps_plain[1] >= 40  # the slow phase: beta = -0.5 halves the output self-coupling
    assert sweeps_fast[1] <= 0.5 * sweeps_plain[1]
    assert sum(sweeps_fast) <= 0.6 * sum(sweeps_plain)


def test_stops_on_a_plain_sweep_that_moves_at_most_tol():
    (fast, _), x, y = pair(tol=1e-3)
    fast.clamp(x)
    for beta in (0.0, -0.5, 0.5):
        fast.nudge(beta, y if beta else None)
        assert fast.relax().sweeps >= 3
        s, W, b = fast.state(), fast.W, fast.b
        # the outputs took a plain step: the exact minimiser given the hidden layer ...
        assert np.allclose(s[2], np.clip((s[1] @ W[2] + b[2] + beta * y) / (1 + beta), -1, 2), atol=1e-12)
        # ... which is the exact minimiser given the outputs before that step, at most tol away
        moved = np.abs(np.clip(x @ W[1] + s[2] @ W[2].T + b[1], 0, 1) - s[1]).max()
        assert 0 < moved <= 1e-3 * np.linalg.norm(W[2], 2)
        report = fast.relax()  # settled: one plain confirming sweep
        assert report.converged and report.sweeps == 1


def test_a_single_sweep_is_a_plain_step_even_after_the_free_phase_measured_the_contraction():
    (fast, plain), x, y = pair(tol=1e-12, max_sweeps=10_000)
    for sub in (fast, plain):
        sub.clamp(x)
        sub.relax()
        sub.nudge(-0.5, y)
        sub.max_sweeps = 1
    assert fast._rho is not None and plain._rho is None
    fast._s[1:] = [a.copy() for a in plain._s[1:]]  # the same start (the free phases agree to 1e-12)
    for _ in range(5):  # continual EqProp's single sweeps: the same trajectory as plain descent
        fast.relax()
        plain.relax()
        assert all(np.array_equal(a, b) for a, b in zip(fast.state(), plain.state()))


@pytest.mark.parametrize("rho", [0.06, 0.5, 0.94])
def test_a_wrong_contraction_estimate_still_reaches_the_equilibrium(rho):
    (fast, plain), x, y = pair(tol=1e-12, max_sweeps=10_000)
    exact = phases(plain, x, y, betas=(0.0, -0.5))[-1][1]
    fast.clamp(x)
    fast.relax()
    fast._rho = rho  # as if the free phase had measured this
    fast.nudge(-0.5, y)
    report = fast.relax()
    assert report.converged
    assert np.abs(fast.state()[2] - exact[2]).max() <= 1e-10


def test_two_hidden_layers_and_the_readout_reach_the_plain_equilibria():
    for options in ({"layers": (10, 30, 20, 4)}, {"layers": (10, 30, 5), "cost": "cross-entropy"}):
        (fast, plain), x, y = pair(tol=1e-12, max_sweeps=20_000, **options)
        for (_, s_fast), (_, s_plain) in zip(phases(fast, x, y), phases(plain, x, y)):
            for a, b in zip(s_fast[1:], s_plain[1:]):
                assert np.abs(a - b).max() <= 1e-9


def test_bad_acceleration_settings_are_refused():
    with pytest.raises(ConfigurationError, match="margin >= 1"):
        Acceleration(margin=0.5)
    with pytest.raises(ConfigurationError, match="rho_max < 1"):
        Acceleration(rho_max=1.0)


def test_the_second_centered_phase_starts_from_the_free_equilibrium():
    (warm, _), x, y = pair(tol=1e-12, max_sweeps=10_000)
    cold = HopfieldSubstrate((12, 40, 6), seed=0, init_gain=0.6, tol=1e-12, max_sweeps=10_000)
    cold.acceleration = Acceleration(warm_start=False)
    cold.set_parameters(warm.parameters())
    starts = {}
    for sub in (warm, cold):
        sub.clamp(x)
        sub.relax()
        starts[sub] = {"free": sub.state()}
        sub.nudge(-0.5, y)
        sub.relax()
        starts[sub]["beta1"] = sub.state()
    W, b = warm.W, warm.b

    def plain_sweep(s):  # one plain sweep at beta = 0.5 from state s
        s1 = np.clip(x @ W[1] + s[2] @ W[2].T + b[1], 0, 1)
        return np.clip((s1 @ W[2] + b[2] + 0.5 * y) / 1.5, -1, 2)

    for sub, start in ((warm, "free"), (cold, "beta1")):
        sub.nudge(0.5, y)
        sub.max_sweeps = 1
        sub.relax()
        assert np.allclose(sub.state()[2], plain_sweep(starts[sub][start]), atol=1e-12)
        sub.max_sweeps = 10_000
    sweeps = {sub: phases(sub, x, y)[-1][0] for sub in (warm, cold)}
    assert np.abs(warm.state()[2] - cold.state()[2]).max() <= 1e-10
    assert sweeps[warm] <= sweeps[cold]


def test_acceleration_from_a_run_config():
    assert HopfieldSubstrate((4, 5, 3), acceleration=False).acceleration == Acceleration(
        enabled=False, warm_start=False
    )
    assert HopfieldSubstrate((4, 5, 3), acceleration={"margin": 1.5}).acceleration.margin == 1.5
    assert HopfieldSubstrate((4, 5, 3)).acceleration == Acceleration()
    with pytest.raises(ConfigurationError, match="no setting 'omega'; valid: enabled, warm_start"):
        HopfieldSubstrate((4, 5, 3), acceleration={"omega": 1.5})
    with pytest.raises(ConfigurationError, match="give true, false or a table"):
        HopfieldSubstrate((4, 5, 3), acceleration="fast")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extent_is_the_largest_magnitude_and_carries_a_nan(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(7, 5)) * 10.0 ** rng.integers(-3, 3)
    assert extent(a) == np.max(np.abs(a))
    assert extent(-a) == np.max(np.abs(a))
    for k in (0, a.size - 1, a.size // 2):  # a NaN anywhere, even where the other extreme sits
        b = a.copy()
        b.flat[k] = np.nan
        assert np.isnan(extent(b))
