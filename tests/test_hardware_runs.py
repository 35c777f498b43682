"""A recorded run on instruments: the virtual lab over pyvisa-py with faults, through the run store."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aeqprop import session
from aeqprop.config import load_config
from aeqprop.store import RunStore
from drivers.wiring import lab_wiring_toml
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.virtual_lab import Faults, ScpiServer
from tests.conftest import PATIENCE

ROOT = Path(__file__).resolve().parents[1]
SIM = dict(layers=(4, 5, 3), eps=0.1, seed=0, tol=1e-3, max_sweeps=100, max_batch=1)


def run(tmp_path, **fields):
    base = {
        "dataset.name": "iris",
        "protocol.name": "eqprop",
        "schedule.epochs": 1,
        "schedule.batch_size": 1,
        "runs": str(tmp_path / "runs"),
        "checkpoint.every": 1000,
        "evaluation.every": 1000,
    }
    outcome = session.start(load_config(None, fields={**base, **fields}))
    store = RunStore(str(tmp_path / "runs"), create=False)
    return outcome, store.load_checkpoint(outcome.run_id)["parameters"], store.metrics(outcome.run_id, "events")


def test_faults_on_the_wire_are_events_and_do_not_change_the_result(tmp_path):
    direct, theta_direct, _ = run(
        tmp_path, **{"substrate.backend": "hopfield", "substrate.options": {**SIM, "hidden": [5]}}
    )
    assert direct.status == "completed"

    faults = Faults(drop=0.01, garble=0.01, seed=2)
    with ScpiServer(HopfieldSubstrate(**SIM), faults=faults) as lab:
        wiring = tmp_path / "lab.toml"
        wiring.write_text(lab_wiring_toml(HopfieldSubstrate(**SIM).info, lab.address, timeout=0.3))
        outcome, theta, events = run(tmp_path, **{"substrate.backend": "instrument", "substrate.wiring": str(wiring)})
        outputs_on = set(lab.model.outputs_on)

    assert outcome.status == "completed"
    assert max(float(np.max(np.abs(theta[n] - theta_direct[n]))) for n in theta) <= 1e-9
    kinds = [e["kind"] for e in events]
    assert kinds.count("retry") >= 2, kinds  # every fault is retried, and each retry recorded
    assert kinds[-1] == "closed"
    assert outputs_on == set()  # close() turned every output off


def test_disconnects_mid_run_reconnect_and_the_run_completes(tmp_path):
    _, theta_direct, _ = run(tmp_path, **{"substrate.backend": "hopfield", "substrate.options": {**SIM, "hidden": [5]}})
    with ScpiServer(HopfieldSubstrate(**SIM), faults=Faults(disconnect=0.01, seed=5)) as lab:
        wiring = tmp_path / "lab.toml"
        wiring.write_text(lab_wiring_toml(HopfieldSubstrate(**SIM).info, lab.address, timeout=0.3))
        outcome, theta, events = run(tmp_path, **{"substrate.backend": "instrument", "substrate.wiring": str(wiring)})
    assert outcome.status == "completed"
    assert max(float(np.max(np.abs(theta[n] - theta_direct[n]))) for n in theta) <= 1e-9
    kinds = [e["kind"] for e in events]
    assert "reopen" in kinds, kinds  # the connection was closed and opened again, and recorded


def test_step_reports_count_the_instrument_round_trips():
    import tomllib

    from drivers.hardware import InstrumentSubstrate
    from drivers.wiring import parse_wiring
    from protocols.aeqprop import Aeqprop
    from protocols.eqprop import EqProp

    x, y = np.full((1, 4), 0.5), np.eye(3)[[1]]
    sim = HopfieldSubstrate(**SIM)
    assert EqProp(beta=0.5).step(sim, x, y).round_trips == 0
    with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
        wiring = parse_wiring(tomllib.loads(lab_wiring_toml(sim.info, lab.address)))
        with InstrumentSubstrate(wiring) as hw:
            for protocol in (EqProp(beta=0.5), Aeqprop(beta=1.0)):
                before = hw.round_trips
                report = protocol.step(hw, x, y)
                assert report.round_trips == hw.round_trips - before
                assert 4 <= report.round_trips <= 6  # about one per phase (benchmarks/hardware.py)


def test_a_probe_is_one_exchange_and_reads_what_release_then_parameters_read():
    import tomllib

    from drivers.hardware import InstrumentSubstrate
    from drivers.wiring import parse_wiring

    x = np.full((1, 4), 0.5)
    sim = HopfieldSubstrate(**SIM)
    with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
        wiring = parse_wiring(tomllib.loads(lab_wiring_toml(sim.info, lab.address)))
        with InstrumentSubstrate(wiring) as hw:
            hw.clamp(x)
            hw.relax()
            u = {n: v + 0.01 for n, v in hw.knobs().items()}
            hw.set_knobs(u)
            before = hw.round_trips
            _, theta = hw.release_and_read(0.5)
            assert hw.round_trips - before == 1  # the knob writes, the pulse and the readout in one message
            again = hw.parameters()
            hw.set_knobs(u)
            hw.release(0.5)
            twice = hw.parameters()
    # the same release on the simulation the lab runs: theta moves half way to the knob's equilibrium
    sim.clamp(x)
    sim.relax()
    sim.set_knobs({n: v + 0.01 for n, v in sim.knobs().items()})
    sim.release(0.5)
    for n, v in sim.parameters().items():
        assert np.allclose(theta[n], v, atol=1e-9) and np.allclose(again[n], v, atol=1e-9)
    sim.release(0.5)
    for n, v in sim.parameters().items():
        assert np.allclose(twice[n], v, atol=1e-9)


def test_a_calibrated_feedback_step_on_the_virtual_lab_stays_within_three_times_the_floor():
    import tomllib

    from drivers.hardware import InstrumentSubstrate
    from drivers.wiring import parse_wiring
    from protocols.aeqprop import Aeqprop

    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (6, 4)), np.eye(3)[rng.integers(0, 3, 6)]
    sim = HopfieldSubstrate(**SIM)
    with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
        wiring = parse_wiring(tomllib.loads(lab_wiring_toml(sim.info, lab.address)))
        with InstrumentSubstrate(wiring) as hw:
            protocol = Aeqprop(beta=1.0, homeostasis="feedback")
            protocol.calibrate(hw, x[:1], y[:1])
            reports = [protocol.step(hw, x[i : i + 1], y[i : i + 1]) for i in range(6)]
    native = Aeqprop(beta=1.0)
    for i, report in enumerate(reports):
        assert report.round_trips <= 3 * 4  # free, beta1, homeostasis, beta2: the floor is 4
        step = native.step(sim, x[i : i + 1], y[i : i + 1]).delta  # the same step, native homeostasis
        err = np.sqrt(sum(np.sum((report.delta[n] - step[n]) ** 2) for n in step))
        assert err <= 0.02 * np.sqrt(sum(np.sum(v**2) for v in step.values()))  # signal_rtol: 1 %


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_one_signal_during_an_exchange_stops_gracefully_outputs_off_and_the_run_resumes(tmp_path, sig):
    """The signal lands while a SCPI reply is in flight: the exchange finishes, the step ends, a checkpoint is
    written, OUTP OFF goes out, the run is interrupted (not stopped at once) and resumes to the same result."""
    fields = {
        "substrate.backend": "instrument",
        "checkpoint.every": 5,
        "dataset.name": "iris",
        "protocol.name": "eqprop",
        "schedule.epochs": 1,
        "schedule.batch_size": 1,
        "runs": str(tmp_path / "runs"),
        "evaluation.every": 1000,
    }
    direct, theta_direct, _ = run(
        tmp_path / "direct", **{"substrate.backend": "hopfield", "substrate.options": {**SIM, "hidden": [5]}}
    )
    with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
        wiring = tmp_path / "lab.toml"
        wiring.write_text(lab_wiring_toml(HopfieldSubstrate(**SIM).info, lab.address, timeout=2.0))
        fields["substrate.wiring"] = str(wiring)
        received, execute = [], lab.front.execute

        def execute_and_signal(line, trip):
            received.append(line)
            if len(received) == 60:  # mid-run, while the controller waits for this reply
                os.kill(os.getpid(), getattr(signal, sig))
                time.sleep(0.05)
            return execute(line, trip)

        lab.front.execute = execute_and_signal
        outcome = session.start(load_config(None, fields=fields))
        assert outcome.status == "interrupted"
        assert any(line.startswith("OUTP OFF") for line in received[60:])
        assert lab.model.outputs_on == set()
        store = RunStore(str(tmp_path / "runs"), create=False)
        assert store.run(outcome.run_id)["status"] == "interrupted"
        events = store.metrics(outcome.run_id, "events")
        assert not any("stopped at once" in (e["message"] or "") for e in events)
        assert store.load_checkpoint(outcome.run_id)["global_step"] > 0
        store.close()
        resumed = session.resume(str(tmp_path / "runs"), outcome.run_id)
    assert resumed.status == "completed"
    theta = RunStore(str(tmp_path / "runs"), create=False).load_checkpoint(outcome.run_id)["parameters"]
    assert max(float(np.max(np.abs(theta[n] - theta_direct[n]))) for n in theta) <= 1e-9


def _aeqprop_only(info, address):
    lines = lab_wiring_toml(info, address, timeout=2.0).splitlines()
    return "\n".join(l for l in lines if not l.startswith(("program =", "gradient =")))


@pytest.mark.slow
def test_an_aeqprop_only_bench_resumes_through_its_knobs_or_refuses_without_touching_the_status(tmp_path):
    fields = {
        "substrate.backend": "instrument",
        "checkpoint.every": 5,
        "dataset.name": "iris",
        "protocol.name": "aeqprop",
        "schedule.epochs": 1,
        "schedule.batch_size": 1,
        "dataset.test_fraction": 0.9,
        "runs": str(tmp_path / "runs"),
        "evaluation.every": 1000,
    }
    with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
        wiring = tmp_path / "lab.toml"
        wiring.write_text(_aeqprop_only(HopfieldSubstrate(**SIM).info, lab.address))
        fields["substrate.wiring"] = str(wiring)
        count, execute = [0], lab.front.execute

        def execute_and_stop(line, trip):
            count[0] += 1
            if count[0] == 40:
                os.kill(os.getpid(), signal.SIGINT)
            return execute(line, trip)

        lab.front.execute = execute_and_stop
        outcome = session.start(load_config(None, fields=fields))
        assert outcome.status == "interrupted"
        lab.front.execute = execute
        theta = lab.model.sub.parameters()
        lab.model.sub._assign({n: v + 0.01 for n, v in theta.items()})  # someone else used the bench
        with pytest.raises(Exception, match="cannot program its parameters .* the run stays interrupted"):
            session.resume(str(tmp_path / "runs"), outcome.run_id)
        store = RunStore(str(tmp_path / "runs"), create=False)
        assert store.run(outcome.run_id)["status"] == "interrupted"
        store.close()
        lab.model.sub._assign(theta)  # the bench holds the checkpoint's theta again
        resumed = session.resume(str(tmp_path / "runs"), outcome.run_id)
    assert resumed.status == "completed"


def sigterm_at(execute, n: int | None):
    """The lab's line handler, sending this process SIGTERM as the n-th line arrives (None: never)."""
    received = []

    def execute_and_signal(line, trip):
        received.append(line)
        if len(received) == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return execute(line, trip)

    return execute_and_signal


