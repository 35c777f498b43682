import sqlite3
import threading

import numpy as np
import pytest

from aeqprop.store import KEEP_CHECKPOINTS, RunStore, StoreError
from aeqprop.trainer import EpochRecord, Position


def _checkpoint(store, run_id, g, seed=0):
    rng = np.random.default_rng(seed)
    theta = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3)}
    knobs = {n: v + 1e-17 for n, v in theta.items()}
    gen = np.random.default_rng(seed + 1)
    gen.random(5)
    random = {"trainer": {"rng": gen.bit_generator.state}, "protocol": {}, "substrate": {}}
    position = Position(2, 5, g, rng.permutation(17), (1.5, 3.0, 42.0))
    store.save_checkpoint(run_id, position, theta, knobs, random)
    return theta, knobs, gen, position


def test_checkpoint_round_trip_is_bitwise_and_keeps_the_last_few(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create_run({"seed": 1}, 1, "iris", "hopfield", "aeqprop")
    for g in range(1, 6):
        theta, knobs, gen, position = _checkpoint(store, rid, g, seed=g)
    cp = RunStore(tmp_path, create=False).load_checkpoint(rid)
    assert cp["global_step"] == 5 and (cp["epoch"], cp["step"]) == (2, 5) and cp["sums"] == [1.5, 3.0, 42.0]
    for n in theta:
        assert cp["parameters"][n].tobytes() == theta[n].tobytes()
        assert cp["knobs"][n].tobytes() == knobs[n].tobytes()
    assert np.array_equal(cp["order"], position.order)
    again = np.random.default_rng()
    again.bit_generator.state = cp["random"]["trainer"]["rng"]
    assert again.random() == gen.random()  # the 128-bit PCG64 state survives JSON
    assert store.db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == KEEP_CHECKPOINTS


def test_step_metrics_are_buffered_until_a_checkpoint_and_replaced_when_redone(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create_run({}, 0, "iris", "hopfield", "eqprop")
    for step in (1, 2, 3):
        store.log_step(rid, step, 1, 0.5 * step, {"free": 4}, {"free": 0.01}, {})
    other = RunStore(tmp_path, create=False)
    assert other.metrics(rid, "step_metrics") == []  # nothing written per step
    _checkpoint(store, rid, 3)
    assert [r["loss"] for r in other.metrics(rid, "step_metrics")] == [0.5, 1.0, 1.5]
    store.log_step(rid, 3, 1, 9.0, {"free": 4}, {}, {})  # step 3 redone after a resume
    store.flush()
    assert [r["loss"] for r in other.metrics(rid, "step_metrics")] == [0.5, 1.0, 9.0]
    store.log_epoch(rid, EpochRecord(1, 0.4, 0.5, 0.3, 0.75, 1.0, 12.0), 2.0)
    store.log_epoch(rid, EpochRecord(1, 0.4, 0.5, 0.3, 0.80, 1.0, 12.0), 2.0)
    assert [r["test_accuracy"] for r in other.metrics(rid, "epoch_metrics")] == [0.80]
    assert other.runs()[0]["best_accuracy"] == 0.80


def test_status_events_and_unknown_runs(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create_run({"x": 1}, 7, "wine", "hopfield", "aeqprop")
    row = store.run(str(rid))
    assert (row["status"], row["seed"], row["config"], row["ended"]) == ("running", 7, {"x": 1}, None)
    assert "numpy" in row["versions"] and row["host"]
    store.event(rid, "retry", "instrument timed out, retried", step=4)
    store.set_status(rid, "failed", "boom")
    row = store.run(rid)
    assert (row["status"], row["error"]) == ("failed", "boom") and row["ended"] >= row["started"]
    assert [(e["kind"], e["step"]) for e in store.metrics(rid, "events")] == [("retry", 4)]
    with pytest.raises(StoreError, match=r"no run 9 .*; runs: 1$"):
        store.run(9)
    with pytest.raises(StoreError, match="give a run id"):
        store.run("latest")
    with pytest.raises(StoreError, match="aeqprop.db missing"):
        RunStore(tmp_path / "empty", create=False)


def test_a_corrupted_checkpoint_is_refused_and_other_runs_stay_readable(tmp_path):
    store = RunStore(tmp_path)
    a = store.create_run({}, 0, "iris", "hopfield", "aeqprop")
    b = store.create_run({}, 0, "iris", "hopfield", "aeqprop")
    _checkpoint(store, a, 1)
    theta, *_ = _checkpoint(store, b, 1)
    blob = bytearray(store.db.execute("SELECT arrays FROM checkpoints WHERE run_id = ?", (a,)).fetchone()[0])
    blob[len(blob) // 2] ^= 0xFF
    store.db.execute("UPDATE checkpoints SET arrays = ? WHERE run_id = ?", (bytes(blob), a))
    with pytest.raises(StoreError, match=f"run {a}: the checkpoint at step 1 is corrupted"):
        store.load_checkpoint(a)
    assert store.load_checkpoint(b)["parameters"]["W1"].tobytes() == theta["W1"].tobytes()


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path):
    (tmp_path / "aeqprop.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="is not a run store .*file is not a database"):
        RunStore(tmp_path)


def test_concurrent_writers_all_land(tmp_path):
    RunStore(tmp_path)
    errors = []

    def writer(i):
        try:
            store = RunStore(tmp_path)
            rid = store.create_run({"i": i}, i, "iris", "hopfield", "aeqprop")
            for g in range(1, 21):
                store.log_step(rid, g, 1, float(g), {}, {}, {})
                _checkpoint(store, rid, g)
            store.set_status(rid, "completed")
            store.close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = sqlite3.connect(tmp_path / "aeqprop.db")
    assert db.execute("SELECT COUNT(*), MIN(status), MAX(status) FROM runs").fetchone() == (4, "completed", "completed")
    assert db.execute("SELECT COUNT(*) FROM step_metrics").fetchone()[0] == 80
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
