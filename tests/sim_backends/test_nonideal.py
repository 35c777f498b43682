import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import sim_backends
from aeqprop.errors import ConfigurationError
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealConfig, NonidealSubstrate, make_config


def simulated_substrates():
    """Every simulated substrate class in sim_backends (the wrapper itself excluded)."""
    found = []
    for mod in pkgutil.iter_modules(sim_backends.__path__):
        module = importlib.import_module(f"sim_backends.{mod.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and name.endswith("Substrate") and cls is not NonidealSubstrate:
                found.append(cls)
    return found


SUBSTRATES = simulated_substrates()


def make(cls, layers=(8, 6, 3), seed=1):
    """A small instance of a simulated substrate class; a netlist one holds a layered resistive circuit.

    Resistive circuits get a 1 V input gain: at the default 48 V (tuned for
    digits) the first feedback probe (the raw drift -eps dE/dg) pins this small circuit at its bounds.
    """
    from sim_backends.resistive import ResistiveSubstrate

    if cls.__name__ == "NetlistSubstrate":
        from sim_backends.netlist import layered_netlist

        return cls(text=layered_netlist(ResistiveSubstrate(layers, seed=seed, gain=1.0)), layers=layers)
    if cls is ResistiveSubstrate:
        return cls(layers, seed=seed, gain=1.0)
    if cls.__name__ == "ConvHopfieldSubstrate":  # a 4x4 image: 3x3 conv, 2x2 pooling, then the dense layers
        return cls((16, *layers[1:]), input_shape=(1, 4, 4), channels=(2,), kernel=3, pool=2, seed=seed)
    return cls(layers, seed=seed)


def batch(sub, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, sub.info.n_inputs))
    y = np.eye(sub.info.n_outputs)[rng.integers(0, sub.info.n_outputs, n)]
    return x, y


def hop(layers=(16, 12, 4), **nonideal):
    sub = HopfieldSubstrate(layers, eps=0.1, tol=1e-3, seed=1)
    return NonidealSubstrate(sub, **nonideal) if nonideal else sub


def test_hopfield_and_every_other_simulated_substrate_is_found():
    assert HopfieldSubstrate in SUBSTRATES


PROTOCOLS = {  # nudging small enough for every substrate (a resistive output has a finite conductance)
    "eqprop": lambda: EqProp(beta=0.1, lr=0.1),
    "aeqprop-native": lambda: Aeqprop(beta=0.2),
    "aeqprop-feedback": lambda: Aeqprop(
        beta=0.2, homeostasis="feedback", homeostasis_iterations=20, homeostasis_on_cap="hold"
    ),
}


