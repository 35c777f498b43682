"""Calibration of the feedback loop: stiffness against an eigenvalue, eps under its bound, noise, record."""

import numpy as np
import pytest

from protocols.aeqprop import Aeqprop
from protocols.calibration import Calibration, CalibrationSettings, Calibrator
from sim_backends.nonideal import NonidealSubstrate


def loop_stiffness(sub, x, y, beta1):
    """k = largest eigenvalue of -eps^(1/2) H eps^(1/2), H = d2Phi/dtheta2 by central differences of
    dE/dtheta at the settled state (an independent oracle: no release, no knobs)."""
    theta = sub.parameters()
    names = list(theta)
    flat = np.concatenate([theta[n].ravel() for n in names])
    sizes = [theta[n].size for n in names]

    def grad(v):
        parts = np.split(v, np.cumsum(sizes)[:-1])
        sub.set_parameters({n: p.reshape(theta[n].shape) for n, p in zip(names, parts)})
        sub.clamp(x)
        sub.nudge(beta1, y)
        sub.relax()
        g = sub.energy_gradients()
        return np.concatenate([g[n].ravel() for n in names])

    h = 1e-6
    H = np.empty((flat.size, flat.size))
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = h
        H[:, i] = (grad(flat + e) - grad(flat - e)) / (2 * h)
    sub.set_parameters(theta)
    eps = np.concatenate([np.full(s, sub.eps[n]) for n, s in zip(names, sizes)])
    root = np.sqrt(eps)
    M = -(root[:, None] * (0.5 * (H + H.T)) * root[None, :])
    return float(np.linalg.eigvalsh(M).max())


def small(interior_net, eps):
    sub, x, y = interior_net(layers=(6, 8, 3), eps=eps, batch=4)
    return sub, x, y


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_stiffness_estimate_matches_the_eigenvalue_of_eps_h(interior_net, eps):
    sub, x, y = small(interior_net, eps)
    k_true = loop_stiffness(sub, x, y, -0.5)
    settings = CalibrationSettings(
        k_target=1e9, power_probes=12, kick=1e-5, release_scatter=False
    )  # measure only, no eps change
    cal = Calibrator(settings).run(sub, x, y, (-0.5, 0.5))
    assert cal.stiffness == pytest.approx(k_true, rel=0.1)
    assert cal.eps == {n: eps for n in sub.eps}


def test_calibrated_eps_keeps_k_under_its_bound(interior_net):
    sub, x, y = small(interior_net, 2.0)
    k_before = loop_stiffness(sub, x, y, -0.5)
    assert k_before > 3
    cal = Calibrator(
        CalibrationSettings(k_target=1.0, kick=1e-5, power_probes=12, rounds=6, release_scatter=False)
    ).run(sub, x, y, (-0.5, 0.5))
    assert sub.eps == cal.eps and min(cal.eps.values()) < 2.0  # the stiff tensors got a smaller eps
    assert loop_stiffness(sub, x, y, -0.5) <= 1.0 * 1.1
    assert cal.probe == pytest.approx(min(1.0, 0.5 / cal.stiffness))


def test_calibration_measures_read_noise_and_gain_and_leaves_theta_held(interior_net):
    sub, x, y = interior_net(layers=(20, 30, 5), eps=0.05)
    start = sub.parameters()
    noisy = NonidealSubstrate(sub, read_noise=1e-4, seed=3)
    cal = Calibrator().run(noisy, x, y, (-0.5, 0.5))
    for n in start:
        assert cal.read_noise[n] == pytest.approx(1e-4, rel=0.2 if start[n].size > 50 else 0.6)
    big = [n for n in start if start[n].size > 50]
    assert all(cal.gain[n] == pytest.approx(1.0, abs=5 * cal.gain_error[n] + 0.02) for n in big)
    moved = np.concatenate([np.ravel(sub.parameters()[n] - start[n]) for n in start])
    assert np.sqrt(np.mean(moved**2)) < 5e-4  # held back where it started, within a few sigma
    assert cal.averages >= 1 and cal.reads > 16


def test_a_calibration_record_round_trips_and_is_applied(interior_net):
    sub, x, y = small(interior_net, 2.0)
    protocol = Aeqprop(beta=1.0, homeostasis="feedback")
    record = protocol.calibrate(sub, x, y)
    assert "stiffness k" in record["summary"]
    other, _, _ = small(interior_net, 2.0)
    again = Aeqprop(beta=1.0, homeostasis="feedback")
    again.apply_calibration(other, record)
    assert other.eps == sub.eps and again.feedback.probe == protocol.feedback.probe
    assert again.averages == again.feedback.averages == record["averages"]
    assert Calibration.from_dict({k: v for k, v in record.items() if k != "summary"}).beta == (-0.5, 0.5)
    assert Aeqprop(beta=1.0).calibrate(sub, x, y) is None  # native homeostasis: nothing to calibrate


def test_conductance_levels_show_as_release_scatter(interior_net):
    # A release snaps theta to 1024 levels across [-1, 1] (spacing ~2e-3): the gain probes' moves
    # (1e-4) are lost, so the loop must take at least that much as a floor and not use the gains.
    sub, x, y = interior_net(layers=(20, 30, 5), eps=0.05)
    cal = Calibrator().run(NonidealSubstrate(sub, levels=1024, seed=1), x, y, (-0.5, 0.5))
    assert 1e-4 <= cal.release_noise < 1.2e-3 and all(v == float("inf") for v in cal.gain_error.values())
    ideal, x, y = interior_net(layers=(20, 30, 5), eps=0.05)
    assert Calibrator().run(ideal, x, y, (-0.5, 0.5)).release_noise == 0.0
