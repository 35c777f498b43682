"""What a registered factory builds is checked before a run uses it."""

import pytest

from aeqprop import registry, session
from aeqprop.config import load_config
from aeqprop.errors import ConfigurationError


class HalfSubstrate:
    """A plugin's object that holds something open but is not a substrate (no clamp, relax, ...)."""

    def __init__(self, **options):
        self.closed = False

    def close(self):
        self.closed = True


class NotAProtocol:
    def __init__(self, **options):
        pass


def test_a_backend_that_builds_no_substrate_is_one_line_and_is_closed(monkeypatch):
    made = []
    real = registry.load

    def load(kind, name):
        if kind == "backends":
            return lambda **options: made.append(HalfSubstrate()) or made[-1]
        return real(kind, name)

    monkeypatch.setattr(registry, "load", load)
    cfg = load_config(overrides=["substrate.backend=plugin", "dataset.name=iris"])
    with pytest.raises(ConfigurationError, match=r"backend 'plugin' built a HalfSubstrate, not a substrate \(info"):
        session.build(cfg)
    assert len(made) == 1 and made[0].closed


def test_a_protocol_factory_that_builds_no_protocol_is_one_line(monkeypatch):
    real = registry.load
    monkeypatch.setattr(registry, "load", lambda kind, name: NotAProtocol if kind == "protocols" else real(kind, name))
    cfg = load_config(overrides=["dataset.name=iris"])
    with pytest.raises(ConfigurationError, match="protocol 'aeqprop' built a NotAProtocol, not a training protocol"):
        session.build(cfg)


def test_a_registry_target_that_is_not_callable_is_refused():
    with pytest.raises(
        ConfigurationError, match="aeqprop.substrate:CAPABILITIES is a frozenset, not a class or function"
    ):
        registry.factory("aeqprop.substrate:CAPABILITIES")
    assert registry.factory("sim_backends.hopfield:HopfieldSubstrate").__name__ == "HopfieldSubstrate"
