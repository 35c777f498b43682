"""Training through the virtual lab over real I/O equals training the simulation directly."""

import dataclasses
import tomllib

import numpy as np
import pytest

from aeqprop.data import Dataset
from aeqprop.errors import ConfigurationError, InstrumentError, SafetyLimitError
from aeqprop.trainer import Trainer
from drivers.hardware import InstrumentSubstrate
from drivers.wiring import lab_wiring_toml, parse_wiring
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.virtual_lab import CHANNELS, BoardServer, Faults, LabError, LabModel, ScpiServer

LAYERS = (4, 5, 3)


def make_sim():
    return HopfieldSubstrate(LAYERS, eps=0.1, seed=3, max_batch=1)


def toy_data(n_train=6, n_test=3):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n_train + n_test, 4))
    labels = rng.integers(0, 3, n_train + n_test)
    return Dataset("toy", x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], 3)


PROTOCOLS = {
    "eqprop": lambda: EqProp(beta=0.5, lr=0.05),
    "aeqprop-feedback": lambda: Aeqprop(beta=1.0, homeostasis="feedback"),
    "aeqprop-native": lambda: Aeqprop(beta=1.0),
}


def train_direct(protocol, data):
    sim = make_sim()
    Trainer(sim, PROTOCOLS[protocol](), data, epochs=1, batch_size=1, seed=0).run()
    return sim.parameters()


def wiring_for(server, profile, timeout=2.0, **overrides):
    data = tomllib.loads(lab_wiring_toml(make_sim().info, server.address, profile=profile, timeout=timeout))
    for key, value in overrides.items():
        data[key].update(value)
    return parse_wiring(data)


def train_through(server, profile, protocol, data, events=None, timeout=2.0):
    hook = (lambda kind, message: events.append((kind, message))) if events is not None else None
    with InstrumentSubstrate(wiring_for(server, profile, timeout), on_event=hook) as hw:
        Trainer(hw, PROTOCOLS[protocol](), data, epochs=1, batch_size=1, seed=0).run()
        theta = hw.parameters()
    return theta


def max_diff(a, b):
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_pyvisa_over_tcp_reproduces_direct_training(protocol):
    data = toy_data()
    direct = train_direct(protocol, data)
    with ScpiServer(make_sim()) as lab:
        theta = train_through(lab, "multichannel", protocol, data)
        assert lab.model.outputs_on == set()  # close() switched everything off
        assert max_diff(lab.model.sub.parameters(), direct) <= 1e-9
    assert max_diff(theta, direct) <= 1e-9
    assert max_diff(direct, make_sim().parameters()) > 1e-3  # training did move theta


@pytest.mark.parametrize("protocol", ["eqprop", "aeqprop-feedback"])
def test_pyserial_over_a_pseudo_terminal_reproduces_direct_training(protocol):
    data = toy_data()
    with BoardServer(make_sim()) as board:
        theta = train_through(board, "board", protocol, data)
        assert board.model.outputs_on == set()
    assert max_diff(theta, train_direct(protocol, data)) <= 1e-9


@pytest.mark.parametrize("server_cls,profile", [(ScpiServer, "multichannel"), (BoardServer, "board")])
def test_dropped_and_garbled_replies_are_retried_reported_and_change_nothing(server_cls, profile):
    data = toy_data(n_train=8, n_test=2)
    events = []
    with server_cls(make_sim(), faults=Faults(drop=0.01, garble=0.01, seed=5)) as lab:
        theta = train_through(lab, profile, "aeqprop-feedback", data, events, timeout=0.1)
        injected = dict(lab.front.injected)
    assert max_diff(theta, train_direct("aeqprop-feedback", data)) <= 1e-9
    kinds = [k for k, _ in events]
    assert injected["drop"] > 0 and injected["garble"] > 0
    assert kinds.count("timeout") == injected["drop"]
    assert kinds.count("garbled") == injected["garble"]
    assert kinds.count("retry") == injected["drop"] + injected["garble"]
    assert all(lab.address in m for _, m in events)


