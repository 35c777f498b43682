"""The records of sweeps in the run store, and the summary of a sweep's results.

Two tables beside the run store's own, created when missing: ``sweeps`` (name,
the sweep file as read, runs folder) and ``sweep_jobs`` (one row per point and
seed: label, overrides, run config). A run of a sweep links to its job by the
nullable column ``runs.sweep_job``, added to the runs table when missing; runs
trained alone leave it NULL.

Workers never open this store: each returns its run's records (``RunRecord``)
and ``record_run`` writes them here, in one transaction, from the process that
started the sweep.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aeqprop.store import RunStore, StoreError
from aeqprop.sweep import Sweep

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, spec TEXT, runs TEXT, created REAL);
CREATE TABLE IF NOT EXISTS sweep_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sweep_id INTEGER NOT NULL, point INTEGER, label TEXT,
    overrides TEXT, seed INTEGER, config TEXT, UNIQUE (sweep_id, point, seed));
"""


@dataclass
class RunRecord:
    """What a worker returns for one run: the rows of every per-run table of its private
    scratch store (table -> list of rows as dicts), or the error that stopped it before a
    run existed; where and how long it ran (host, pid, seconds: the whole job in s,
    train_seconds: in training steps, s)."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error: str | None = None
    host: str = ""
    pid: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0

    @property
    def status(self) -> str:
        runs = self.tables.get("runs") or []
        return runs[0]["status"] if runs else "failed"


def open_store(folder: str, create: bool = True) -> RunStore:
    """The run store of ``folder`` with the sweep tables and the ``runs.sweep_job`` column."""
    store = RunStore(folder, create=create)
    try:
        with store._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if "sweep_job" not in _columns(db, "runs"):
                db.execute("ALTER TABLE runs ADD COLUMN sweep_job INTEGER")
    except BaseException:
        store.close()
        raise
    return store


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def create_sweep(store: RunStore, sweep: Sweep) -> int:
    with store._transaction() as db:
        cur = db.execute(
            "INSERT INTO sweeps (name, spec, runs, created) VALUES (?, ?, ?, ?)",
            (sweep.name, json.dumps(sweep.spec), sweep.runs, time.time()),
        )
        sweep_id = int(cur.lastrowid or 0)
        db.executemany(
            "INSERT INTO sweep_jobs (sweep_id, point, label, overrides, seed, config) VALUES (?, ?, ?, ?, ?, ?)",
            [(sweep_id, j.point, j.label, json.dumps(j.overrides), j.seed, json.dumps(j.config)) for j in sweep.jobs],
        )
    return sweep_id


def sweep_row(store: RunStore, sweep_id: int | str) -> dict[str, Any]:
    try:
        sid = int(sweep_id)
    except ValueError:
        raise StoreError(f"sweep {sweep_id!r}: give a sweep id (a number, printed by `aeqprop sweep run`)") from None
    rows = store._query("SELECT * FROM sweeps WHERE id = ?", (sid,))
    if not rows:
        known = [str(r["id"]) for r in store._query("SELECT id FROM sweeps ORDER BY id")]
        raise StoreError(f"no sweep {sid} in {store.path}; sweeps: {', '.join(known) or 'none'}")
    return rows[0]


def jobs(store: RunStore, sweep_id: int) -> list[dict[str, Any]]:
    """The jobs of a sweep with their last run's id, status and figures (None where none ran)."""
    rows = store._query(
        "SELECT j.*, r.id AS run_id, r.status, r.error, "
        "(SELECT COUNT(*) FROM runs c WHERE c.sweep_job = j.id) AS attempts, "
        "(SELECT test_accuracy FROM epoch_metrics e WHERE e.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS test_accuracy, "
        "(SELECT MAX(test_accuracy) FROM epoch_metrics e WHERE e.run_id = r.id) AS best_accuracy, "
        "(SELECT test_loss FROM epoch_metrics e WHERE e.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS test_loss, "
        "(SELECT SUM(seconds) FROM epoch_metrics e WHERE e.run_id = r.id) AS seconds, "
        + (
            "(SELECT val_accuracy FROM validation v WHERE v.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS val_accuracy "
            if store.version >= 3
            else "NULL AS val_accuracy "
        )
        + "FROM sweep_jobs j LEFT JOIN runs r ON r.id = (SELECT MAX(id) FROM runs x WHERE x.sweep_job = j.id) "
        "WHERE j.sweep_id = ? ORDER BY j.point, j.seed",
        (sweep_id,),
    )
    for row in rows:
        row["overrides"] = json.loads(row["overrides"])
        row["config"] = json.loads(row["config"])
    return rows


