"""Reads of theta and dE/dtheta, counted on the substrate per training step (aeqprop.reads)."""

import json

import numpy as np
import pytest

from aeqprop.data import load_dataset
from aeqprop.reads import ReadCounter
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealSubstrate


class Proxy:
    """The substrate as a protocol sees it through this object: counts the reads passing through
    (the substrate's own reads of itself never do)."""

    def __init__(self, substrate):
        self.__dict__.update(_substrate=substrate, calls=0)

    def __getattr__(self, name):
        value = getattr(self._substrate, name)
        if name not in ("parameters", "energy_gradients"):
            return value

        def counted(*args, **kwargs):
            self.__dict__["calls"] += 1
            return value(*args, **kwargs)

        return counted


class Through:
    """Runs ``inner`` on a Proxy of the substrate; the proxy's count goes into the step's extras."""

    def __init__(self, inner):
        self.inner, self.name, self.requires = inner, inner.name, inner.requires

    def step(self, substrate, x, y):
        proxy = Proxy(substrate)
        report = self.inner.step(proxy, x, y)
        report.extra["proxy_reads"] = float(proxy.calls)
        return report


class Counting(HopfieldSubstrate):
    """Counts every read it serves, its own reads of itself included."""

    own = 0

    def parameters(self):
        self.own += 1
        return super().parameters()

    def energy_gradients(self):
        self.own += 1
        return super().energy_gradients()


@pytest.mark.parametrize(
    "protocol, wrap",
    [
        (EqProp(beta=0.5, lr=0.1, variant="centered"), False),
        (Aeqprop(beta=1.0, homeostasis="native"), False),  # the simulation reads itself in homeostasis and release
        (Aeqprop(beta=1.0, homeostasis="feedback", averages=2, homeostasis_on_cap="hold"), True),
    ],
    ids=["eqprop", "aeqprop-native", "aeqprop-feedback-noisy"],
)
def test_each_step_records_the_reads_the_protocol_made(protocol, wrap):
    iris = load_dataset("iris", seed=0)
    device = Counting((4, 8, 3), eps=0.1, tol=1e-3, seed=0)
    device.own = 0  # from here on
    sub = NonidealSubstrate(device, read_noise=1e-3, seed=5) if wrap else device
    steps = []
    Trainer(sub, Through(protocol), iris, epochs=1, batch_size=16, seed=0).run(
        on_step=lambda e, k, r: steps.append(r.extra)
    )
    counted = [s["substrate_reads"] for s in steps]
    assert len(counted) == 8 and counted == [s["proxy_reads"] for s in steps]
    if isinstance(protocol, EqProp):
        assert set(counted) == {4.0}  # dE/dtheta at both nudges, theta before and after programming
        assert device.own == sum(counted)
    else:
        assert counted == [s["reads"] for s in steps]  # the protocol's own account agrees
        assert device.own > sum(counted)  # the substrate's own reads (or the wrapper's) are left out
    assert not {"parameters", "energy_gradients", "release"} & set(vars(sub))  # the counter is gone


def test_the_counter_restores_what_the_instance_had_and_skips_slotted_substrates():
    sub = HopfieldSubstrate((4, 6, 3), seed=0)
    mine = sub.parameters
    sub.parameters = mine  # an instance attribute of its own, put back on exit
    with ReadCounter(sub) as counter:
        sub.parameters()
        sub.energy_gradients()
        sub.homeostasis()  # reads inside a contract call are the substrate's own
        assert counter.reads == 2 and counter.counting
    assert vars(sub)["parameters"] is mine and "energy_gradients" not in vars(sub)

    class Slotted:
        __slots__ = ()

        def parameters(self):
            return {}

    with ReadCounter(Slotted()) as counter:
        assert not counter.counting and counter.reads == 0


def test_a_run_keeps_its_reads_per_step_in_the_store(tmp_path):
    from aeqprop import session
    from aeqprop.config import validate
    from aeqprop.store import RunStore

    config = {
        "runs": str(tmp_path),
        "dataset": {"name": "iris"},
        "substrate": {"backend": "hopfield", "options": {"hidden": [8], "tol": 1e-3}},
        "protocol": {"name": "eqprop", "options": {"lr": 0.1}},
        "schedule": {"epochs": 1, "batch_size": 16},
        "nonideal": {"read_noise": 1e-3, "seed": 3},
    }
    outcome = session.start(validate(config))
    steps = RunStore(tmp_path).metrics(outcome.run_id, "step_metrics")
    reads = np.array([json.loads(s["extra"])["substrate_reads"] for s in steps])
    assert len(reads) == 8 and np.all(reads == 4.0)