def test_a_disconnect_mid_run_reconnects_and_changes_nothing():
    data = toy_data(n_train=4, n_test=2)
    events = []
    with ScpiServer(make_sim(), faults=Faults(disconnect=0.03, seed=2)) as lab:
        theta = train_through(lab, "multichannel", "eqprop", data, events, timeout=0.5)
        assert lab.front.injected["disconnect"] > 0
    assert max_diff(theta, train_direct("eqprop", data)) <= 1e-9
    assert [k for k, _ in events].count("reopen") >= lab.front.injected["disconnect"]


def test_a_value_past_a_limit_is_refused_before_any_byte_goes_out():
    with ScpiServer(make_sim()) as lab, InstrumentSubstrate(wiring_for(lab, "multichannel")) as hw:
        before, calls = lab.front.bytes_received, list(lab.model.calls)
        with pytest.raises(SafetyLimitError, match=r"inputs\[2\] = 20.0 on lab channel 1003 is outside its range"):
            hw.clamp(np.array([[0.1, 0.2, 20.0, 0.3]]))
        with pytest.raises(SafetyLimitError, match="nudge.strength"):
            hw.nudge(500.0, np.array([[0.0, 1.0, 0.0]]))
        with pytest.raises(SafetyLimitError, match="parameters.W1.knob"):
            hw.set_knobs({"W1": np.full((4, 5), 1e3)})
        assert lab.front.bytes_received == before
        hw.relax()  # the refused writes were not queued either
        assert lab.model.calls[len(calls) :] == ["relax", "outputs"]


def test_an_exception_mid_step_leaves_every_output_off():
    class Boom(Exception):
        pass

    class FailingAeqprop(Aeqprop):
        def step(self, substrate, x, y):
            substrate.clamp(x)
            substrate.nudge(0.5, y)
            substrate.relax()
            raise Boom("mid-step")

    with ScpiServer(make_sim()) as lab:
        with pytest.raises(Boom):
            with InstrumentSubstrate(wiring_for(lab, "multichannel")) as hw:
                assert len(lab.model.outputs_on) > 0
                Trainer(hw, FailingAeqprop(), toy_data(), epochs=1, batch_size=1).run()
        assert lab.model.outputs_on == set()
        assert not lab.model.levels["input"].any() and lab.model.levels["beta"][0] == 0.0


def test_a_compliance_trip_stops_training_with_the_instruments_message_and_outputs_off():
    with ScpiServer(make_sim(), faults=Faults(compliance_trip=1.0)) as lab:
        with pytest.raises(InstrumentError, match="Compliance tripped on channel 1001"):
            train_through(lab, "multichannel", "eqprop", toy_data())
        assert lab.model.outputs_on == set()


def test_large_steps_are_ramped_in_steps_of_at_most_max_step():
    with ScpiServer(make_sim()) as lab:
        w = wiring_for(lab, "multichannel", inputs={"limits": {"range": [-1.0, 1.0], "max_step": 0.25}})
        with InstrumentSubstrate(w) as hw:
            start = len(lab.model.calls)
            hw.clamp(np.array([[1.0, 0.0, 0.0, 0.5]]))
            hw.relax()
            assert lab.model.calls[start:] == ["clamp"] * 4 + ["relax", "outputs"]
            assert lab.model.levels["input"].tolist() == [1.0, 0.0, 0.0, 0.5]


@pytest.mark.parametrize("server_cls,profile", [(ScpiServer, "multichannel"), (BoardServer, "board")])
def test_late_replies_never_run_a_release_twice(server_cls, profile):
    """A reply that comes after the timeout: the retry must not release (or relax, or trigger) again."""
    data = toy_data(n_train=6, n_test=2)
    events = []
    with server_cls(make_sim(), faults=Faults(late=0.05, late_seconds=0.3, seed=1)) as lab:
        theta = train_through(lab, profile, "aeqprop-native", data, events, timeout=0.2)
        assert lab.front.injected["late"] > 0
        releases = lab.model.calls.count("release")
    assert releases == 6  # one per training sample
    assert max_diff(theta, train_direct("aeqprop-native", data)) <= 1e-9