def record_run(store: RunStore, job_id: int, config: dict, record: RunRecord) -> int:
    """Write a worker's records as a new run of job ``job_id`` in one transaction; the run id.

    Rows are copied by column name, so a column the scratch store has and this one lacks is
    dropped; ``config`` (the job's, with this runs folder) replaces the scratch run's."""
    with store._transaction() as db:
        if not record.tables.get("runs"):
            cur = db.execute(
                "INSERT INTO runs (config, status, seed, host, started, ended, error, sweep_job) "
                "VALUES (?, 'failed', ?, ?, ?, ?, ?, ?)",
                (
                    json.dumps(config),
                    config.get("seed"),
                    record.host,
                    time.time() - record.seconds,
                    time.time(),
                    record.error or "the run stopped before it was recorded",
                    job_id,
                ),
            )
            return int(cur.lastrowid or 0)
        run = {**record.tables["runs"][0], "config": json.dumps(config), "sweep_job": job_id}
        run_id = _insert(db, "runs", run, drop=("id",))
        for table, rows in record.tables.items():
            if table != "runs":
                for row in rows:
                    _insert(
                        db, table, {**row, "run_id": run_id}, drop=("id",) if table in ("events", "checkpoints") else ()
                    )
        return run_id


def _insert(db: sqlite3.Connection, table: str, row: dict[str, Any], drop: Collection[str] = ()) -> int:
    columns = [c for c in _columns(db, table) if c in row and c not in drop]
    cur = db.execute(
        f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [row[c] for c in columns],
    )
    if cur.lastrowid is None:  # sqlite3 sets it after every successful INSERT
        raise StoreError(f"inserting into {table} recorded no row")
    return cur.lastrowid


# -- results ------------------------------------------------------------------------
@dataclass(frozen=True)
class PointSummary:
    """One point over its seeds: mean and std of the final test accuracy (fraction), completed
    runs out of jobs, mean seconds per run, and the mean final validation accuracy (NaN unless
    every completed run held a validation split out)."""

    point: int
    label: str
    overrides: dict
    completed: int
    jobs: int
    mean: float
    std: float
    accuracies: tuple[float, ...]
    seconds: float
    best: bool = False
    validation: float = float("nan")


def summarize(rows: list[dict[str, Any]]) -> list[PointSummary]:
    """Points ranked by mean final validation accuracy over their completed runs where every point has
    one (the test split chooses nothing), else by mean final test accuracy; best first, marked."""
    points: dict[int, list[dict]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    out = []
    for point, group in points.items():
        done = [r for r in group if r["status"] == "completed" and r["test_accuracy"] is not None]
        acc = np.array([r["test_accuracy"] for r in done])
        out.append(
            PointSummary(
                point,
                group[0]["label"],
                group[0]["overrides"],
                len(done),
                len(group),
                float(acc.mean()) if len(acc) else float("nan"),
                float(acc.std()) if len(acc) else float("nan"),
                tuple(float(a) for a in acc),
                float(np.mean([r["seconds"] or 0.0 for r in done])) if done else float("nan"),
                validation=float(np.mean([r["val_accuracy"] for r in done]))
                if done and all(r.get("val_accuracy") is not None for r in done)
                else float("nan"),
            )
        )
    by_validation = by_validation_accuracy(out)
    out.sort(key=lambda s: (-((s.validation if by_validation else s.mean) if s.completed else -1.0), s.point))
    if out and out[0].completed:
        first = out[0]
        out[0] = PointSummary(**{**first.__dict__, "best": True})
    return out


def by_validation_accuracy(points: list[PointSummary]) -> bool:
    """Whether points are ranked by validation accuracy: every point with a completed run has one."""
    done = [p for p in points if p.completed]
    return bool(done) and all(not np.isnan(p.validation) for p in done)


def run_digest(store: RunStore, run_id: int) -> str:
    """SHA-256 of what a run computed: its step losses, epoch and evaluation figures and last
    checkpoint's arrays (not its timings, host or ids). Equal digests: bitwise equal results."""
    import hashlib

    h = hashlib.sha256()
    for row in store._query("SELECT step, loss FROM step_metrics WHERE run_id = ? ORDER BY step", (run_id,)):
        h.update(f"{row['step']}:{row['loss']!r};".encode())
    for row in store._query(
        "SELECT epoch, train_loss, train_accuracy, test_loss, test_accuracy FROM epoch_metrics "
        "WHERE run_id = ? ORDER BY epoch",
        (run_id,),
    ):
        h.update(repr(tuple(row.values())).encode())
    for row in store._query(
        "SELECT step, test_loss, test_accuracy FROM evaluations WHERE run_id = ? ORDER BY step", (run_id,)
    ):
        h.update(repr(tuple(row.values())).encode())
    checkpoint = store.load_checkpoint(run_id)
    if checkpoint is not None:
        for group in ("parameters", "knobs"):
            for name, value in sorted((checkpoint[group] or {}).items()):
                h.update(f"{group}:{name}".encode() + np.ascontiguousarray(value).tobytes())
    return h.hexdigest()
