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

Opening checks the file before anything is written: a damaged database
(``PRAGMA quick_check``), a truncated (0-byte) file, a missing table or a newer
schema is refused with the way to recover, and nothing is written into it.
``readonly=True`` opens without writing anything (no WAL switch, no tables
created), so the read commands work on a read-only mount. A run has one owner
at a time: a lease (``leases`` table, see :mod:`aeqprop.ownership`). The
digests of a run's input files are in ``inputs`` (see :mod:`aeqprop.inputs`).
SQLite errors on a write (disk full, a malformed page) become a StoreError.
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
from urllib.parse import quote

import numpy as np

from aeqprop.errors import AeqpropError

DB_NAME = "aeqprop.db"
SCHEMA_VERSION = 2  # 2: leases and inputs tables (a version-1 store is migrated on its first writable open)
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

#: SQLite keeps integers in 64 bits; a run id outside is no run.
MAX_ID = 2**63 - 1


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
    """The database of one runs folder. Example: ``RunStore("runs").runs()``.

    ``create=False`` refuses a folder without a store; ``readonly=True`` (implies
    ``create=False``) writes nothing, not even the journal mode.
    """

    def __init__(self, folder: str | Path, create: bool = True, readonly: bool = False):
        if str(folder).strip() == "":
            raise StoreError("the runs folder is empty (''); give a folder with --runs, e.g. --runs runs")
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        self.broken: str | None = None  # set when a write found the file damaged: no more writes
        self._steps: list[tuple] = []
        self._tokens: dict[int, str] = {}  # run id -> lease token held by this store
        self._check_paths(create and not readonly)
        try:
            self.db = self._connect()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        try:
            self._check_and_migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise self._damaged(exc) from None
        except StoreError:
            self.db.close()
            raise

    def _check_paths(self, create: bool) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"runs folder {self.folder} is a file, not a folder; give a folder with --runs")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file; move it aside or use another runs folder")
        if not self.path.exists():
            if not create:
                raise StoreError(f"no run store in {self.folder} ({DB_NAME} missing); give the runs folder with --runs")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._create_file()
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot create the run store in {self.folder} ({getattr(exc, 'strerror', None) or exc}); "
                                 "give a writable folder with --runs") from None
        elif self.path.stat().st_size == 0:
            raise StoreError(
                f"{self.path} is empty (0 bytes): the run store was truncated and its runs are lost unless you have "
                f"a copy; move it aside (mv {self.path} {self.path}.empty) to start a new store there"
            )
        else:
            try:
                with open(self.path, "rb") as f:
                    header = f.read(16)
            except OSError as exc:
                raise StoreError(f"cannot read {self.path} ({exc.strerror or exc}); check its permissions") from None
            if header != b"SQLite format 3\x00":
                raise StoreError(f"{self.path} is not a run store (not an SQLite file: file is not a database); "
                                 "move it aside or use another runs folder")

    def _create_file(self) -> None:
        """Write an empty store beside the final name and link it into place: another process never sees a
        half-made (0-byte) file, and of two processes creating the store at once one wins, the other uses it."""
        import os
        import uuid

        tmp = self.folder / f".{DB_NAME}.{uuid.uuid4().hex}.tmp"
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(SCHEMA + SCHEMA_2)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            finally:
                db.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: rename, unless another process was first
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA busy_timeout = 30000")
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # a WAL store on a read-only mount cannot make its -shm file
                db.close()
                uri = f"file:{quote(str(self.path.resolve()))}?immutable=1"
                db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            return db
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    def _journal(self) -> None:
        """WAL journal for a writable store, switched only once the file has passed its checks."""
        try:
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise StoreError(
                    f"{self.path} is read-only ({exc}); `runs list`, `runs show`, `plot` and `export` work on it, "
                    "training and resuming need a writable runs folder"
                ) from None
            raise

    def _damaged(self, exc: BaseException | str) -> StoreError:
        return StoreError(
            f"the run store {self.path} is damaged ({exc}); nothing was written to it. Keep a copy, then recover "
            f"what SQLite can read: `sqlite3 {self.path} .recover | sqlite3 NEW/{DB_NAME}` and use --runs NEW"
        )

    @staticmethod
    def _expected(version: int) -> dict[str, set[str]]:
        """Tables and their columns at a schema version (from the SCHEMA text itself)."""
        mem = sqlite3.connect(":memory:")
        mem.executescript(SCHEMA + (SCHEMA_2 if version >= 2 else ""))
        tables = [r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not r[0].startswith("sqlite_")]
        out = {t: {r[1] for r in mem.execute(f"PRAGMA table_info({t})")} for t in tables}
        mem.close()
        return out

    def _check_and_migrate(self) -> None:
        """quick_check, then the schema: tables of the store's version present (extra ones tolerated)."""
        result = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            detail = " ".join(" ".join(result[:3]).split())  # one line
            raise self._damaged(f"quick_check: {detail[:300]}")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        present = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                   if not r[0].startswith("sqlite_")}
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}, this version reads up to {SCHEMA_VERSION}; "
                "use the newer aeqprop that wrote it, or another runs folder"
            )
        if version == 0:
            if present:
                raise StoreError(f"{self.path} is an SQLite file but not a run store (tables: "
                                 f"{', '.join(sorted(present))}); use another runs folder")
            if self.readonly:
                raise StoreError(f"{self.path} holds no run store yet; train a run into {self.folder} first")
        else:
            for table, columns in self._expected(version).items():
                if table not in present:
                    raise self._damaged(f"table {table} is missing")
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                if not columns <= have:
                    raise self._damaged(f"table {table} lacks column(s) {', '.join(sorted(columns - have))}")
        self.version = version
        if self.readonly:
            return
        self._journal()
        if version == SCHEMA_VERSION:
            return
        with self._transaction() as db:  # a new store, or a migration from version 1
            db.execute("PRAGMA user_version").fetchone()
            for statement in (SCHEMA + SCHEMA_2).split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.version = SCHEMA_VERSION

    # -- plumbing ---------------------------------------------------------------
    class _Tx:
        """One write transaction; an SQLite error inside or at COMMIT becomes a StoreError."""

        def __init__(self, store: "RunStore"):
            self.store = store
            self.db = store.db

        def __enter__(self):
            store = self.store
            if store.readonly:
                raise StoreError(f"{store.path} was opened read-only; nothing can be written to it")
            if store.broken is not None:
                raise StoreError(f"{store.path}: an earlier write failed ({store.broken}); nothing more is written")
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.store._write_error(exc) from None
            return self.db

        def __exit__(self, kind, exc, tb):
            if kind is None:
                try:
                    self.db.execute("COMMIT")
                    return False
                except sqlite3.Error as error:
                    self._rollback()
                    raise self.store._write_error(error) from None
            self._rollback()
            if issubclass(kind, sqlite3.Error):
                raise self.store._write_error(exc) from None
            return False

        def _rollback(self) -> None:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
            self.broken = text
            return self._damaged(exc)
        if "readonly" in text or "read-only" in text:
            return StoreError(f"{self.path} is read-only ({text}); training and resuming need a writable runs folder")
        return StoreError(f"cannot write to the run store {self.path} ({text}); nothing of this write was kept; "
                          "free disk space or fix the folder, then continue the run with `aeqprop resume`")

    def _transaction(self) -> "RunStore._Tx":
        return RunStore._Tx(self)

    def close(self) -> None:
        self.db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        try:
            cur = self.db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc) or "not a database" in str(exc):
                raise self._damaged(exc) from None
            raise StoreError(f"{self.path}: cannot read the run store ({exc})") from None

    # -- runs ---------------------------------------------------------------------
    def create_run(self, config: dict, seed: int, dataset: str, backend: str, protocol: str,
                   inputs: list[dict] | None = None) -> int:
        """Record a new run, owned by this process (its lease taken in the same transaction),
        with the digests of its input files (rows of :func:`aeqprop.inputs.record`)."""
        from aeqprop import ownership

        lease = ownership.me()
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (config, status, seed, dataset, backend, protocol, versions, host, started) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (json.dumps(config), seed, dataset, backend, protocol, json.dumps(versions()),
                 socket.gethostname(), now),
            )
            rid = int(cur.lastrowid)
            db.execute("INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (rid, lease["token"], lease["host"], lease["pid"], lease["pid_start"], now, now))
            for item in inputs or []:
                db.execute("INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?)",
                           (rid, item["key"], item["value"], item["path"], item["sha256"], item["bytes"]))
        self._tokens[rid] = lease["token"]
        return rid

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status!r}; valid: {STATUSES}")
        ended = None if status == "running" else time.time()
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = ?, error = ?, ended = ? WHERE id = ?", (status, error, ended, run_id))

    def run(self, run_id: int | str) -> dict[str, Any]:
        """A run's row, with ``owner``: the live lease holder, or None when no process trains it."""
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
        row["owner"] = self._owner(rid)
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
        return self._query("SELECT key, value, path, sha256, bytes FROM inputs WHERE run_id = ? ORDER BY key",
                           (run_id,))

    # -- ownership ------------------------------------------------------------------
    def _leases(self, run_id: int | None = None) -> list[dict[str, Any]]:
        if self.version < 2:
            return []
        if run_id is None:
            return self._query("SELECT * FROM leases")
        return self._query("SELECT * FROM leases WHERE run_id = ?", (run_id,))

    def _owner(self, run_id: int) -> dict | None:
        from aeqprop import ownership

        rows = self._leases(run_id)
        return rows[0] if rows and ownership.is_live(rows[0]) else None

    def acquire(self, run_id: int) -> dict | None:
        """Take ownership of a run; refused while another live process holds it.

        Returns the lease of a previous owner that is gone (killed), or None.
        """
        from aeqprop import ownership

        lease, now = ownership.me(), time.time()
        with self._transaction() as db:
            rows = [dict(zip(("run_id", "token", "host", "pid", "pid_start", "acquired", "heartbeat"), r))
                    for r in db.execute("SELECT * FROM leases WHERE run_id = ?", (run_id,))]
            previous = rows[0] if rows else None
            if previous is not None and ownership.is_live(previous, now):
                raise StoreError(
                    f"run {run_id} is being trained by {ownership.describe(previous, now)}; one process at a time: "
                    f"stop it first (kill -INT {previous['pid']}) or wait for it to end"
                )
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (run_id, lease["token"], lease["host"], lease["pid"], lease["pid_start"], now, now))
        self._tokens[run_id] = lease["token"]
        return previous

    def release(self, run_id: int) -> None:
        """Give up ownership (the run can then be resumed by any process)."""
        token = self._tokens.pop(run_id, None)
        if token is not None:
            with self._transaction() as db:
                db.execute("DELETE FROM leases WHERE run_id = ? AND token = ?", (run_id, token))

    def _heartbeat(self, db, run_id: int) -> None:
        """Inside a write: renew this process's lease, or stop if another process took the run over."""
        token = self._tokens.get(run_id)
        if token is None:
            return
        cur = db.execute("UPDATE leases SET heartbeat = ? WHERE run_id = ? AND token = ?", (time.time(), run_id, token))
        if cur.rowcount == 0:
            self._tokens.pop(run_id, None)
            raise StoreError(f"run {run_id} was taken over by another process; this one stops without writing")

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
            self._heartbeat(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO epoch_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, record.epoch, record.train_loss, record.train_accuracy, record.test_loss,
                 record.test_accuracy, record.seconds, record.sweeps_per_step, parameter_norm),
            )
            db.execute("UPDATE runs SET best_accuracy = (SELECT MAX(test_accuracy) FROM epoch_metrics "
                       "WHERE run_id = ?) WHERE id = ?", (run_id, run_id))

    def log_eval(self, run_id: int, epoch: int, step: int, loss: float, accuracy: float) -> None:
        with self._transaction() as db:
            self._heartbeat(db, run_id)
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
            self._heartbeat(db, run_id)
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