def test_a_virtual_lab_run_stopped_by_sigterm_and_resumed_is_bitwise_the_uninterrupted_lab_run(tmp_path):
    """Resume over real I/O: the resumed run's parameters equal, bit for bit, those of the same run on the
    same kind of bench that was never stopped (not just the simulation's to 1e-9)."""
    fields = {
        "substrate.backend": "instrument",
        "dataset.name": "iris",
        "protocol.name": "eqprop",
        "schedule.epochs": 1,
        "schedule.batch_size": 1,
        "checkpoint.every": 5,
        "evaluation.every": 1000,
    }
    finals = {}
    for name, stop_at in (("whole", None), ("stopped", 45)):
        with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
            wiring = tmp_path / f"{name}.toml"
            wiring.write_text(lab_wiring_toml(HopfieldSubstrate(**SIM).info, lab.address, timeout=2.0))
            runs = str(tmp_path / name)
            lab.front.execute = sigterm_at(lab.front.execute, stop_at)
            outcome = session.start(load_config(None, fields={**fields, "runs": runs, "substrate.wiring": str(wiring)}))
            if stop_at is not None:
                assert outcome.status == "interrupted"
                outcome = session.resume(runs, outcome.run_id)
            assert outcome.status == "completed"
            finals[name] = RunStore(runs, create=False).load_checkpoint(outcome.run_id)["parameters"]
    for n, v in finals["whole"].items():
        np.testing.assert_array_equal(finals["stopped"][n], v)


