"""The run store: one SQLite database per runs folder (``<runs>/aeqprop.db``).

Tables: ``runs`` (config, status, seed, package versions, host, start and
end), ``step_metrics`` and ``epoch_metrics``, ``evaluations`` (held-out split
every N steps), ``events`` (warnings, faults, retries, relaxation failures,
closes) and ``checkpoints`` (parameters, knobs, random states and the position
in the data order, with a SHA-256 digest).

WAL journal and a busy timeout let several runs write the same folder at once.
Step metrics are buffered in memory and written with the next checkpoint in
one transaction: a run killed at any moment leaves the metrics and the
checkpoint consistent, and the steps after the checkpoint are redone (their
rows replaced) on resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from aeqprop.errors import AeqpropError

DB_NAME = "aeqprop.db"
SCHEMA_VERSION = 1
KEEP_CHECKPOINTS = 2
STATUSES = ("running", "completed", "failed", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL, status TEXT NOT NULL, seed INTEGER,
    dataset TEXT, backend TEXT, protocol TEXT, versions TEXT, host TEXT,
    started REAL, ended REAL, error TEXT, best_accuracy REAL);
CREATE TABLE IF NOT EXISTS step_metrics (
    run_id INTEGER, step INTEGER, epoch INTEGER, loss REAL, sweeps TEXT, seconds TEXT, extra TEXT,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS epoch_metrics (
    run_id INTEGER, epoch INTEGER, train_loss REAL, train_accuracy REAL, test_loss REAL,
    test_accuracy REAL, seconds REAL, sweeps_per_step REAL, parameter_norm REAL,
    PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS evaluations (
    run_id INTEGER, step INTEGER, epoch INTEGER, test_loss REAL, test_accuracy REAL,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, time REAL, step INTEGER, kind TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, step INTEGER, epoch INTEGER,
    step_in_epoch INTEGER, created REAL, arrays BLOB, meta TEXT, digest TEXT);
CREATE INDEX IF NOT EXISTS checkpoints_run ON checkpoints (run_id, id);
"""


