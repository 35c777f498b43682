"""Activations of the discrete-time network: derivatives, energy terms, and the nudged output step."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from sim_backends.activations import Box, Linear, Logistic, SoftClip, nudged_output

SMOOTH = [Logistic(), SoftClip(-1.0, 2.0), Linear()]


@pytest.mark.parametrize("rho", SMOOTH + [Box(0.0, 1.0)], ids=lambda r: type(r).__name__)
def test_derivative_is_the_slope(rho):
    a = np.linspace(-3.0, 4.0, 141) + 0.013  # off the clip's kinks at 0 and 1
    h = 1e-6
    np.testing.assert_allclose(rho.derivative(a), (rho(a + h) - rho(a - h)) / (2 * h), atol=1e-8)


@pytest.mark.parametrize("rho", SMOOTH, ids=lambda r: type(r).__name__)
def test_self_energy_derivative_is_the_inverse_activation(rho):
    """G' = rho^(-1): the state the activation gives for a = G'(s) is s again."""
    s = rho(np.linspace(-2.5, 3.5, 61))
    h = 1e-7
    dG = (rho.self_energy(s + h) - rho.self_energy(s - h)) / (2 * h)
    np.testing.assert_allclose(rho(dG), s, atol=1e-6)


def test_logistic_is_the_papers_sigmoid_and_never_overflows():
    a = np.array([-1e6, -1.0, 0.0, 0.5, 1.0, 1e6])
    np.testing.assert_allclose(Logistic()(a), 1.0 / (1.0 + np.exp(-4.0 * (np.clip(a, -50, 50) - 0.5))), atol=1e-15)
    assert Logistic().derivative(np.array([0.5]))[0] == pytest.approx(1.0)
    assert np.all(np.isfinite(Logistic().derivative(a)))


def test_soft_clip_is_the_clip_with_rounded_kinks():
    rho = SoftClip(-1.0, 2.0)
    a = np.linspace(-4.0, 5.0, 181)
    assert np.all((rho(a) > -1.0) & (rho(a) < 2.0))
    assert np.max(np.abs(rho(a) - np.clip(a, -1.0, 2.0))) < 0.2  # ln 2 / 4 at the kinks
    inside = np.linspace(0.0, 1.0, 21)
    assert np.all(np.abs(rho(inside) - inside) < 5e-3) and np.all(rho.derivative(inside) > 0.98)
    assert rho.max_slope() == pytest.approx(rho.derivative(np.array([0.5]))[0])


@pytest.mark.parametrize(
    "rho", [SoftClip(-1.0, 2.0), Logistic(), Box(-1.0, 2.0), Linear()], ids=lambda r: type(r).__name__
)
@pytest.mark.parametrize("beta", [0.5, -0.6, 4.0, 1e-3])
def test_nudged_output_is_the_exact_minimiser(rho, beta):
    rng = np.random.default_rng(0)
    a, y = rng.normal(0.5, 2.0, (6, 5)), rng.uniform(0, 1, (6, 5))
    o = nudged_output(rho, a, beta, y)
    np.testing.assert_allclose(o, rho(a - beta * (o - y)), atol=1e-12)  # o = rho(dPhi/do - beta dC/do) at o
    if isinstance(rho, Box):
        np.testing.assert_array_equal(o, np.clip((a + beta * y) / (1 + beta), -1.0, 2.0))
        return
    # a minimum of G(o) - o a + beta/2 (o - y)^2 along each unit
    f = lambda v: rho.self_energy(v) - v * a + 0.5 * beta * (v - y) ** 2  # noqa: E731
    ok = np.ones_like(o, dtype=bool) if isinstance(rho, Linear) else (o > rho.lo + 1e-3) & (o < rho.hi - 1e-3)
    assert ok.mean() > 0.5
    o = np.where(ok, o, 0.5)  # saturated units (G's barrier): left out
    for d in (1e-4, -1e-4):
        assert np.all((f(o + d) > f(o))[ok])


def test_nudged_output_refuses_a_beta_without_a_unique_step():
    with pytest.raises(ConfigurationError, match="beta=-1.1"):
        nudged_output(Logistic(), np.zeros((1, 2)), -1.1, np.zeros((1, 2)))