def test_a_virtual_lab_run_killed_by_sigkill_and_resumed_is_bitwise_the_uninterrupted_lab_run(tmp_path):
    """A controller process killed outright in mid-exchange: the bench keeps its outputs on and the run stays
    'running'; `aeqprop resume` takes it over, puts the checkpoint's parameters back on the bench and ends bit for
    bit where the same run on a bench that was never stopped ends."""
    fields = "\n".join(
        [
            '[dataset]\nname = "iris"',
            '[protocol]\nname = "eqprop"',
            "[schedule]\nepochs = 1\nbatch_size = 1",
            "[checkpoint]\nevery = 5",
            "[evaluation]\nevery = 1000",
        ]
    )
    finals = {}
    for name in ("whole", "killed"):
        with ScpiServer(HopfieldSubstrate(**SIM)) as lab:
            wiring = tmp_path / f"{name}.toml"
            wiring.write_text(lab_wiring_toml(HopfieldSubstrate(**SIM).info, lab.address, timeout=2.0))
            runs = tmp_path / name
            path = tmp_path / f"{name}-run.toml"
            path.write_text(f'runs = "{runs}"\n{fields}\n[substrate]\nbackend = "instrument"\nwiring = "{wiring}"\n')
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "train", str(path), "--quiet"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            if name == "killed":
                received, execute = [], lab.front.execute

                def kill_mid_run(line, trip, received=received, execute=execute, proc=proc):
                    received.append(line)
                    if len(received) == 300:  # a later checkpoint exists; this exchange is never answered
                        proc.kill()
                    return execute(line, trip)

                lab.front.execute = kill_mid_run
            out, err = proc.communicate(timeout=PATIENCE)
            if name == "killed":
                assert proc.returncode == -signal.SIGKILL, err
                assert RunStore(str(runs), create=False).run(1)["status"] in ("running", "killed")
                outcome = session.resume(str(runs), 1)
                assert outcome.status == "completed"
            else:
                assert proc.returncode == 0, err
            finals[name] = RunStore(str(runs), create=False).load_checkpoint(1)["parameters"]
    for n, v in finals["whole"].items():
        np.testing.assert_array_equal(finals["killed"][n], v)
