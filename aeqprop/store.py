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

Opening, the checks that refuse a damaged file, read-only use and write errors
are the file's business (:mod:`aeqprop.store_file`). A run has one owner
at a time: a lease (``leases`` table, see :mod:`aeqprop.ownership`). The
digests of a run's input files are in ``inputs`` (see :mod:`aeqprop.inputs`).
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import sqlite3
import sys
import time
from typing import Any

import numpy as np

from aeqprop.store_file import DB_NAME, StoreError, StoreFile

__all__ = ["DB_NAME", "KEEP_CHECKPOINTS", "RunStore", "SCHEMA_VERSION", "StoreError", "versions"]

SCHEMA_VERSION = 3  # 2: leases and inputs tables; 3: validation (an older store is migrated on its first writable open)
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

#: Tables added by schema version 2.
SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS leases (
    run_id INTEGER PRIMARY KEY, token TEXT NOT NULL, host TEXT, pid INTEGER, pid_start TEXT,
    acquired REAL, heartbeat REAL);
CREATE TABLE IF NOT EXISTS inputs (
    run_id INTEGER, key TEXT, value TEXT, path TEXT, sha256 TEXT, bytes INTEGER, PRIMARY KEY (run_id, key));
"""

#: Tables added by schema version 3: the validation split's figures per epoch (runs that hold one out).
SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS validation (
    run_id INTEGER, epoch INTEGER, val_loss REAL, val_accuracy REAL, PRIMARY KEY (run_id, epoch));
"""

#: SQLite keeps integers in 64 bits; a run id outside is no run.
MAX_ID = 2**63 - 1


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
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its keyword options
    return buf.getvalue()


def _digest(blob: bytes, meta: str) -> str:
    return hashlib.sha256(blob + meta.encode()).hexdigest()