def test_a_board_that_resets_mid_run_stops_the_run_instead_of_training_on_at_zero_volts():
    from drivers.board import BoardReset

    with BoardServer(make_sim(), faults=Faults(reset=0.05, seed=3)) as board:
        with pytest.raises(BoardReset, match="has reset since it was armed"):
            train_through(board, "board", "eqprop", toy_data(n_train=20))
        assert board.front.injected["reset"] >= 1
        assert board.model.outputs_on == set()


def test_the_scpi_lab_answers_like_an_instrument():
    import socket

    with ScpiServer(make_sim()) as lab:
        with socket.create_connection(("127.0.0.1", lab.port), timeout=2) as s:
            f = s.makefile("rwb")

            def say(line):
                f.write(line.encode() + b"\n")
                f.flush()

            say("SOUR:VOLT 0.5,(@1001)")  # not a query: no reply line at all
            say("SOUR:VOLT 50.0,(@1001);:SYST:ERR?")
            assert f.readline().decode().startswith('-222,"Data out of range')
            say("FROB 1;:SYST:ERR?")
            assert f.readline().decode().startswith('-113,"Undefined header')
            say("SOUR:VOLT nan,(@1001);:SYST:ERR?")  # refused, and the connection stays up
            assert f.readline().decode().startswith('-224,"Illegal parameter value')
            say("SOUR:VOLT? (@1001)")
            assert f.readline().decode().strip() == "0.5"
        assert lab.model.levels["input"][0] == 0.5


def test_safe_on_the_board_sets_every_dac_to_zero_and_leaves_theta_held():
    sim = make_sim()
    with BoardServer(sim) as board:
        w = wiring_for(board, "board")
        with InstrumentSubstrate(w) as hw:
            hw.set_knobs({"W1": np.full((4, 5), 0.3)})
            hw.clamp(np.full((1, 4), 0.5))
            hw.relax()
            theta = hw.parameters()
        assert not board.model.levels["knob"].any() and not board.model.levels["input"].any()
        assert max_diff(sim.parameters(), theta) == 0.0


@pytest.mark.parametrize(
    "server_cls,profile,error",
    [(BoardServer, "board", "did not answer"), (ScpiServer, "multichannel", "overflow value")],
)
def test_a_nan_or_overflow_reading_stops_with_one_instrument_error_and_outputs_off(server_cls, profile, error):
    with server_cls(make_sim(), faults=Faults(nan=1.0, seed=0)) as lab:
        with pytest.raises(InstrumentError, match=error):
            with InstrumentSubstrate(wiring_for(lab, profile, timeout=0.2)) as hw:
                hw.outputs()
        assert lab.model.outputs_on == set()


class ContractOnly:
    """A substrate with the base contract alone: no eqprop, aeqprop or homeostasis methods."""

    def __init__(self):
        self._sim = make_sim()
        self.info = dataclasses.replace(self._sim.info, capabilities=frozenset())
        for name in ("clamp", "nudge", "relax", "outputs", "parameters", "close"):
            setattr(self, name, getattr(self._sim, name))


def test_a_capability_the_substrate_lacks_is_the_labs_error_5_not_a_traceback():
    model = LabModel(ContractOnly())
    for group, verb in (("gradient", "cannot read or program"), ("knob", None)):
        first = CHANNELS[group]
        if verb is None:  # without knobs the knob channels read back their levels
            assert model.read([first]) == [0.0]
            continue
        with pytest.raises(LabError, match=verb) as err:
            model.read([first])
        assert err.value.code == 5 and "ContractOnly" in err.value.text
    for line, verb in (("hold", "has no knobs"), ("homeostasis", "no native homeostasis")):
        with pytest.raises(LabError, match=verb) as err:
            model.set(CHANNELS[line], 1.0)
        assert err.value.code == 5
    model.set(CHANNELS["program"], 0.1)
    with pytest.raises(LabError, match="set_parameters failed: .*cannot read or program"):
        model.flush()
    model.safe()  # no knobs to zero: nothing to refuse


def test_a_server_with_neither_a_substrate_nor_a_model_is_refused_in_one_line():
    with pytest.raises(ConfigurationError, match="needs a substrate or a LabModel"):
        ScpiServer()