class StoreError(AeqpropError):
    """The run store is unreadable, or a run or checkpoint in it is missing or corrupted."""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("aeqprop", "numpy", "scipy", "scikit-learn", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _digest(blob: bytes, meta: str) -> str:
    return hashlib.sha256(blob + meta.encode()).hexdigest()


class RunStore:
    """The database of one runs folder. Example: ``RunStore("runs").runs()``."""

    def __init__(self, folder: str | Path, create: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        if not create and not self.path.exists():
            raise StoreError(f"no run store in {self.folder} ({DB_NAME} missing); give the runs folder with --runs")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._steps: list[tuple] = []
        try:
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction():
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                tables = self.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
                if tables and version != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has store schema {version}, this version reads {SCHEMA_VERSION}; "
                        "use another runs folder or export the runs with the version that wrote them"
                    )
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a readable run store ({exc}); move it aside or use another runs folder"
            ) from None

    # -- plumbing ---------------------------------------------------------------
    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, exc, tb):
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
            return False

    def _transaction(self) -> "RunStore._Tx":
        return RunStore._Tx(self.db)

    def close(self) -> None:
        self.db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        try:
            cur = self.db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot read the run store ({exc})") from None

    # -- runs ---------------------------------------------------------------------
    def create_run(self, config: dict, seed: int, dataset: str, backend: str, protocol: str) -> int:
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (config, status, seed, dataset, backend, protocol, versions, host, started) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (json.dumps(config), seed, dataset, backend, protocol, json.dumps(versions()),
                 socket.gethostname(), time.time()),
            )
            return int(cur.lastrowid)

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status!r}; valid: {STATUSES}")
        ended = None if status == "running" else time.time()
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = ?, error = ?, ended = ? WHERE id = ?", (status, error, ended, run_id))

    def run(self, run_id: int | str) -> dict[str, Any]:
        try:
            rid = int(run_id)
        except ValueError:
            raise StoreError(f"run {run_id!r}: give a run id (a number, see `aeqprop runs list`)") from None
        rows = self._query("SELECT * FROM runs WHERE id = ?", (rid,))
        if not rows:
            known = [r["id"] for r in self._query("SELECT id FROM runs ORDER BY id")]
            raise StoreError(f"no run {rid} in {self.path}; runs: {', '.join(map(str, known)) or 'none'}")
        row = rows[0]
        row["config"] = json.loads(row["config"])
        row["versions"] = json.loads(row["versions"] or "{}")
        return row

    def runs(self) -> list[dict[str, Any]]:
        return self._query(
            "SELECT id, status, dataset, backend, protocol, started, ended, error, "
            "(SELECT MAX(test_accuracy) FROM epoch_metrics e WHERE e.run_id = runs.id) AS best_accuracy "
            "FROM runs ORDER BY id"
        )

    # -- metrics and events -------------------------------------------------------
    def log_step(self, run_id: int, step: int, epoch: int, loss: float, sweeps: dict, seconds: dict,
                 extra: dict) -> None:
        """Buffer one step's metrics (loss, relaxation sweeps and seconds per phase, the protocol's
        extra figures); they are written with the next checkpoint or flush."""
        self._steps.append((run_id, step, epoch, loss, json.dumps(sweeps), json.dumps(seconds),
                            json.dumps(extra) if extra else None))

    def _write_steps(self, db) -> None:
        if self._steps:
            db.executemany("INSERT OR REPLACE INTO step_metrics VALUES (?, ?, ?, ?, ?, ?, ?)", self._steps)
            self._steps = []

    def flush(self) -> None:
        with self._transaction() as db:
            self._write_steps(db)

    def log_epoch(self, run_id: int, record, parameter_norm: float) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO epoch_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, record.epoch, record.train_loss, record.train_accuracy, record.test_loss,
                 record.test_accuracy, record.seconds, record.sweeps_per_step, parameter_norm),
            )

    def log_eval(self, run_id: int, epoch: int, step: int, loss: float, accuracy: float) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?)", (run_id, step, epoch, loss, accuracy))

    def event(self, run_id: int, kind: str, message: str, step: int | None = None) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO events (run_id, time, step, kind, message) VALUES (?, ?, ?, ?, ?)",
                       (run_id, time.time(), step, kind, message))

    def metrics(self, run_id: int, table: str) -> list[dict[str, Any]]:
        if table not in ("step_metrics", "epoch_metrics", "evaluations", "events"):
            raise ValueError(table)
        order = "id" if table == "events" else ("epoch" if table == "epoch_metrics" else "step")
        return self._query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", (run_id,))

    # -- checkpoints --------------------------------------------------------------
    def save_checkpoint(self, run_id: int, position, parameters: dict, knobs: dict | None, random: dict) -> None:
        """Write buffered step metrics and one checkpoint in one transaction; keep the last few."""
        arrays = {f"p:{n}": v for n, v in parameters.items()}
        arrays.update({f"k:{n}": v for n, v in (knobs or {}).items()})
        arrays["order"] = np.asarray(position.order)
        blob = _pack(arrays)
        meta = json.dumps({"epoch": position.epoch, "step": position.step, "global_step": position.global_step,
                           "sums": list(position.sums), "random": random, "knobs": knobs is not None})
        with self._transaction() as db:
            self._write_steps(db)
            db.execute(
                "INSERT INTO checkpoints (run_id, step, epoch, step_in_epoch, created, arrays, meta, digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, position.global_step, position.epoch, position.step, time.time(), blob, meta,
                 _digest(blob, meta)),
            )
            db.execute(
                "DELETE FROM checkpoints WHERE run_id = ? AND id NOT IN "
                "(SELECT id FROM checkpoints WHERE run_id = ? ORDER BY id DESC LIMIT ?)",
                (run_id, run_id, KEEP_CHECKPOINTS),
            )

    def load_checkpoint(self, run_id: int) -> dict[str, Any] | None:
        """The last checkpoint of a run (verified against its digest), or None if it has none."""
        rows = self._query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,))
        if not rows:
            return None
        row = rows[0]
        blob, meta_text = bytes(row["arrays"] or b""), row["meta"] or ""
        if _digest(blob, meta_text) != row["digest"]:
            raise StoreError(
                f"run {run_id}: the checkpoint at step {row['step']} is corrupted (digest mismatch); "
                "the run cannot resume from it, start it again with `aeqprop train`"
            )
        try:
            meta = json.loads(meta_text)
            with np.load(io.BytesIO(blob)) as f:
                arrays = {k: f[k] for k in f.files}
        except (ValueError, OSError) as exc:
            raise StoreError(f"run {run_id}: the checkpoint at step {row['step']} is unreadable ({exc})") from None
        meta["parameters"] = {k[2:]: v for k, v in arrays.items() if k.startswith("p:")}
        meta["knobs"] = {k[2:]: v for k, v in arrays.items() if k.startswith("k:")} if meta["knobs"] else None
        meta["order"] = arrays["order"]
        return meta
