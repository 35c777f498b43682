"""Resume: a run stopped anywhere (SIGKILL, Ctrl+C, a stop request) ends bitwise where an uninterrupted run ends."""

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from aeqprop import session
from aeqprop.config import validate
from aeqprop.store import RunStore
from tests.conftest import PATIENCE

ROOT = Path(__file__).resolve().parents[2]

SMALL = {
    "seed": 3,
    "dataset": {"name": "wine"},
    "substrate": {"backend": "hopfield", "options": {"hidden": [16], "eps": 0.1, "tol": 1e-3}},
    "protocol": {"name": "aeqprop"},
    "schedule": {"epochs": 5, "batch_size": 4},
    "evaluation": {"every": 7},
    "checkpoint": {"every": 1},
}


def config(runs, **changes):
    raw = {**SMALL, "runs": str(runs)}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        raw[section] = {**raw[section], field: value} if field else value
    return validate(raw)


def final_parameters(runs, run_id):
    store = RunStore(runs, create=False)
    cp = store.load_checkpoint(run_id)
    epochs = store.metrics(run_id, "epoch_metrics")
    store.close()
    return cp, epochs


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for n in a:
        assert a[n].tobytes() == b[n].tobytes(), n


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    outcome = session.start(config(runs))
    assert outcome.status == "completed"
    return final_parameters(runs, outcome.run_id)


def resume_to_reference(runs, reference):
    """Resume run 1 to its end; it must end bitwise where the uninterrupted run ends."""
    outcome = session.resume(str(runs), 1)
    assert outcome.status == "completed"
    final, epochs = final_parameters(runs, 1)
    assert_same(final["parameters"], reference[0]["parameters"])
    assert [e["test_accuracy"] for e in epochs] == [e["test_accuracy"] for e in reference[1]]


def run_stopped_and_resumed(tmp_path, monkeypatch, changes, stop_at):
    """The reference run in ``tmp_path/a``; the same run in ``tmp_path/b`` stopped by a stop request at the
    ``stop_at``-th check, then resumed to its end. Returns the two outcomes (reference, stopped)."""
    ref = session.start(config(tmp_path / "a", **changes))
    calls = {"n": 0}

    def stop(self):
        calls["n"] += 1
        return calls["n"] == stop_at

    with monkeypatch.context() as m:
        m.setattr(session.StopFlag, "__call__", stop)
        stopped = session.start(config(tmp_path / "b", **changes))
    assert stopped.status == "interrupted"
    assert session.resume(str(tmp_path / "b"), stopped.run_id).status == "completed"
    return ref, stopped


def cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def write_config(path, runs, **changes):
    import json

    cfg = config(runs, **changes).to_dict()
    lines = [f"seed = {cfg['seed']}", f"runs = {json.dumps(cfg['runs'])}"]
    for section in ("dataset", "substrate", "protocol", "schedule", "evaluation", "checkpoint", "nonideal"):
        if cfg.get(section) is None:
            continue
        lines.append(f"[{section}]")
        for k, v in cfg[section].items():
            if v is None:
                continue
            if isinstance(v, dict):
                v = "{ " + ", ".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()) + " }"
            else:
                v = json.dumps(v)
            lines.append(f"{k} = {v}")
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(runs, sql, predicate, proc, timeout=PATIENCE):
    """Poll the store until ``predicate(rows)``; fail if the process ends first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        db_path = Path(runs) / "aeqprop.db"
        if db_path.exists():
            try:
                with sqlite3.connect(db_path, timeout=5) as db:
                    if predicate(db.execute(sql).fetchall()):
                        return
            except sqlite3.OperationalError:
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    pytest.fail("timed out waiting for the run")


def stopped_at(runs, step, proc, timeout=PATIENCE):
    """Stop (SIGSTOP) the training process ``proc`` once its store holds a checkpoint at ``step`` or later,
    and return the last checkpoint's step; the process is left stopped, for the caller's SIGKILL.

    The store is read only while the process is stopped and it runs between reads, so the step
    returned is the one it stands at when killed, however slow the machine (no race to the run's end).
    """
    end = time.monotonic() + timeout
    child = psutil.Process(proc.pid)
    db_path = Path(runs) / "aeqprop.db"
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        if not db_path.exists():  # made whole, then linked into place: nothing to read until then
            time.sleep(0.01)
            continue
        child.suspend()
        while child.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            time.sleep(0.001)  # SIGSTOP delivered, not yet acted on (another core)
        last = 0
        db = sqlite3.connect(db_path, timeout=0.05)  # not waiting on a lock the stopped process holds
        try:
            last = db.execute("SELECT MAX(step) FROM checkpoints").fetchone()[0] or 0
        except sqlite3.OperationalError:  # locked: read again after the process has run on
            pass
        finally:
            db.close()
        if last >= step:
            return last
        child.resume()
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    pytest.fail(f"no checkpoint at step {step} within {timeout} s")


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path, reference):
    runs = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", runs)
    target = int(np.random.default_rng().integers(3, 60))
    proc = cli("train", str(path), "--quiet")
    seen = stopped_at(runs, target, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=PATIENCE)
    assert proc.returncode == -signal.SIGKILL
    store = RunStore(runs, create=False)
    assert store.run(1)["status"] == "running"  # killed: nobody recorded an end
    from aeqprop import views

    assert views.status(store.run(1)) == "killed"  # and its owner is gone: shown as such
    killed_at = store.load_checkpoint(1)["global_step"]
    assert target <= killed_at == seen < 5 * 36, (killed_at, seen)  # killed where it was stopped
    store.close()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "resume", "1", "--runs", str(runs), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode == 0, done.stderr
    cp, epochs = final_parameters(runs, 1)
    ref_cp, ref_epochs = reference
    assert cp["global_step"] == ref_cp["global_step"] == 5 * 36
    assert_same(cp["parameters"], ref_cp["parameters"])
    assert_same(cp["knobs"], ref_cp["knobs"])
    assert [e["test_accuracy"] for e in epochs] == [e["test_accuracy"] for e in ref_epochs]
    assert [e["train_loss"] for e in epochs] == [e["train_loss"] for e in ref_epochs]
    assert RunStore(runs).run(1)["status"] == "completed"


def test_sigint_stops_at_a_step_checkpoints_closes_and_resumes(tmp_path, reference):
    runs = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", runs, checkpoint__every=0, evaluation__every=5)
    proc = cli("train", str(path), "--quiet")
    wait_for(runs, "SELECT COUNT(*) FROM evaluations", lambda rows: rows[0][0] >= 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 1, err
    assert "interrupted" in out and "aeqprop resume 1" in out
    store = RunStore(runs, create=False)
    row = store.run(1)
    assert row["status"] == "interrupted" and row["ended"] is not None
    kinds = [e["kind"] for e in store.metrics(1, "events")]
    assert kinds[-1] == "closed"
    cp = store.load_checkpoint(1)
    # checkpoint.every = 0 checkpoints only at epoch ends: this one is the stop's own
    assert cp["global_step"] >= 10 and 0 < cp["step"] < 36, (cp["epoch"], cp["step"])
    store.close()
    resume_to_reference(runs, reference)
    kinds = [e["kind"] for e in RunStore(runs).metrics(1, "events")]
    assert kinds.count("closed") == 2 and "resumed" in kinds


@pytest.mark.parametrize(
    "protocol, schedules",
    [
        ({"name": "eqprop", "options": {"variant": "random-sign", "lr": 0.05}}, {}),
        ({"name": "aeqprop", "options": {}}, {"lr": {"kind": "cosine", "end": 0.1}, "eps": {"kind": "exponential"}}),
    ],
    ids=["random-sign", "schedules"],
)
def test_stop_request_and_resume_restore_the_protocol_random_state(tmp_path, monkeypatch, protocol, schedules):
    """Random-sign EqProp draws a sign per step from its own generator: resume must restore it;
    schedules recompute beta, lr and eps from the step index, so a resumed run follows them exactly."""
    changes = dict(
        protocol=protocol,
        schedule__epochs=2,
        checkpoint__every=0,
        **{f"schedule__{k}": v for k, v in schedules.items()},
    )
    ref, stopped = run_stopped_and_resumed(tmp_path, monkeypatch, changes, 23)
    a, _ = final_parameters(tmp_path / "a", ref.run_id)
    b, _ = final_parameters(tmp_path / "b", stopped.run_id)
    assert a["random"]["protocol"] == b["random"]["protocol"]
    # random-sign draws signs; Aeqprop holds only its feedback loop's knob dither (unused when native)
    assert bool(set(a["random"]["protocol"]) - {"feedback.dither"}) == (protocol["name"] == "eqprop")
    assert_same(a["parameters"], b["parameters"])


def test_resume_of_a_completed_run_is_refused(tmp_path):
    outcome = session.start(config(tmp_path, schedule__epochs=1))
    result = subprocess.run(
        [sys.executable, "-m", "cli", "resume", str(outcome.run_id), "--runs", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: run {outcome.run_id} already completed; nothing to resume"


def test_a_second_sigint_stops_at_once_and_the_run_still_resumes(tmp_path, reference):
    runs = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", runs)
    proc = cli("train", str(path), "--quiet")
    wait_for(runs, "SELECT MAX(step) FROM checkpoints", lambda rows: (rows[0][0] or 0) >= 20, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 1 and "Traceback" not in err, err
    hint = f"interrupted; continue it with `aeqprop resume 1 --runs {runs}`"
    if hint not in out:  # the two signals were not merged into one: it stopped at once, and says how to go on
        # (tests/test_cli_inputs.py checks this line without a race)
        assert err.strip().endswith(hint), (out, err)
    store = RunStore(runs, create=False)  # readable: every write was one transaction
    assert store.run(1)["status"] in ("interrupted", "running")
    store.close()
    resume_to_reference(runs, reference)


@pytest.mark.parametrize("options", [{"dtype": "float32"}, {"cost": "cross-entropy"}], ids=["float32", "readout"])
def test_float32_and_readout_runs_resume_bitwise(tmp_path, monkeypatch, options):
    changes = dict(
        substrate={"backend": "hopfield", "options": {"hidden": [16], "eps": 0.1, "tol": 1e-3, **options}},
        schedule__epochs=2,
        checkpoint__every=0,
    )
    ref, stopped = run_stopped_and_resumed(tmp_path, monkeypatch, changes, 17)
    a, _ = final_parameters(tmp_path / "a", ref.run_id)
    b, _ = final_parameters(tmp_path / "b", stopped.run_id)
    assert_same(a["parameters"], b["parameters"])
    assert a["parameters"]["W1"].dtype == (np.float32 if options.get("dtype") == "float32" else np.float64)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_as_ctrl_c_does_and_nobody_else_trains_the_run_meanwhile(tmp_path, reference, sig):
    """What timeout, systemd and docker send: a checkpoint, the run interrupted with the resume hint, and a
    resume to the uninterrupted result; while the run trains, a second owner is refused."""
    from aeqprop.store import StoreError

    runs = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", runs)
    proc = cli("train", str(path), "--quiet")
    wait_for(runs, "SELECT MAX(step) FROM checkpoints", lambda rows: (rows[0][0] or 0) >= 10, proc)
    with pytest.raises(StoreError, match=rf"run 1 is being trained by process {proc.pid} on "):
        session.resume(str(runs), 1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 1, err
    assert f"run 1 interrupted; continue it with `aeqprop resume 1 --runs {runs}`" in out
    store = RunStore(runs, readonly=True)
    row = store.run(1)
    assert row["status"] == "interrupted" and row["owner"] is None and row["ended"] is not None
    assert [e["kind"] for e in store.metrics(1, "events")][-1] == "closed"
    store.close()
    resume_to_reference(runs, reference)


def test_a_feedback_run_records_its_calibration_and_resumes_with_it(tmp_path, monkeypatch):
    """The calibration changes eps and the loop's settings: a resumed run must put the recorded one back
    (not measure again, which would move theta) and restore the probe length the loop carries, to end
    bitwise where the reference ends. (An ideal device: exact resume behind the noise wrapper is its own work.)"""
    changes = dict(
        protocol={"name": "aeqprop", "options": {"homeostasis": "feedback"}},
        substrate__options={"hidden": [16], "eps": 0.5, "tol": 1e-3},
        schedule__epochs=2,
        checkpoint__every=0,
    )
    ref, stopped = run_stopped_and_resumed(tmp_path, monkeypatch, changes, 23)
    a, _ = final_parameters(tmp_path / "a", ref.run_id)
    b, _ = final_parameters(tmp_path / "b", stopped.run_id)
    assert_same(a["parameters"], b["parameters"])
    store = RunStore(tmp_path / "b", create=False)
    cal = [e for e in store.metrics(stopped.run_id, "events") if e["kind"] == "calibration"]
    store.close()
    assert len(cal) == 1 and "stiffness k" in cal[0]["message"]
    record = __import__("json").loads(cal[0]["message"].split(session.CALIBRATION_JSON, 1)[1])
    assert record["probe"] < 1.0  # the calibration set the loop's probe length


NOISY = {"read_noise": 1e-3, "program_noise": 1e-3, "variability": 0.2, "drift": 1e-4, "seed": 2}
RESISTIVE_EQPROP = {
    "protocol": {"name": "eqprop", "options": {"beta": 0.2, "lr": 0.02}},
    "schedule__epochs": 2,
    "nonideal": {"read_noise": 1e-4, "variability": 0.1, "seed": 4},
}


@pytest.mark.parametrize(
    "changes",
    [
        {"nonideal": NOISY, "schedule__epochs": 3},
        {
            "dataset": {"name": "iris"},
            "substrate": {"backend": "resistive", "options": {"hidden": [6], "eps": 0.3, "tol": 1e-5}},
            **RESISTIVE_EQPROP,
        },
        {
            "dataset": {"name": str(ROOT / "examples" / "moons.csv")},
            "substrate": {"backend": "netlist", "options": {"netlist": str(ROOT / "examples" / "netlist_small.cir")}},
            **RESISTIVE_EQPROP,
        },
    ],
    ids=["hopfield", "resistive", "netlist"],
)
def test_sigkill_on_a_noisy_device_then_resume_is_bitwise_identical(tmp_path, changes):
    """SIGKILL at a random step behind the nonideal wrapper (Hopfield, resistive network, netlist circuit): its true
    state and random streams are checkpointed without a noisy read, so the resumed run ends where the reference does."""
    ref = session.start(config(tmp_path / "ref", **changes))
    assert ref.status == "completed"
    runs = tmp_path / "runs"
    path = write_config(tmp_path / "run.toml", runs, **changes)
    target = int(np.random.default_rng().integers(3, 30))
    proc = cli("train", str(path), "--quiet")
    stopped_at(runs, target, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=PATIENCE)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(
        [sys.executable, "-m", "cli", "resume", "1", "--runs", str(runs), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode == 0, done.stderr
    a, ea = final_parameters(tmp_path / "ref", ref.run_id)
    b, eb = final_parameters(runs, 1)
    assert_same(a["parameters"], b["parameters"])
    assert a["random"] == b["random"]
    assert [e["test_accuracy"] for e in ea] == [e["test_accuracy"] for e in eb]
