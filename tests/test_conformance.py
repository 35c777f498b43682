"""Every registered backend, the non-ideal wrapper and the instrument substrate against the contract.

Both ways: a substrate that claims a capability satisfies its Protocol and its methods return
what the Protocol declares; a substrate that does not claim one is refused it, by its own
method or by every registered training protocol that requires it (one line, before any change).
"""

from __future__ import annotations

import tomllib
from contextlib import ExitStack

import numpy as np
import pytest

from aeqprop import registry
from aeqprop.errors import AeqpropError, ConfigurationError
from aeqprop.substrate import PROTOCOLS, RelaxReport, Substrate, TrainingProtocol
from drivers.hardware import InstrumentSubstrate
from drivers.wiring import lab_wiring_toml, parse_wiring
from sim_backends.conv import ConvHopfieldSubstrate
from sim_backends.discrete import DiscreteSubstrate
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.netlist import NetlistSubstrate, layered_netlist
from sim_backends.nonideal import NonidealSubstrate
from sim_backends.resistive import ResistiveSubstrate
from sim_backends.untied import UntiedSubstrate
from sim_backends.virtual_lab import ScpiServer

LAYERS = (3, 4, 2)


def _lab(stack: ExitStack, drop: tuple[str, ...] = ()) -> InstrumentSubstrate:
    """The instrument substrate over the virtual lab; ``drop``: wiring roles left unwired."""
    sim = HopfieldSubstrate(LAYERS, seed=1, max_batch=1)
    lab = stack.enter_context(ScpiServer(sim))
    data = tomllib.loads(lab_wiring_toml(sim.info, lab.address, profile="multichannel", timeout=2.0))
    for role in drop:
        if role in ("hold", "homeostasis"):
            data.pop(role)
        else:  # knob+readout (aeqprop) or program+gradient (eqprop) of every parameter
            for p in data["parameters"].values():
                p.pop(role)
    return stack.enter_context(InstrumentSubstrate(parse_wiring(data)))


#: Small builds: name -> (ExitStack -> substrate). Every registered backend must appear here.
BUILDS = {
    "hopfield": lambda s: HopfieldSubstrate(LAYERS, seed=0),
    "resistive": lambda s: ResistiveSubstrate(LAYERS, seed=0),
    "discrete": lambda s: DiscreteSubstrate(LAYERS, seed=0),
    "untied": lambda s: UntiedSubstrate(LAYERS, seed=0),
    "conv": lambda s: ConvHopfieldSubstrate((36, 4, 2), input_shape=(1, 6, 6), channels=(2,), kernel=3, pool=2, seed=0),
    "netlist": lambda s: NetlistSubstrate(text=layered_netlist(ResistiveSubstrate(LAYERS, seed=0))),
    "instrument": _lab,
}
VARIANTS = {
    "nonideal(hopfield)": lambda s: NonidealSubstrate(HopfieldSubstrate(LAYERS, seed=0), read_noise=0.01, seed=0),
    "instrument, no homeostasis line": lambda s: _lab(s, ("homeostasis",)),
    "instrument, no program/gradient": lambda s: _lab(s, ("program", "gradient")),
    "instrument, no knobs": lambda s: _lab(s, ("hold", "homeostasis", "knob")),
}
ALL = {**BUILDS, **VARIANTS}


def test_every_registered_backend_has_a_conformance_build():
    assert set(registry.available("backends")) == set(BUILDS)


def _xy(sub: Substrate) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (1, sub.info.n_inputs))
    return x, np.eye(sub.info.n_outputs)[[0]]


def _check_theta_like(d: dict, sub: Substrate, names=None) -> None:
    names = set(sub.info.parameter_shapes) if names is None else names
    assert set(d) == names
    for n in names:
        assert np.shape(d[n]) == tuple(sub.info.parameter_shapes[n]), n


def _exercise(cap: str, sub, x, y) -> None:
    """Call what the capability promises and check the declared return types."""
    if cap == "eqprop":
        _check_theta_like(sub.energy_gradients(), sub)
        clipped = sub.set_parameters({n: 2.0 * np.ones(s) for n, s in sub.info.parameter_shapes.items()})
        assert isinstance(clipped, dict) and set(clipped) == set(sub.info.parameter_shapes)
        # every entry was past its bound of at most 1: each tensor reports all its entries clipped
        assert {n: int(c) for n, c in clipped.items()} == {
            n: int(np.prod(s, dtype=int))
            for n, s in sub.info.parameter_shapes.items()
            if sub.info.parameter_bounds[n][1] < 2.0
        } | {n: 0 for n in sub.info.parameter_shapes if sub.info.parameter_bounds[n][1] >= 2.0}
    elif cap == "aeqprop":
        u = sub.knobs()
        _check_theta_like(u, sub, set(u))
        sub.set_knobs(u)
        assert isinstance(sub.release(1.0), RelaxReport)
    elif cap == "homeostasis":
        assert sub.homeostasis() is None
    elif cap == "oracle":
        assert np.isfinite(float(sub.loss(x, y)))
        _check_theta_like(sub.true_gradient(x, y), sub)


@pytest.mark.parametrize("name", sorted(ALL))
def test_claimed_capabilities_are_satisfied_and_unclaimed_ones_refused(name):
    with ExitStack() as stack:
        sub = ALL[name](stack)
        assert isinstance(sub, Substrate)
        caps = sub.info.capabilities
        x, y = _xy(sub)
        sub.clamp(x)
        sub.nudge(0.0)
        assert isinstance(sub.relax(), RelaxReport)
        assert sub.outputs().shape == (1, sub.info.n_outputs)
        for cap, proto in PROTOCOLS.items():
            if cap in caps:
                assert isinstance(sub, proto), f"{name} claims {cap!r} but lacks {proto.__name__}'s methods"
                _exercise(cap, sub, x, y)
            elif isinstance(sub, proto):  # the shape is there (a subclass, a generic driver): it must refuse
                with pytest.raises(AeqpropError) as exc:
                    _exercise(cap, sub, x, y)
                assert "\n" not in str(exc.value)


def _protocols() -> dict[str, TrainingProtocol]:
    return {name: registry.load("protocols", name)() for name in registry.available("protocols")}


def test_every_registered_protocol_is_a_training_protocol_naming_known_capabilities():
    for name, proto in _protocols().items():
        assert isinstance(proto, TrainingProtocol), name
        assert set(proto.requires) <= set(PROTOCOLS), name


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_registered_protocol_refuses_a_substrate_lacking_what_it_requires(name):
    refused = 0
    with ExitStack() as stack:
        sub = ALL[name](stack)
        x, y = _xy(sub)
        true = getattr(sub, "inner", sub)  # the non-ideal wrapper reads theta with noise: compare the device's
        before = true.parameters()
        for pname, proto in _protocols().items():
            missing = set(proto.requires) - set(sub.info.capabilities)
            if not missing:
                continue
            with pytest.raises(ConfigurationError) as exc:
                proto.step(sub, x, y)
            message = str(exc.value)
            assert "\n" not in message and all(m in message for m in missing), (pname, message)
            refused += 1
        for n, v in true.parameters().items():
            np.testing.assert_array_equal(v, before[n])
    # the substrates that lack something are refused by at least one protocol
    assert refused > 0 or set(sub.info.capabilities) >= {"eqprop", "aeqprop", "homeostasis", "oracle"}
