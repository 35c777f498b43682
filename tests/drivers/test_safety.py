"""Safety paths against the virtual lab: no value past a limit ever goes out, and every exit leaves sources off."""

import re
import threading
import time
import tomllib

import numpy as np
import pytest

from aeqprop.errors import SafetyLimitError
from drivers.hardware import InstrumentSubstrate
from drivers.wiring import lab_wiring_toml, parse_wiring
from protocols.aeqprop import Aeqprop
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.virtual_lab import BoardServer, ScpiServer

SET = re.compile(r"SOUR:VOLT ([^,;]+),\(@(\d+)\)")


def make_sim():
    return HopfieldSubstrate((4, 5, 3), eps=0.1, seed=3, max_batch=1)


def record(*servers):
    """Every line each server receives, in one shared order: [(server index, line)]."""
    log, lock = [], threading.Lock()
    for k, server in enumerate(servers):
        execute = server.front.execute

        def wrapped(line, trip, k=k, execute=execute):
            with lock:
                log.append((k, line))
            return execute(line, trip)

        server.front.execute = wrapped
    return log


def wiring(address, **edits):
    data = tomllib.loads(lab_wiring_toml(make_sim().info, address))
    for key, value in edits.items():
        data[key].update(value)
    return data


def test_levels_left_out_of_range_are_brought_within_limits_with_outputs_off_before_any_output_is_on():
    with ScpiServer(make_sim()) as lab:
        lab.model.levels["input"][:] = [4.9, -3.0, 0.2, 0.7]  # left there by the last user
        log = record(lab)
        w = parse_wiring(wiring(lab.address, inputs={"limits": {"range": [-0.6, 0.6], "max_step": 0.1}}))
        events = []
        with InstrumentSubstrate(w, on_event=lambda k, m: events.append((k, m))) as hw:
            lines = [line for _, line in log]
            first_on = next(i for i, line in enumerate(lines) if line.startswith("OUTP ON"))
            inputs_off = next(i for i, line in enumerate(lines) if line.startswith("OUTP OFF") and "1001" in line)
            fixed = next(i for i, line in enumerate(lines) if "SOUR:VOLT 0.0,(@1001)" in line)
            assert inputs_off < fixed < first_on
            assert lab.model.levels["input"].tolist() == [0.0, 0.0, 0.2, 0.0]
            assert any(k == "safety" and "3 channel(s)" in m for k, m in events)
            hw.clamp(np.full((1, 4), 0.5))
            hw.relax()
        sent = [(float(v), int(ch)) for _, line in log for v, ch in SET.findall(line)]
        assert all(-0.6 <= v <= 0.6 for v, ch in sent if 1001 <= ch <= 1004), sent
        assert lab.model.outputs_on == set()


def test_the_hold_line_on_another_instrument_goes_to_zero_before_any_other_source_moves():
    sim = make_sim()
    with ScpiServer(sim) as lab, BoardServer(model=lab.model) as board:
        data = wiring(lab.address)
        data["instruments"]["holder"] = {"address": board.address, "profile": "board", "timeout": 2.0}
        data["hold"].update(instrument="holder", release="timed")
        with InstrumentSubstrate(parse_wiring(data)) as hw:
            hw.clamp(np.full((1, 4), 0.5))
            hw.nudge(0.5, np.eye(3)[[0]])
            hw._queue(hw.roles["hold"], [1.0])  # the parameters are released when the run stops
            hw._flush()
            log = record(lab, board)
        order = [(k, line) for k, line in log]
        hold_zero = next(i for i, (k, line) in enumerate(order) if k == 1 and "9000=0.0" in line)
        first_scpi_set = next(i for i, (k, line) in enumerate(order) if k == 0 and "SOUR:VOLT" in line)
        assert hold_zero < first_scpi_set
        assert lab.model.levels["hold"][0] == 0.0 and lab.model.outputs_on == set()


def test_a_release_longer_than_the_wiring_allows_is_refused_before_a_byte_goes_out():
    with ScpiServer(make_sim()) as lab:
        with InstrumentSubstrate(parse_wiring(wiring(lab.address, hold={"max_seconds": 5.0}))) as hw:
            before = lab.front.bytes_received
            with pytest.raises(
                SafetyLimitError, match=r"10000.0 s on lab channel 9000 is outside \[0, 5.0\] s \(hold.max_seconds\)"
            ):
                hw.release(1e4)
            with pytest.raises(SafetyLimitError, match="hold.max_seconds"):
                hw.release(-1.0)
            assert lab.front.bytes_received == before
            hw.release(0.5)
            assert lab.model.calls[-1] == "release"


def test_native_homeostasis_reaches_a_board_that_latches_a_whole_set_at_once():
    """The trigger goes out as a pulse in its place among the writes, not as SET 9001=1,9001=0."""
    x, y = np.full((1, 4), 0.5), np.eye(3)[[1]]
    direct = make_sim()
    Aeqprop(beta=1.0).step(direct, x, y)
    with BoardServer(make_sim()) as board:
        log = record(board)
        w = parse_wiring(tomllib.loads(lab_wiring_toml(make_sim().info, board.address, profile="board")))
        with InstrumentSubstrate(w) as hw:
            Aeqprop(beta=1.0).step(hw, x, y)
            assert "homeostasis" in board.model.calls
            theta = hw.parameters()
    assert any("PULSE 9001 0.001 1.0" in line for _, line in log)
    assert max(float(np.max(np.abs(theta[n] - direct.parameters()[n]))) for n in theta) <= 1e-9


def test_closing_against_a_dead_instrument_gives_up_after_its_first_unanswered_message():
    with ScpiServer(make_sim()) as lab:
        data = wiring(lab.address)
        data["instruments"]["lab"].update(timeout=0.2, retries=2)
        hw = InstrumentSubstrate(parse_wiring(data))
        lab.front.execute = lambda line, trip: time.sleep(1.0)  # wedged: nothing answers
        t0 = time.perf_counter()
        with pytest.raises(Exception, match="does not answer"):
            hw.close()
        assert time.perf_counter() - t0 < 1.5  # 3 timeouts, not 3 per step
