"""A store that notices damage, refuses to write into it, opens read-only, and survives write errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aeqprop import session
from aeqprop.config import validate
from aeqprop.store import DB_NAME, RunStore, StoreError
from aeqprop.trainer import EpochRecord, Position
from tests.conftest import PATIENCE

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "seed": 4,
    "dataset": {"name": "iris"},
    "substrate": {"backend": "hopfield", "options": {"hidden": [6], "eps": 0.1, "tol": 1e-3}},
    "protocol": {"name": "aeqprop"},
    "schedule": {"epochs": 2, "batch_size": 8},
    "evaluation": {"every": 5},
    "checkpoint": {"every": 3},
}


def tiny(runs, **changes):
    return validate({**TINY, "runs": str(runs), **changes})


def filled_store(folder, runs=3):
    """A store of a few hundred KB: runs with step metrics, epochs, events and checkpoints."""
    store = RunStore(folder)
    rng = np.random.default_rng(0)
    for r in range(runs):
        rid = store.create_run({"r": r}, r, "iris", "hopfield", "aeqprop")
        for g in range(1, 200):
            store.log_step(rid, g, 1, float(g), {"free": 3}, {"free": 0.01}, {"x": g})
        theta = {"W1": rng.normal(size=(40, 40))}
        store.save_checkpoint(rid, Position(1, 3, 199, rng.permutation(50)), theta, None, {"trainer": {}})
        store.log_epoch(rid, EpochRecord(1, 0.4, 0.5, 0.3, 0.7 + r / 100, 1.0, 12.0), 2.0)
        store.event(rid, "note", "x" * 500)
        store.set_status(rid, "completed")
        store.release(rid)
    store.close()
    return folder / DB_NAME


def snapshot(folder):
    """The store file's bytes and time; SQLite's own -shm index of a reader is not the store."""
    path = Path(folder) / DB_NAME
    return path.read_bytes(), path.stat().st_mtime_ns


def refused_by_every_open(folder, match):
    """Every way of opening the store refuses it with one line matching ``match``, and the file and a
    pending WAL beside it stay as they were (no WAL and an empty one are alike: a read-only open may make one)."""
    wal = Path(folder) / (DB_NAME + "-wal")
    before = snapshot(folder), wal.read_bytes() if wal.exists() else b""
    for open_it in (
        lambda: RunStore(folder, readonly=True),
        lambda: RunStore(folder),
        lambda: RunStore(folder, create=False),
    ):
        with pytest.raises(StoreError, match=match) as err:
            open_it()
        assert "\n" not in str(err.value)
        assert (snapshot(folder), wal.read_bytes() if wal.exists() else b"") == before


def crashed_copy(source, folder, note="x"):
    """``source``'s store as a process killed mid-run leaves it: its last write still in aeqprop.db-wal."""
    import shutil

    writer = RunStore(source)
    writer.event(1, "note", note * 200)
    folder.mkdir()
    for name in (DB_NAME, DB_NAME + "-wal"):
        shutil.copyfile(source / name, folder / name)
    writer.close()
    assert (folder / (DB_NAME + "-wal")).stat().st_size > 0
    return folder


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes_in_the_middle_are_refused_by_every_command_and_nothing_is_written(tmp_path, seed):
    path = filled_store(tmp_path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    at = len(data) // 2 + int(rng.integers(-4096, 4096))
    data[at : at + 8192] = rng.bytes(8192)
    path.write_bytes(bytes(data))
    refused_by_every_open(tmp_path, r"run store .* is damaged \(.*\); nothing was written to it.*\.recover")


def test_a_damaged_store_with_a_pending_wal_is_refused_and_the_wal_is_not_checkpointed_into_it(tmp_path):
    """A store whose writer ended without closing keeps its last writes in aeqprop.db-wal. A refused open
    must leave both files as they were: the last connection to close checkpoints the WAL into the main
    file, so the checks read through a connection that cannot write."""
    import sqlite3

    filled_store(tmp_path / "a")
    folder = crashed_copy(tmp_path / "a", tmp_path / "b", note="pending ")
    path = folder / DB_NAME
    data = bytearray(path.read_bytes())
    data[4096:] = np.random.default_rng(0).bytes(len(data) - 4096)  # every page but the schema's
    path.write_bytes(bytes(data))
    refused_by_every_open(folder, r"is damaged .*nothing was written to it")
    assert (folder / (DB_NAME + "-wal")).stat().st_size > 0
    db = sqlite3.connect(tmp_path / "a" / DB_NAME)  # the undamaged original reads whole, the pending write in it
    assert db.execute("SELECT COUNT(*) FROM events WHERE message LIKE 'pending %'").fetchone()[0] == 1
    db.close()


@pytest.mark.parametrize("damage", ["blob", "text"])
def test_a_resume_refused_for_damage_the_open_does_not_see_writes_nothing(tmp_path, damage):
    """A corrupted checkpoint (its digest) or a row's text that is not UTF-8 passes quick_check; the resume
    reads them read-only before its first write (the lease), so the file and its pending WAL stay as they were."""
    import sqlite3

    session.start(tiny(tmp_path / "a", checkpoint={"every": 3}))
    db = sqlite3.connect(tmp_path / "a" / DB_NAME)
    db.execute("UPDATE runs SET status = 'interrupted'")
    if damage == "blob":
        blob = bytearray(db.execute("SELECT arrays FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()[0])
        blob[len(blob) // 2] ^= 0xFF
        db.execute("UPDATE checkpoints SET arrays = ? WHERE id = (SELECT MAX(id) FROM checkpoints)", (bytes(blob),))
    else:
        db.execute("UPDATE checkpoints SET meta = CAST(X'7B22FF' AS TEXT) WHERE id = (SELECT MAX(id) FROM checkpoints)")
    db.commit()
    db.close()
    folder = crashed_copy(tmp_path / "a", tmp_path / "b")
    before, wal_before = snapshot(folder), (folder / (DB_NAME + "-wal")).read_bytes()
    expected = "is corrupted \\(digest mismatch\\)" if damage == "blob" else "is damaged \\(Could not decode"
    with pytest.raises(StoreError, match=expected):
        session.resume(str(folder), 1)
    assert snapshot(folder) == before and (folder / (DB_NAME + "-wal")).read_bytes() == wal_before


def test_train_and_resume_close_their_store_on_every_way_out(tmp_path):
    """No connection is left to the garbage collector, which would checkpoint the WAL into the file at some
    later time: once the last connection closes SQLite folds the WAL in and removes it."""
    wal = tmp_path / (DB_NAME + "-wal")

    def folded():  # nothing pending in the WAL (a read-only open may leave an empty one)
        return not wal.exists() or wal.stat().st_size == 0

    outcome = session.start(tiny(tmp_path))
    assert outcome.status == "completed" and folded()
    with pytest.raises(StoreError, match="already completed"):
        session.resume(str(tmp_path), outcome.run_id)
    assert folded()
    bad = tiny(tmp_path)
    bad.schedule.epochs = 3

    def refuse(run_id):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.start(bad, on_created=refuse)
    assert folded()
    assert [r["status"] for r in RunStore(tmp_path, readonly=True).runs()] == ["completed", "interrupted"]


def test_a_schema_whose_text_is_not_utf8_is_damage_not_a_traceback(tmp_path):
    """SQLite reads the schema's text and Python cannot decode it: every open says damaged, in one line."""
    path = filled_store(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(b"CREATE TABLE")
    assert 100 < at < 4096  # the schema's text lies in the first page
    data[at + 2 : at + 4] = b"\xf0\x28"  # a 4-byte lead byte followed by no continuation
    path.write_bytes(bytes(data))
    refused_by_every_open(tmp_path, r"is damaged \('utf-8' codec can't decode.*\); nothing was written")


def test_a_truncated_store_and_a_dropped_table_are_refused_not_recreated(tmp_path):
    path = filled_store(tmp_path / "a")
    path.write_bytes(b"")
    for readonly in (True, False):
        with pytest.raises(StoreError, match=r"is empty \(0 bytes\): the run store was truncated.*mv "):
            RunStore(tmp_path / "a", readonly=readonly)
    assert path.stat().st_size == 0  # not silently restarted at run 1
    import sqlite3

    path = filled_store(tmp_path / "b")
    db = sqlite3.connect(path)
    db.execute("DROP TABLE events")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"damaged \(table events is missing\)"):
        RunStore(tmp_path / "b")
    db = sqlite3.connect(path)
    assert "events" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()


def test_read_only_open_writes_nothing_and_refuses_writes(tmp_path):
    filled_store(tmp_path)
    before = snapshot(tmp_path)
    store = RunStore(tmp_path, readonly=True)
    assert [r["id"] for r in store.runs()] == [1, 2, 3]
    assert store.run(2)["best_accuracy"] == pytest.approx(0.71)
    with pytest.raises(StoreError, match="opened read-only"):
        store.event(1, "x", "y")
    store.close()
    from aeqprop import views

    views.export_run(str(tmp_path), "1", str(tmp_path.parent / "out"))
    views.print_runs(str(tmp_path))
    assert snapshot(tmp_path) == before  # no journal-mode switch, no new tables, no migration


def test_a_read_only_mount_falls_back_to_an_immutable_read(tmp_path, monkeypatch):
    """On a read-only mount SQLite cannot make the -shm index of a WAL store; the read commands still work."""
    import sqlite3

    filled_store(tmp_path)
    real = sqlite3.connect
    opened = []

    class Unopenable:  # what SQLite gives for a WAL store whose -shm it cannot create
        def execute(self, *args):
            raise sqlite3.OperationalError("unable to open database file")

        def close(self):
            pass

    def connect(target, *args, **kwargs):
        opened.append(str(target))
        return Unopenable() if "mode=ro" in str(target) else real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = RunStore(tmp_path, readonly=True)
    assert [r["status"] for r in store.runs()] == ["completed"] * 3
    assert any("immutable=1" in o for o in opened)


def test_a_version_1_store_is_read_as_is_and_migrated_on_the_first_write(tmp_path):
    import sqlite3

    path = filled_store(tmp_path)
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE leases; DROP TABLE inputs; DROP TABLE validation; PRAGMA user_version = 1;")
    db.close()
    old = RunStore(tmp_path, readonly=True)
    assert [r["owner"] for r in old.runs()] == [None] * 3 and old.metrics(1, "validation") == []
    old.close()
    store = RunStore(tmp_path)
    assert store.version == 3 and store.inputs(1) == [] and store.metrics(1, "validation") == []
    store.close()


def test_extra_tables_of_other_features_are_tolerated(tmp_path):
    import sqlite3

    path = filled_store(tmp_path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sweeps (id INTEGER PRIMARY KEY, spec TEXT)")
    db.commit()
    db.close()
    assert len(RunStore(tmp_path).runs()) == 3


def test_disk_full_mid_run_is_one_line_and_the_run_resumes_bitwise(tmp_path):
    """The store's file may not grow past its size after the run is created: a checkpoint write fails
    (SQLITE_FULL) as a store would on a full disk. The run stops with one line; with space again it resumes
    to the same parameters as a run that never failed."""
    ref = session.start(tiny(tmp_path / "ref"))
    script = (
        "import sys; from aeqprop import session, store; from aeqprop.config import validate\n"
        "orig = store.RunStore.create_run\n"
        "def create(self, *a, **k):\n"
        "    rid = orig(self, *a, **k)\n"
        "    n = self.db.execute('PRAGMA page_count').fetchone()[0]\n"
        "    self.db.execute(f'PRAGMA max_page_count = {n + 1}')\n"
        "    return rid\n"
        "store.RunStore.create_run = create\n"
        "import json\n"
        f"cfg = validate(json.loads({json.dumps(json.dumps(tiny(tmp_path / 'full').to_dict()))}))\n"
        "from aeqprop.errors import AeqpropError\n"
        "try:\n"
        "    session.start(cfg)\n"
        "except AeqpropError as exc:\n"
        "    print(exc); sys.exit(2)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE)
    assert done.returncode == 2, done.stderr
    assert "cannot write to the run store" in done.stdout and "full" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    store = RunStore(tmp_path / "full", readonly=True)
    row = store.run(1)
    assert row["status"] in ("running", "failed") and row["owner"] is None  # its process is gone
    store.close()
    resumed = session.resume(str(tmp_path / "full"), 1)
    assert resumed.status == "completed"
    a = RunStore(tmp_path / "ref", readonly=True).load_checkpoint(ref.run_id)
    b = RunStore(tmp_path / "full", readonly=True).load_checkpoint(1)
    for n in a["parameters"]:
        assert a["parameters"][n].tobytes() == b["parameters"][n].tobytes(), n


def test_best_accuracy_is_recorded_and_exported(tmp_path):
    outcome = session.start(tiny(tmp_path))
    store = RunStore(tmp_path, readonly=True)
    epochs = store.metrics(outcome.run_id, "epoch_metrics")
    assert store.run(outcome.run_id)["best_accuracy"] == max(e["test_accuracy"] for e in epochs)
    from aeqprop import views

    paths = views.export_run(str(tmp_path), str(outcome.run_id), str(tmp_path / "out"))
    run = json.loads([p for p in paths if p.name == "run.json"][0].read_text())["run"]
    assert run["best_accuracy"] == outcome.result.best_test_accuracy


def test_two_processes_creating_a_store_at_once_never_see_a_half_made_file(tmp_path):
    script = "import sys; from aeqprop.store import RunStore; RunStore(sys.argv[1]).create_run({}, 0, 'd', 'b', 'p')"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "s")], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errs = [p.communicate(timeout=PATIENCE)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    assert sorted(r["id"] for r in RunStore(tmp_path / "s", readonly=True).runs()) == [1, 2, 3, 4]
    assert not [p for p in os.listdir(tmp_path / "s") if p.endswith(".tmp")]