class RunStore(StoreFile):
    """The database of one runs folder. Example: ``RunStore("runs").runs()``.

    ``create=False`` refuses a folder without a store; ``readonly=True`` (implies
    ``create=False``) writes nothing, not even the journal mode.
    """

    SCHEMAS = {1: SCHEMA, 2: SCHEMA + SCHEMA_2, 3: SCHEMA + SCHEMA_2 + SCHEMA_3}
    SCHEMA_VERSION = SCHEMA_VERSION

    # -- runs ---------------------------------------------------------------------
    def create_run(
        self, config: dict, seed: int, dataset: str, backend: str, protocol: str, inputs: list[dict] | None = None
    ) -> int:
        """Record a new run, owned by this process (its lease taken in the same transaction),
        with the digests of its input files (rows of :func:`aeqprop.inputs.record`)."""
        from aeqprop import ownership

        lease = ownership.me()
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (config, status, seed, dataset, backend, protocol, versions, host, started) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    json.dumps(config),
                    seed,
                    dataset,
                    backend,
                    protocol,
                    json.dumps(versions()),
                    socket.gethostname(),
                    now,
                ),
            )
            assert cur.lastrowid is not None  # set by the INSERT
            rid = int(cur.lastrowid)
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rid, lease["token"], lease["host"], lease["pid"], lease["pid_start"], now, now),
            )
            for item in inputs or []:
                db.execute(
                    "INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?)",
                    (rid, item["key"], item["value"], item["path"], item["sha256"], item["bytes"]),
                )
        self._tokens[rid] = lease["token"]
        return rid

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status!r}; valid: {STATUSES}")
        ended = None if status == "running" else time.time()
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = ?, error = ?, ended = ? WHERE id = ?", (status, error, ended, run_id))

    def run(self, run_id: int | str) -> dict[str, Any]:
        """A run's row, with ``owner`` (the live lease holder, or None when no process trains it) and
        ``last_seen`` (the time of the lease holder's last write, or None)."""
        try:
            rid = int(str(run_id).strip())
        except ValueError:
            raise StoreError(f"run {run_id!r}: give a run id (a number, see `aeqprop runs list`)") from None
        rows = self._query("SELECT * FROM runs WHERE id = ?", (rid,)) if 0 < rid <= MAX_ID else []
        if not rows:
            known = [r["id"] for r in self._query("SELECT id FROM runs ORDER BY id")]
            shown = ", ".join(map(str, known[:20])) + (" ..." if len(known) > 20 else "")
            raise StoreError(f"no run {rid} in {self.path}; runs: {shown or 'none'}")
        row = rows[0]
        try:
            row["config"] = json.loads(row["config"])
            row["versions"] = json.loads(row["versions"] or "{}")
        except (TypeError, ValueError) as exc:
            raise self._damaged(f"run {rid}: its recorded config is unreadable ({exc})") from None
        from aeqprop import ownership

        leases = self._leases(rid)
        row["owner"] = leases[0] if leases and ownership.is_live(leases[0]) else None
        row["last_seen"] = leases[0]["heartbeat"] if leases else None  # the owner's last write
        return row

    def runs(self) -> list[dict[str, Any]]:
        """Every run; ``owner`` is the live lease holder or None (a "running" run without one was killed)."""
        rows = self._query(
            "SELECT id, status, dataset, backend, protocol, started, ended, error, "
            "(SELECT MAX(test_accuracy) FROM epoch_metrics e WHERE e.run_id = runs.id) AS best_accuracy "
            "FROM runs ORDER BY id"
        )
        leases = {r["run_id"]: r for r in self._leases()}
        from aeqprop import ownership

        for r in rows:
            lease = leases.get(r["id"])
            r["owner"] = lease if lease is not None and ownership.is_live(lease) else None
            r["last_seen"] = None if lease is None else lease["heartbeat"]
        return rows

    def inputs(self, run_id: int) -> list[dict[str, Any]]:
        """The input files recorded when the run started (key, value as given, absolute path, sha256, bytes)."""
        if self.version < 2:
            return []
        return self._query(
            "SELECT key, value, path, sha256, bytes FROM inputs WHERE run_id = ? ORDER BY key", (run_id,)
        )

    # -- ownership ------------------------------------------------------------------
    def _leases(self, run_id: int | None = None) -> list[dict[str, Any]]:
        if self.version < 2:
            return []
        if run_id is None:
            return self._query("SELECT * FROM leases")
        return self._query("SELECT * FROM leases WHERE run_id = ?", (run_id,))

    def acquire(self, run_id: int) -> dict | None:
        """Take ownership of a run; refused while another live process holds it.

        Returns the lease of a previous owner that is gone (killed), or None.
        """
        from aeqprop import ownership

        lease, now = ownership.me(), time.time()
        with self._transaction() as db:
            rows = [
                dict(zip(("run_id", "token", "host", "pid", "pid_start", "acquired", "heartbeat"), r))
                for r in db.execute("SELECT * FROM leases WHERE run_id = ?", (run_id,))
            ]
            previous = rows[0] if rows else None
            if previous is not None and ownership.is_live(previous, now):
                raise StoreError(
                    f"run {run_id} is being trained by {ownership.describe(previous, now)}; one process at a time: "
                    f"stop it first (kill -INT {previous['pid']}) or wait for it to end"
                )
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, lease["token"], lease["host"], lease["pid"], lease["pid_start"], now, now),
            )
        self._tokens[run_id] = lease["token"]
        return previous

    def release(self, run_id: int) -> None:
        """Give up ownership (the run can then be resumed by any process)."""
        token = self._tokens.pop(run_id, None)
        if token is not None:
            with self._transaction() as db:
                db.execute("DELETE FROM leases WHERE run_id = ? AND token = ?", (run_id, token))

    def _heartbeat(self, db: sqlite3.Connection, run_id: int) -> None:
        """Inside a write: renew this process's lease, or stop if another process took the run over."""
        token = self._tokens.get(run_id)
        if token is None:
            return
        cur = db.execute("UPDATE leases SET heartbeat = ? WHERE run_id = ? AND token = ?", (time.time(), run_id, token))
        if cur.rowcount == 0:
            self._tokens.pop(run_id, None)
            raise StoreError(f"run {run_id} was taken over by another process; this one stops without writing")

    # -- metrics and events -------------------------------------------------------
    def log_step(
        self, run_id: int, step: int, epoch: int, loss: float, sweeps: dict, seconds: dict, extra: dict
    ) -> None:
        """Buffer one step's metrics (loss, relaxation sweeps and seconds per phase, the protocol's
        extra figures); they are written with the next checkpoint or flush."""
        self._steps.append(
            (run_id, step, epoch, loss, json.dumps(sweeps), json.dumps(seconds), json.dumps(extra) if extra else None)
        )

    def _write_steps(self, db: sqlite3.Connection) -> None:
        if self._steps:
            db.executemany("INSERT OR REPLACE INTO step_metrics VALUES (?, ?, ?, ?, ?, ?, ?)", self._steps)
            self._steps = []

    def flush(self) -> None:
        with self._transaction() as db:
            self._write_steps(db)

    def log_epoch(self, run_id: int, record: Any, parameter_norm: float) -> None:
        with self._transaction() as db:
            self._heartbeat(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO epoch_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    record.epoch,
                    record.train_loss,
                    record.train_accuracy,
                    record.test_loss,
                    record.test_accuracy,
                    record.seconds,
                    record.sweeps_per_step,
                    parameter_norm,
                ),
            )
            val_accuracy = getattr(record, "val_accuracy", float("nan"))
            if np.isfinite(val_accuracy):
                db.execute(
                    "INSERT OR REPLACE INTO validation VALUES (?, ?, ?, ?)",
                    (run_id, record.epoch, record.val_loss, val_accuracy),
                )
            db.execute(
                "UPDATE runs SET best_accuracy = (SELECT MAX(test_accuracy) FROM epoch_metrics "
                "WHERE run_id = ?) WHERE id = ?",
                (run_id, run_id),
            )

    def log_eval(self, run_id: int, epoch: int, step: int, loss: float, accuracy: float) -> None:
        with self._transaction() as db:
            self._heartbeat(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?)", (run_id, step, epoch, loss, accuracy)
            )

    def event(self, run_id: int, kind: str, message: str, step: int | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (run_id, time, step, kind, message) VALUES (?, ?, ?, ?, ?)",
                (run_id, time.time(), step, kind, message),
            )

    def metrics(self, run_id: int, table: str) -> list[dict[str, Any]]:
        if table not in ("step_metrics", "epoch_metrics", "evaluations", "events", "validation"):
            raise ValueError(table)
        if table == "validation" and self.version < 3:  # a read-only store from before the table
            return []
        order = "id" if table == "events" else ("epoch" if table in ("epoch_metrics", "validation") else "step")
        return self._query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY {order}", (run_id,))

    # -- checkpoints --------------------------------------------------------------
    def save_checkpoint(self, run_id: int, position: Any, parameters: dict, knobs: dict | None, random: dict) -> None:
        """Write buffered step metrics and one checkpoint in one transaction; keep the last few."""
        arrays = {f"p:{n}": v for n, v in parameters.items()}
        arrays.update({f"k:{n}": v for n, v in (knobs or {}).items()})
        arrays["order"] = np.asarray(position.order)
        blob = _pack(arrays)
        meta = json.dumps(
            {
                "epoch": position.epoch,
                "step": position.step,
                "global_step": position.global_step,
                "sums": list(position.sums),
                "random": random,
                "knobs": knobs is not None,
            }
        )
        with self._transaction() as db:
            self._heartbeat(db, run_id)
            self._write_steps(db)
            db.execute(
                "INSERT INTO checkpoints (run_id, step, epoch, step_in_epoch, created, arrays, meta, digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    position.global_step,
                    position.epoch,
                    position.step,
                    time.time(),
                    blob,
                    meta,
                    _digest(blob, meta),
                ),
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
            self.broken = f"run {run_id}: checkpoint digest mismatch"
            raise StoreError(
                f"run {run_id}: the checkpoint at step {row['step']} is corrupted (digest mismatch); "
                "the run cannot resume from it, start it again with `aeqprop train`"
            )
        try:
            meta = json.loads(meta_text)
            with np.load(io.BytesIO(blob)) as f:
                arrays = {k: f[k] for k in f.files}
        except (ValueError, OSError) as exc:
            self.broken = f"run {run_id}: checkpoint unreadable"
            raise StoreError(f"run {run_id}: the checkpoint at step {row['step']} is unreadable ({exc})") from None
        meta["parameters"] = {k[2:]: v for k, v in arrays.items() if k.startswith("p:")}
        meta["knobs"] = {k[2:]: v for k, v in arrays.items() if k.startswith("k:")} if meta["knobs"] else None
        meta["order"] = arrays["order"]
        return meta
