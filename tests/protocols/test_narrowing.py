"""Protocols narrow a substrate to a capability's Protocol before calling its methods."""

import numpy as np
import pytest

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import PROTOCOLS, Substrate
from protocols.aeqprop import Aeqprop
from protocols.base import CAPABILITY_METHODS, as_eqprop
from protocols.eqprop import EqProp
from protocols.oracle_sgd import OracleSGD
from sim_backends.hopfield import HopfieldSubstrate

CONTRACT = ("clamp", "nudge", "relax", "outputs", "parameters", "close")


def shaped(methods: tuple[str, ...], info=None) -> object:
    """An object with ``info`` and exactly these methods (each returning None)."""
    return type("Shaped", (), {"info": info, **{m: lambda self, *a, **k: None for m in methods}})()


@pytest.mark.parametrize("capability", sorted(PROTOCOLS))
def test_the_methods_checked_are_exactly_those_isinstance_checks(capability):
    proto = PROTOCOLS[capability]
    names = CAPABILITY_METHODS[proto]
    assert names and not set(names) & set(CONTRACT)
    assert isinstance(shaped(CONTRACT + names), proto)
    for left_out in names:
        assert not isinstance(shaped(CONTRACT + tuple(n for n in names if n != left_out)), proto), left_out


class Claims:
    """Delegates to a Hopfield network, which claims every capability, but leaves one method out."""

    def __init__(self, missing: str):
        self.inner, self.missing = HopfieldSubstrate((3, 4, 2), seed=0), missing
        self.info = self.inner.info

    def __getattr__(self, name: str):
        if name == self.missing:
            raise AttributeError(name)
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "protocol, missing",
    [
        (EqProp(), "set_parameters"),
        (Aeqprop(homeostasis="native"), "release"),
        (Aeqprop(homeostasis="native"), "homeostasis"),
        (OracleSGD(), "true_gradient"),
    ],
)
def test_a_substrate_lacking_a_method_it_claims_is_refused_in_one_line(protocol, missing):
    sub = Claims(missing)
    x, y = np.full((1, 3), 0.5), np.eye(2)[[0]]
    with pytest.raises(ConfigurationError) as exc:
        protocol.step(sub, x, y)
    assert f"lacks {missing}()" in str(exc.value) and "\n" not in str(exc.value)


def test_narrowing_returns_the_substrate_itself():
    sub = HopfieldSubstrate((3, 4, 2), seed=0)
    assert isinstance(sub, Substrate) and as_eqprop(sub, "test") is sub
