"""The run store's file: opening it safely, checking it, and one write transaction at a time.

Opening checks the file, through a connection that cannot write, before anything
is written: a damaged database (``PRAGMA quick_check``), a truncated (0-byte)
file, a missing table or a newer schema is refused with the way to recover, and
nothing is written into it (not even the WAL a crashed writer left beside it).
``readonly=True`` opens without writing anything (no WAL switch, no tables
created), so the read commands work on a read-only mount (falling back to an
immutable read when SQLite cannot make its -shm index there). A new store is
made beside its final name and linked into place. SQLite errors on a write
(disk full, a malformed page) become a StoreError; after a malformed page no
more writes are tried.

The tables themselves are the subclass's (:class:`aeqprop.store.RunStore`):
``SCHEMAS`` maps each schema version to its full text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

from aeqprop.errors import AeqpropError

DB_NAME = "aeqprop.db"


class StoreError(AeqpropError):
    """The run store is unreadable, or a run or checkpoint in it is missing or corrupted."""


class StoreFile:
    """An SQLite run-store file, checked on open. Subclasses set ``SCHEMAS`` and ``SCHEMA_VERSION``."""

    SCHEMAS: dict[int, str] = {}
    SCHEMA_VERSION = 0

    def __init__(self, folder: str | Path, create: bool = True, readonly: bool = False):
        if str(folder).strip() == "":
            raise StoreError("the runs folder is empty (''); give a folder with --runs, e.g. --runs runs")
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        self.broken: str | None = None  # set when a read or a write found the file damaged: no more writes
        self._steps: list[tuple] = []
        self._tokens: dict[int, str] = {}  # run id -> lease token held by this store
        self._check_paths(create and not readonly)
        # The checks read through a read-only connection: closing a writable one on a refused file would
        # checkpoint the file's WAL into it (the last connection to close does), a write into a damaged store.
        self.db = self._open(readonly=True)
        self._or_close(self._check_file)
        if not readonly:
            self._reopen_writable()

    def writable(self) -> None:
        """Reopen a store opened read-only for writing (its checks were made on open).

        A command that must not write into a damaged file reads what it needs read-only first: once a
        writable connection has been open in this process, SQLite folds the file's WAL into it when the
        process's last connection to it closes, read-only ones included (they share its descriptors)."""
        if self.readonly:
            self.readonly = False
            self._reopen_writable()

    def _reopen_writable(self) -> None:
        self.db.close()
        self.db = self._open(readonly=False)
        self._or_close(self._migrate)

    def _open(self, readonly: bool) -> sqlite3.Connection:
        try:
            return self._connect(readonly)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise self._damaged(exc) from None

    def _or_close(self, step: Callable[[], None]) -> None:
        """Run the checks or the migration on the open connection; it is closed when they refuse the file."""
        try:
            step()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
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
                raise StoreError(
                    f"cannot create the run store in {self.folder} ({getattr(exc, 'strerror', None) or exc}); "
                    "give a writable folder with --runs"
                ) from None
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
                raise StoreError(
                    f"{self.path} is not a run store (not an SQLite file: file is not a database); "
                    "move it aside or use another runs folder"
                )

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
                db.executescript(self.SCHEMAS[self.SCHEMA_VERSION])
                db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
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

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA busy_timeout = 30000")
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # a WAL store on a read-only mount cannot make its -shm file
                db.close()
                uri = f"file:{quote(str(self.path.resolve()))}?immutable=1"
                db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            except BaseException:  # a damaged schema (the caller says so): closed, not left to the collector
                db.close()
                raise
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

    @classmethod
    def _expected(cls, version: int) -> dict[str, set[str]]:
        """Tables and their columns at a schema version (from the schema text itself)."""
        mem = sqlite3.connect(":memory:")
        mem.executescript(cls.SCHEMAS[version])
        tables = [
            r[0]
            for r in mem.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        ]
        out = {t: {r[1] for r in mem.execute(f"PRAGMA table_info({t})")} for t in tables}
        mem.close()
        return out

    def _check_file(self) -> None:
        """quick_check, then the schema: tables of the store's version present (extra ones tolerated)."""
        result = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            detail = " ".join(" ".join(result[:3]).split())  # one line
            raise self._damaged(f"quick_check: {detail[:300]}")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        present = {
            r[0]
            for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        }
        if version > self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}, this version reads up to {self.SCHEMA_VERSION}; "
                "use the newer aeqprop that wrote it, or another runs folder"
            )
        if version == 0:
            if present:
                raise StoreError(
                    f"{self.path} is an SQLite file but not a run store (tables: "
                    f"{', '.join(sorted(present))}); use another runs folder"
                )
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

    def _migrate(self) -> None:
        """WAL journal, then the schema brought to this version (a new store, or one of version 1)."""
        self._journal()
        if self.version == self.SCHEMA_VERSION:
            return
        with self._transaction() as db:  # a new store, or a migration from version 1
            db.execute("PRAGMA user_version").fetchone()
            for statement in self.SCHEMAS[self.SCHEMA_VERSION].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
        self.version = self.SCHEMA_VERSION

    # -- plumbing ---------------------------------------------------------------
    class _Tx:
        """One write transaction; an SQLite error inside or at COMMIT becomes a StoreError."""

        def __init__(self, store: StoreFile):
            self.store = store
            self.db = store.db

        def __enter__(self) -> sqlite3.Connection:
            store = self.store
            if store.readonly:
                raise StoreError(f"{store.path} was opened read-only; nothing can be written to it")
            if store.broken is not None:
                raise StoreError(f"{store.path} was found damaged ({store.broken}); nothing more is written to it")
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.store._write_error(exc) from None
            return self.db

        def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
            if kind is None:
                try:
                    self.db.execute("COMMIT")
                    return False
                except sqlite3.Error as error:
                    self._rollback()
                    raise self.store._write_error(error) from None
            self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise self.store._write_error(exc) from None
            return False

        def _rollback(self) -> None:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _found_damaged(self, exc: BaseException | str) -> StoreError:
        """The file is damaged where the open's checks do not look (a page, a row's text, a checkpoint):
        nothing more is written to it."""
        self.broken = str(exc)
        return self._damaged(exc)

    @staticmethod
    def _is_damage(exc: sqlite3.Error) -> bool:
        text = str(exc)
        return isinstance(exc, sqlite3.DatabaseError) and (
            "malformed" in text or "not a database" in text or "Could not decode" in text
        )

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if self._is_damage(exc):
            return self._found_damaged(exc)
        if "readonly" in text or "read-only" in text:
            return StoreError(f"{self.path} is read-only ({text}); training and resuming need a writable runs folder")
        return StoreError(
            f"cannot write to the run store {self.path} ({text}); nothing of this write was kept; "
            "free disk space or fix the folder, then continue the run with `aeqprop resume`"
        )

    def _transaction(self) -> StoreFile._Tx:
        return StoreFile._Tx(self)

    def close(self) -> None:
        """Close the file (again: nothing). The session closes its store on every way out of a run: a
        connection left to the garbage collector would checkpoint the WAL into the file at some later time."""
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        try:
            cur = self.db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        except UnicodeDecodeError as exc:  # text in the file that is not UTF-8 (SQLite's or Python's decoding)
            raise self._found_damaged(exc) from None
        except sqlite3.DatabaseError as exc:
            if self._is_damage(exc):
                raise self._found_damaged(exc) from None
            raise StoreError(f"{self.path}: cannot read the run store ({exc})") from None
