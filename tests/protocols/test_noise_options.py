import numpy as np
import pytest

from aeqprop.errors import ConfigurationError, RelaxationError
from protocols.aeqprop import Aeqprop
from protocols.homeostasis import NOISE_MARGIN, FeedbackHomeostasis
from protocols.averaging import averaged
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealSubstrate


def noisy(read_noise, layers=(32, 32, 10), seed=0, eps=0.1):
    sub = NonidealSubstrate(HopfieldSubstrate(layers, eps=eps, tol=1e-3, seed=1), read_noise=read_noise, seed=seed)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, layers[0]))
    y = np.eye(layers[-1])[rng.integers(0, layers[-1], 16)]
    return sub, x, y


def test_averaged_reads_shrink_the_noise_by_sqrt_n():
    sub, x, _ = noisy(0.02)
    true = sub.inner.parameters()
    for k in (1, 16):
        err = np.concatenate([np.ravel(averaged(sub.parameters, k)[n] - true[n]) for n in true])
        assert abs(err.std() / (0.02 / np.sqrt(k)) - 1) < 0.1


def test_eqprop_averages_cut_the_estimator_noise():
    sub, x, y = noisy(0.01)
    clean, _, _ = EqProp(beta=0.5).estimate(sub.inner, x, y)
    spread = {}
    for k in (1, 16):
        g, _, _ = EqProp(beta=0.5, averages=k).estimate(sub, x, y)
        spread[k] = np.std(g["W1"] - clean["W1"])
    # g_hat = (g2 - g1) / (2 beta): noise 0.01 * sqrt(2) / 1.0 per read, / sqrt(k) averaged
    assert spread[1] == pytest.approx(0.01 * np.sqrt(2), rel=0.1)
    assert spread[16] == pytest.approx(0.01 * np.sqrt(2) / 4, rel=0.1)


def test_eqprop_averages_reads_theta_before_programming():
    sub, x, y = noisy(0.01)
    start = sub.inner.parameters()
    EqProp(beta=0.5, lr=1e-9, averages=64).step(sub, x, y)  # a negligible step: what remains is read noise written back
    written = np.concatenate([np.ravel(sub.inner.parameters()[n] - start[n]) for n in start])
    assert written.std() == pytest.approx(0.01 / 8, rel=0.1)


def test_plain_feedback_homeostasis_fails_on_read_noise_and_says_so():
    sub, x, y = noisy(1e-3)
    sub.clamp(x)
    sub.nudge(-0.5, y)
    sub.relax()
    with pytest.raises(RelaxationError, match="homeostasis"):
        FeedbackHomeostasis(max_iter=10)(sub)


def test_noise_aware_homeostasis_holds_theta_at_the_noise_floor():
    sub, x, y = noisy(2e-4, eps=0.01)
    sub.clamp(x)
    sub.nudge(-0.5, y)
    sub.relax()
    start = sub.inner.parameters()
    raw = max(np.max(np.abs(0.01 * g)) for g in sub.inner.energy_gradients().values())  # drift with u = theta
    loop = FeedbackHomeostasis(max_iter=20, atol="auto", averages=4, on_cap="hold")
    loop(sub)
    # the floor: NOISE_MARGIN x the largest difference of two reads of 4 averages among ~1400 entries
    spread = 2e-4 * np.sqrt(2 / 4)
    assert spread * 2.5 * NOISE_MARGIN < loop.last_tolerance < spread * 6 * NOISE_MARGIN
    assert 1 <= loop.last_iterations <= 20
    # theta held: a probe under the chosen knobs moves it far less than the raw drift
    sub.release(1.0)
    moved = max(np.max(np.abs(sub.inner.parameters()[k] - start[k])) for k in start)
    assert moved < 0.2 * raw


def test_homeostasis_tolerance_and_cap_are_reported():
    sub, x, y = noisy(1e-3)
    protocol = Aeqprop(beta=1.0, homeostasis="feedback", homeostasis_iterations=7, homeostasis_atol="auto",
                       homeostasis_on_cap="hold", averages=2)
    extra = protocol.step(sub, x, y).extra
    assert extra["homeostasis_max_iter"] == 7
    assert 1 <= extra["homeostasis_iterations"] <= 7
    assert extra["homeostasis_capped"] == float(extra["homeostasis_iterations"] == 7 and extra["homeostasis_residual"] > extra["homeostasis_tolerance"])
    assert extra["homeostasis_tolerance"] > 1e-3 / np.sqrt(2)


def test_noise_options_are_validated():
    for bad in ({"averages": 0}, {"averages": 1.5}, {"homeostasis_atol": "sometimes"},
                {"homeostasis_on_cap": "ignore"}):
        with pytest.raises(ConfigurationError):
            Aeqprop(**bad)
    with pytest.raises(ConfigurationError):
        EqProp(averages=0)


def test_feedback_homeostasis_under_programming_noise_errs_by_a_few_sigma(interior_net, flatten):
    # Every probe is a write with noise sigma = 1e-4. The loop must stop at the noise floor, not
    # shorten its probe (which would divide the noise by the probe length) and not run to its cap.
    from sim_backends.nonideal import NonidealConfig, NonidealSubstrate

    sub, x, y = interior_net(eps=0.05, tol=1e-10)
    ideal = flatten(Aeqprop(beta=0.1).step(sub, x, y).delta)
    for seed in range(3):
        sub, x, y = interior_net(eps=0.05, tol=1e-10)
        noisy = NonidealSubstrate(sub, NonidealConfig(seed=seed, program_noise=1e-4))
        report = Aeqprop(beta=0.1, homeostasis="feedback", homeostasis_on_cap="hold").step(noisy, x, y)
        assert report.extra["homeostasis_stalled"] == 1.0 and report.extra["homeostasis_capped"] == 0.0
        assert np.max(np.abs(flatten(report.delta) - ideal)) <= 8e-4  # the step itself is ~2e-3