@pytest.mark.parametrize("cls", SUBSTRATES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_zero_magnitude_is_bitwise_the_bare_substrate(cls, protocol):
    if not PROTOCOLS[protocol]().requires <= make(cls).info.capabilities:
        pytest.skip(f"{cls.__name__} cannot run {protocol}")
    runs = []
    for wrap in (False, True):
        sub = make(cls)
        if wrap:
            sub = NonidealSubstrate(sub, NonidealConfig(seed=123, stuck_at="initial"))
        proto = PROTOCOLS[protocol]()
        for k in range(4):
            proto.step(sub, *batch(sub, seed=k))
        runs.append((sub.parameters(), sub.knobs() if "aeqprop" in sub.info.capabilities else {}, sub.outputs()))
    (p0, u0, o0), (p1, u1, o1) = runs
    assert all(np.array_equal(p0[n], p1[n]) for n in p0)
    assert all(np.array_equal(u0[n], u1[n]) for n in u0)
    assert np.array_equal(o0, o1)
    assert any(not np.array_equal(p0[n], make(cls).parameters()[n]) for n in p0)  # it trained


@pytest.mark.parametrize("cls", SUBSTRATES, ids=lambda c: c.__name__)
def test_wrapper_composes_and_passes_the_oracle_through(cls):
    bare = make(cls)
    sub = NonidealSubstrate(make(cls), read_noise=0.05, drift=1e-3)
    x, y = batch(bare)
    assert sub.info == bare.info
    caps = bare.info.capabilities
    if "oracle" in caps:
        g_bare, g_sub = bare.true_gradient(x, y), sub.true_gradient(x, y)
        assert all(np.array_equal(g_bare[n], g_sub[n]) for n in g_bare)  # oracle: true model, no noise
    outs = []
    for s in (bare, sub):
        s.clamp(x)
        s.nudge(0.0)
        s.relax()
        outs.append(s.outputs())
    assert 0 < np.std(outs[1] - outs[0]) < 0.1  # read noise 0.05 (drift 1e-3 shifts the state a little)
    if "eqprop" in caps:
        EqProp(beta=0.1, lr=0.1).step(sub, x, y)
    if "aeqprop" in caps:
        Aeqprop(beta=0.2).step(sub, x, y)


def test_read_noise_std_matches_the_configured_value():
    sub = hop(layers=(64, 64, 10), read_noise=0.02)
    x, _ = batch(sub, n=16)
    sub.clamp(x)
    sub.nudge(0.0)
    sub.relax()
    true = {"theta": sub.inner.parameters(), "grad": sub.inner.energy_gradients(), "o": {"o": sub.inner.outputs()}}
    reads = {"theta": sub.parameters, "grad": sub.energy_gradients, "o": lambda: {"o": sub.outputs()}}
    for what, read in reads.items():
        err = np.concatenate([np.ravel(r[n] - true[what][n]) for r in (read() for _ in range(30)) for n in r])
        assert abs(err.std() / 0.02 - 1) < 0.1, what
        assert abs(err.mean()) < 0.1 * 0.02, what


def test_programming_noise_std_and_unchanged_entries():
    sub = hop(layers=(64, 64, 10), program_noise=0.01)
    theta = sub.inner.parameters()
    wanted = {n: v + 0.05 if n.startswith("W") else v for n, v in theta.items()}
    sub.set_parameters(wanted)
    got = sub.inner.parameters()
    err = np.concatenate([np.ravel(got[n] - wanted[n]) for n in got if n.startswith("W")])
    assert abs(err.std() / 0.01 - 1) < 0.1
    assert all(np.array_equal(got[n], theta[n]) for n in got if n.startswith("b"))  # no change asked, no noise


def test_write_response_is_nonlinear_and_asymmetric():
    n, a = 0.5, 0.2
    sub = hop(write_nonlinearity=n, write_asymmetry=a)
    for start, pos in ((0.0, 0.0), (0.5, 0.5), (-0.5, -0.5)):
        theta = {k: np.full_like(v, start) for k, v in sub.inner.parameters().items()}
        sub.inner.set_parameters(theta)
        sub.set_parameters({k: v + 0.01 for k, v in theta.items()})
        up = sub.inner.parameters()["W1"] - start
        assert np.allclose(up, 0.01 * (1 + a) * (1 - n * pos))
        sub.inner.set_parameters(theta)
        sub.set_parameters({k: v - 0.01 for k, v in theta.items()})
        down = sub.inner.parameters()["W1"] - start
        assert np.allclose(down, -0.01 * (1 - a) * (1 + n * pos))


def test_conductance_levels_are_counted_and_small_steps_are_lost():
    sub = hop(layers=(64, 64, 10), levels=9)  # bounds [-1, 1]: spacing 0.25
    grid = np.linspace(-1, 1, 9)
    values = np.concatenate([np.ravel(v) for v in sub.inner.parameters().values()])
    assert np.all(np.isin(values, grid))  # starts on its grid
    rng = np.random.default_rng(0)
    sub.set_parameters({k: rng.uniform(-1, 1, v.shape) for k, v in sub.inner.parameters().items()})
    values = np.concatenate([np.ravel(v) for v in sub.inner.parameters().values()])
    assert len(np.unique(values)) == 9 and np.all(np.isin(values, grid))
    before = sub.inner.parameters()
    sub.set_parameters({k: v + 0.1 for k, v in before.items()})  # below half a level
    assert all(np.array_equal(before[k], v) for k, v in sub.inner.parameters().items())


def test_drift_rate_and_decay():
    sub = hop(layers=(64, 64, 10), drift=1e-3)
    x, _ = batch(sub)
    theta0 = sub.inner.parameters()["W1"]
    for _ in range(25):
        sub.clamp(x)
    change = sub.inner.parameters()["W1"] - theta0
    assert abs(change.std() / (1e-3 * np.sqrt(25)) - 1) < 0.1
    sub = hop(layers=(64, 64, 10), drift_decay=0.01)
    theta0 = sub.inner.parameters()["W1"]
    for _ in range(10):
        sub.clamp(x)
    assert np.allclose(sub.inner.parameters()["W1"], theta0 * 0.99**10)


def test_variability_factor_is_visible_in_eqprop_and_aeqprop_steps():
    for proto in (lambda: EqProp(beta=0.5, lr=0.1), lambda: Aeqprop(beta=1.0)):
        bare, sub = hop(layers=(64, 32, 10)), hop(layers=(64, 32, 10), variability=0.3)
        x, y = batch(bare, n=16)
        d_bare, d_sub = proto().step(bare, x, y).delta, proto().step(sub, x, y).delta
        w = np.abs(d_bare["W1"]) > 1e-6
        ratio = d_sub["W1"][w] / d_bare["W1"][w]
        assert np.allclose(ratio, sub.factor["W1"][w], rtol=1e-6)
    assert abs(np.log(sub.factor["W1"]).std() / 0.3 - 1) < 0.1


def test_stuck_entries_never_change_during_training():
    sub = hop(layers=(64, 32, 10), stuck=0.1, drift=1e-3, program_noise=1e-3)
    mask = sub.stuck_mask["W1"]
    assert abs(mask.mean() / 0.1 - 1) < 0.15
    assert set(np.unique(sub.inner.parameters()["W1"][mask])) == {-1.0, 1.0}  # stuck at the bounds
    start = sub.inner.parameters()["W1"]
    for k, proto in enumerate((EqProp(beta=0.5, lr=0.1), Aeqprop(beta=1.0)) * 2):
        proto.step(sub, *batch(sub, n=16, seed=k))
    end = sub.inner.parameters()["W1"]
    assert np.array_equal(end[mask], start[mask])
    assert np.all(end[~mask] != start[~mask])


def test_finite_settling_stops_at_the_sweep_budget():
    bare, sub = hop(layers=(64, 64, 10)), hop(layers=(64, 64, 10), settle_sweeps=2)
    x, _ = batch(bare, n=16)
    outs = []
    for s in (bare, sub):
        s.clamp(x)
        s.nudge(0.0)
        report = s.relax()
        outs.append(s.outputs())
    assert report.sweeps == 2 and not report.converged
    assert np.max(np.abs(outs[0] - outs[1])) > 1e-3  # the state is visibly unsettled


def test_each_effect_draws_from_its_own_stream():
    a = hop(read_noise=0.01, seed=5)
    b = hop(read_noise=0.01, program_noise=0.01, drift=1e-3, seed=5)
    assert np.array_equal(a.parameters()["W1"], b.parameters()["W1"])


class NoBudget:
    """A substrate without a sweep budget to cap."""

    def __init__(self):
        self._sub = hop()
        self.info = self._sub.info

    def parameters(self):
        return self._sub.parameters()


def test_bad_configurations_fail_in_one_line():
    for bad in ({"levels": 1}, {"read_noise": -1.0}, {"noise": 0.1}, {"write_nonlinearity": 1.0}):
        with pytest.raises(ConfigurationError) as err:
            make_config(bad)
        assert "\n" not in str(err.value) and "nonideal." in str(err.value)
    with pytest.raises(ConfigurationError):
        NonidealSubstrate(NoBudget(), settle_sweeps=3)
    assert make_config({}).ideal and not make_config({"drift": 1e-4}).ideal


def test_continual_eqprop_behind_the_wrapper_keeps_its_one_sweep_phases(interior_net, flatten):
    # The protocol sets max_sweeps = 1 for its nudged phase: behind the wrapper that must reach the
    # wrapped substrate, or each "single sweep" settles fully and the rule becomes one-sided EqProp.
    from protocols.continual import ContinualEqProp

    bare, x, y = interior_net()
    want = ContinualEqProp(beta=0.2, lr=1e-3).step(bare, x, y)
    sub, x, y = interior_net()
    wrapped = NonidealSubstrate(sub, NonidealConfig(seed=5))
    cap = sub.max_sweeps
    got = ContinualEqProp(beta=0.2, lr=1e-3).step(wrapped, x, y)
    assert got.sweeps["nudged"] == want.sweeps["nudged"] > 1
    assert np.array_equal(flatten(got.delta), flatten(want.delta))
    assert sub.max_sweeps == cap and "max_sweeps" not in vars(wrapped)


def test_native_homeostasis_feels_the_read_noise_of_the_force_it_measures(interior_net):
    sub, x, y = interior_net()
    sub.clamp(x)
    sub.nudge(-0.1, y)
    sub.relax()
    sub.homeostasis()
    clean = sub.knobs()
    wrapped = NonidealSubstrate(sub, NonidealConfig(seed=1, read_noise=1e-3))
    wrapped.homeostasis()
    err = np.concatenate([np.ravel(sub.knobs()[n] - clean[n]) for n in clean])
    assert err.std() == pytest.approx(1e-3, rel=0.2) and abs(err.mean()) < 5e-4


def test_a_release_is_physics_not_a_programming_write(interior_net):
    # Programming noise is charged to set_parameters only: a release under programming noise moves
    # theta exactly as on the ideal device, while a write of the same values carries the noise.
    moved = {}
    for noise in (0.0, 1e-3):
        sub, x, y = interior_net()
        wrapped = NonidealSubstrate(sub, NonidealConfig(seed=2, program_noise=noise))
        wrapped.clamp(x)
        wrapped.nudge(0.1, y)
        wrapped.relax()
        wrapped.release(1.0)
        moved[noise] = sub.parameters()
        target = {n: v + 0.01 for n, v in moved[noise].items()}
        wrapped.set_parameters(target)
        written = np.concatenate([np.ravel(sub.parameters()[n] - target[n]) for n in target])
        assert written.std() == pytest.approx(noise, rel=0.2, abs=1e-12)
    for n in moved[0.0]:
        assert np.array_equal(moved[0.0][n], moved[1e-3][n])


def test_finite_settling_runs_plain_sweeps():
    # settle_sweeps models a device that settles by its own dynamics: the budget counts plain block
    # coordinate descent sweeps, without the simulation's heavy-ball acceleration or warm start
    from sim_backends.hopfield import HopfieldSubstrate

    x = np.random.default_rng(0).uniform(0, 1, (4, 8))
    outputs = {}
    for name, sub in {
        "device": NonidealSubstrate(HopfieldSubstrate((8, 12, 12, 3), seed=0), settle_sweeps=5),
        "plain": HopfieldSubstrate((8, 12, 12, 3), seed=0, acceleration=False, max_sweeps=5),
        "accelerated": HopfieldSubstrate((8, 12, 12, 3), seed=0, max_sweeps=5),
    }.items():
        sub.clamp(x)
        sub.relax()  # the free phase (where the accelerated sweeps measure their rate)
        sub.nudge(-0.5, np.eye(3)[[0, 1, 2, 0]])
        sub.relax()
        outputs[name] = sub.outputs()
    assert np.array_equal(outputs["device"], outputs["plain"])
    assert not np.array_equal(outputs["accelerated"], outputs["plain"])  # the budget would mean more


def test_a_knob_pulling_past_a_bound_moves_a_varied_entry_toward_that_bound():
    """Each entry moves toward ``u - f eps dE/dtheta``: a knob far below pulls it down to the low
    bound whatever its factor f. The device model once inferred the target from the wrapped
    substrate's move after the bounds had cut it, and sent entries with f > 1 to the high bound."""
    sub = hop(layers=(64, 32, 10), variability=1.0)
    x, _ = batch(sub)
    sub.clamp(x)
    sub.nudge(0.0)
    sub.relax()
    lo, hi = sub.info.parameter_bounds["W2"]
    u = sub.knobs()
    far = np.zeros(u["W2"].shape, bool)
    far.ravel()[::7] = True
    u["W2"] = np.where(far, -50.0, u["W2"])
    sub.set_knobs(u)
    sub.release(0.5)  # half way to u - f eps g, far below the bound for the pulled entries
    w2 = sub.inner.parameters()["W2"]
    assert np.all(w2[far] == lo) and np.mean(sub.factor["W2"][far] > 1) > 0.3
    assert np.all((w2[~far] > lo) & (w2[~far] < hi))
