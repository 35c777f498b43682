import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from protocols.aeqprop import Aeqprop
from protocols.averaging import averaged
from protocols.eqprop import EqProp
from protocols.homeostasis import FeedbackHomeostasis
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


def test_feedback_homeostasis_does_not_exit_on_the_first_probe_under_noise():
    # Regression: a max-abs noise test used to pass on the first full-length probe, whose holding knob
    # is the unchanged knob, so the pull-back was never applied and learning stopped. The loop now
    # runs its probe budget and its final knob returns theta to where the step started.
    sub, x, y = noisy(1e-3, eps=0.02)
    sub.clamp(x)
    sub.nudge(-0.5, y)
    sub.relax()
    start = sub.inner.parameters()
    raw = np.sqrt(np.mean(np.concatenate([np.ravel(0.02 * g) for g in sub.inner.energy_gradients().values()]) ** 2))
    report = FeedbackHomeostasis()(sub)
    assert report.probes >= 12 and not report.capped
    assert report.read_noise == pytest.approx(1e-3, rel=0.05)  # RMS over all entries of two reads
    sub.release(1.0)  # a full release under the final knob lands back on the reference theta
    back = np.concatenate([np.ravel(sub.inner.parameters()[k] - start[k]) for k in start])
    assert np.sqrt(np.mean(back**2)) < 2.5e-3 < 0.6 * raw  # about 2 read-noise sigmas, well below the raw drift


def test_feedback_homeostasis_holds_theta_at_the_noise_floor_with_averages():
    sub, x, y = noisy(2e-4, eps=0.01)
    sub.clamp(x)
    sub.nudge(-0.5, y)
    sub.relax()
    start = sub.inner.parameters()
    loop = FeedbackHomeostasis(max_iter=20, averages=4, on_cap="hold")
    report = loop(sub)
    floor = 2e-4 * np.sqrt(1.5 / 4)  # RMS of a 4-read mean minus the 8-read reference
    assert report.tolerance == pytest.approx(loop.settings.noise_margin * floor, rel=0.15)
    assert report.reads == 4 * (2 + report.probes)
    sub.release(1.0)
    moved = np.concatenate([np.ravel(sub.inner.parameters()[k] - start[k]) for k in start])
    assert np.sqrt(np.mean(moved**2)) < 3 * 2e-4 / 2


def test_homeostasis_probes_and_reads_are_reported():
    sub, x, y = noisy(1e-3)
    protocol = Aeqprop(
        beta=1.0,
        homeostasis="feedback",
        homeostasis_iterations=12,
        homeostasis_probes=5,
        homeostasis_on_cap="hold",
        averages=2,
    )
    extra = protocol.step(sub, x, y).extra
    assert extra["homeostasis_max_iter"] == 12
    assert 5 <= extra["homeostasis_iterations"] <= 12
    assert extra["reads"] == 2 * (2 + extra["homeostasis_iterations"] + 1)
    assert extra["homeostasis_capped"] == float(extra["homeostasis_residual"] > extra["homeostasis_tolerance"])
    assert extra["read_noise"] == pytest.approx(1e-3, rel=0.1)


def test_noise_options_are_validated():
    for bad in (
        {"averages": 0},
        {"averages": 1.5},
        {"homeostasis_atol": "sometimes"},
        {"homeostasis_probes": 0},
        {"homeostasis_on_cap": "ignore"},
    ):
        with pytest.raises(ConfigurationError):
            Aeqprop(**bad)
    with pytest.raises(ConfigurationError):
        EqProp(averages=0)


def test_feedback_step_under_read_noise_errs_by_a_few_sigma(interior_net, flatten):
    # Read noise sigma = 1e-4 on every read of theta: the step differs from the noise-free native step
    # by a few sigma RMS (the reference, the last probes and the pull-back), not by the 1/p-amplified
    # noise of a short probe, and the loop stops within its cap.
    from sim_backends.nonideal import NonidealConfig, NonidealSubstrate

    sub, x, y = interior_net(eps=0.05, tol=1e-10)
    ideal = flatten(Aeqprop(beta=0.1).step(sub, x, y).delta)
    for seed in range(3):
        sub, x, y = interior_net(eps=0.05, tol=1e-10)
        noisy = NonidealSubstrate(sub, NonidealConfig(seed=seed, read_noise=1e-4))
        theta0 = flatten(sub.parameters())
        report = Aeqprop(beta=0.1, homeostasis="feedback").step(noisy, x, y)
        assert report.extra["homeostasis_capped"] == 0.0
        err = flatten(sub.parameters()) - theta0 - ideal
        assert np.sqrt(np.mean(err**2)) <= 3e-4


def test_knob_dither_averages_out_conductance_levels(interior_net):
    # A release lands theta on the nearest of 1024 levels (spacing ~2e-3): without dither the loop's
    # knob is only known to a level over its probe length; with the release scatter known (what the
    # calibration measures) the loop dithers its knobs and theta lands within the rounding floor.
    from protocols.homeostasis import rms
    from sim_backends.nonideal import NonidealSubstrate

    level = 2.0 / 1023
    errors = {}
    for dither in (True, False):
        errors[dither] = []
        for seed in range(3):
            sub, x, y = interior_net(layers=(20, 30, 5), eps=0.05, seed=seed)
            device = NonidealSubstrate(sub, levels=1024, seed=seed)
            device.clamp(x)
            device.nudge(-0.5, y)
            device.relax()
            start = sub.parameters()
            loop = FeedbackHomeostasis(on_cap="hold")
            loop.release_noise = level / np.sqrt(12) if dither else 0.0
            loop(device)
            device.release(1.0)  # lands on the held reference, up to the knob's error
            errors[dither].append(rms({n: sub.parameters()[n] - start[n] for n in start}))
    assert max(errors[True]) < level / np.sqrt(12) < 0.5 * min(errors[False])
