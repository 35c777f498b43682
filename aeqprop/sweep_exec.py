"""Running a sweep's jobs on any ``concurrent.futures.Executor`` and recording what comes back.

The worker side is ``run_job``: it trains one run against a private scratch
store in a temporary folder on its own machine (no shared filesystem), reads
the run's rows back and returns them as a ``RunRecord``. The side that started
the sweep (``run_jobs``) is the only writer of the sweep's store.

A job whose worker died (a killed process, a lost Dask worker, a broken
process pool) or that came back interrupted is submitted again, up to
``SweepSettings.retries`` times, and recorded once, when it ends. Ctrl+C stops
the sweep: nothing new starts, the runs in flight are abandoned, every run
already finished stays recorded, and ``aeqprop sweep resume`` runs the rest.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from aeqprop.errors import AeqpropError, ConfigurationError
from aeqprop.store import RunStore
from aeqprop.sweep_store import RunRecord, record_run

if TYPE_CHECKING:
    from aeqprop.sweep import Sweep

P = ParamSpec("P")
T = TypeVar("T")
MakeExecutor = Callable[[], Executor]  # a new executor (again after a process pool breaks)


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs.

    retries: times a job whose worker was lost (killed, crashed, interrupted) is submitted
        again before it is recorded as failed.
    blas_threads: BLAS threads per run; 1 keeps one run per core and makes results
        independent of how many cores a worker has (bitwise equal across executors).
    """

    retries: int = 3
    blas_threads: int = 1


def run_job(config: dict, blas_threads: int = 1) -> RunRecord:
    """Train one run of a sweep (``config``: a validated run config as a dict) on this machine and
    return its records; nothing is written outside a temporary folder removed on return."""
    import socket
    import tempfile

    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    record = RunRecord(host=socket.gethostname(), pid=os.getpid())
    with _scratch_lock:  # against an orphaned pool worker's watcher: it sees every folder made
        if _orphaned.is_set():  # a pool worker whose sweep is gone starts nothing new
            record.error = "the sweep that started this worker is gone"
            return record
        tmp = tempfile.mkdtemp(prefix="aeqprop-job-")
        _scratch.add(tmp)
    try:
        with threadpool_limits(limits=blas_threads):
            _train_into(record, config, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _scratch.discard(tmp)
    record.seconds = time.perf_counter() - t0
    return record


def _train_into(record: RunRecord, config: dict, tmp: str) -> None:
    """Train the run in scratch folder ``tmp`` and read its rows into ``record``."""
    from aeqprop import session
    from aeqprop.config import validate
    from aeqprop.errors import AeqpropError

    try:
        record.train_seconds = session.start(validate({**config, "runs": tmp})).step_seconds
    except AeqpropError as exc:
        record.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # recorded as the run's failure, as `aeqprop train` records it
        record.error = f"{type(exc).__name__}: {exc}"
    if os.path.exists(os.path.join(tmp, "aeqprop.db")):
        store = RunStore(tmp, create=False)
        try:
            tables = [r["name"] for r in store._query("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                columns = [c[1] for c in store.db.execute(f"PRAGMA table_info({table})")]
                if table == "runs":
                    record.tables["runs"] = store._query("SELECT * FROM runs")
                elif "run_id" in columns and table not in PROCESS_TABLES:
                    record.tables[table] = store._query(f"SELECT * FROM {table}")
        finally:
            store.close()


#: Tables of a scratch store that describe the worker's process, not the run (its lease): not copied.
PROCESS_TABLES = frozenset({"leases"})


#: Seconds an orphaned pool worker waits for its run in flight to stop before it exits regardless.
ORPHAN_GRACE = 10.0

#: Set in a pool worker whose sweep is gone.
_orphaned = threading.Event()
#: The scratch folders of this process's jobs in flight (one in a pool worker), and the lock under
#: which a job makes its folder and the watcher marks the worker orphaned.
_scratch: set[str] = set()
_scratch_lock = threading.Lock()


def _remove_scratch() -> None:
    """Remove every scratch folder in flight (a worker about to end)."""
    for folder in list(_scratch):
        shutil.rmtree(folder, ignore_errors=True)


def _end_worker(signum: int, frame: object) -> None:
    """SIGTERM outside a run (idle, or a job before its run's own handler is in place): the job's
    scratch folder is removed, then the worker ends as SIGTERM ends it by default."""
    import signal

    _remove_scratch()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _start_worker() -> None:
    """A pool worker leaves Ctrl+C to the process that started the sweep (a run in flight still
    stops at its next step, through the run's own handler), and does not outlive that process: a
    watcher thread sees the worker orphaned (the sweep killed, even by SIGKILL, which it cannot
    catch), sends the worker SIGTERM (a run in flight stops at its next step and removes its
    scratch folder; an idle worker, or a job not yet training, removes it and ends) and no new job
    starts. If the worker is still there ORPHAN_GRACE s later, it removes the folder and exits."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_worker)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        with _scratch_lock:
            _orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)
        end = time.monotonic() + ORPHAN_GRACE
        while _scratch and time.monotonic() < end:  # the run in flight stopping at its next step
            time.sleep(0.05)
        _remove_scratch()
        os._exit(1)

    threading.Thread(target=watch, name="aeqprop-orphan-watch", daemon=True).start()


class LocalPool(Executor):
    """A process pool on this machine (``workers`` processes; default: the cores this process may
    use). Workers start by spawning, so no thread of the caller is forked."""

    def __init__(self, workers: int | None = None):
        import multiprocessing

        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
        )

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        """Stop at once: cancel what has not started and kill the worker processes."""
        processes = dict(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            if process.is_alive():
                process.kill()
        for process in processes.values():
            process.join(timeout=5)


@dataclass
class SweepReport:
    """What a sweep run did: runs recorded (by status), jobs resubmitted after a lost worker,
    whether Ctrl+C stopped it, and seconds from the first submission to the last record."""

    recorded: dict[str, int] = field(default_factory=dict)
    resubmitted: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    run_ids: list[int] = field(default_factory=list)


def run_jobs(
    store: RunStore,
    todo: list[dict[str, Any]],
    make_executor: Callable[[], Executor],
    settings: SweepSettings = SweepSettings(),
    on_record: Callable[[dict, int, RunRecord], None] | None = None,
) -> SweepReport:
    """Run ``todo`` (rows of ``sweep_jobs``: id, config) on executors from ``make_executor`` (a new one
    when a process pool breaks) and record each run as it ends. Returns a SweepReport; Ctrl+C returns
    one with ``interrupted`` set after abandoning the runs in flight."""
    report = SweepReport()
    t0 = time.perf_counter()
    executor = make_executor()
    stopped = False  # the executor was stopped at once (Ctrl+C, a failing store): no orderly shutdown
    pending: dict[Future, tuple[dict, Executor]] = {}
    lost: dict[int, int] = {}

    def submit(job: dict) -> None:
        pending[executor.submit(run_job, job["config"], settings.blas_threads)] = (job, executor)

    def record(job: dict, rec: RunRecord) -> None:
        run_id = record_run(store, job["id"], job["config"], rec)
        report.recorded[rec.status] = report.recorded.get(rec.status, 0) + 1
        report.run_ids.append(run_id)
        if on_record is not None:
            on_record(job, run_id, rec)

    try:
        for job in todo:
            submit(job)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                job, owner = pending.pop(future)
                try:
                    rec = future.result()
                    why = "came back interrupted" if rec.status == "interrupted" else None
                except (BrokenExecutor, CancelledError) as exc:
                    rec, why = None, f"its worker was lost ({type(exc).__name__})"
                    if owner is executor and isinstance(exc, BrokenExecutor):
                        _stop(executor)
                        executor = make_executor()
                except Exception as exc:  # e.g. Dask's KilledWorker, a worker that cannot import aeqprop
                    rec, why = None, f"its worker failed ({type(exc).__name__}: {exc})"
                if why is None:
                    record(job, rec)
                    continue
                lost[job["id"]] = lost.get(job["id"], 0) + 1
                if lost[job["id"]] <= settings.retries:
                    report.resubmitted += 1
                    submit(job)
                else:
                    message = f"lost after {settings.retries} retries: {why}"
                    record(job, rec if rec is not None else RunRecord(error=message))
    except KeyboardInterrupt:
        report.interrupted = True
        for future in pending:
            future.cancel()
        _stop(executor)
        stopped = True
    except BaseException:  # the store failed under us: leave nothing running
        _stop(executor)
        stopped = True
        raise
    finally:
        if not stopped:
            executor.shutdown(wait=True)
        report.seconds = time.perf_counter() - t0
    return report


def _stop(executor: Executor) -> None:
    """Stop an executor at once: its ``terminate()`` where it has one (kills a pool's processes)."""
    stop = getattr(executor, "terminate", None)
    if stop is not None:
        stop()
    else:
        executor.shutdown(wait=False, cancel_futures=True)


def check_names(sweep: Sweep) -> None:
    """Every backend and protocol a sweep names exists here, and each protocol takes its options
    (protocols are built once each, cheaply; workers need the same installation)."""
    import json

    from aeqprop import registry
    from aeqprop.parts import build_with

    for name in sorted({j.config["substrate"]["backend"] or "instrument" for j in sweep.jobs}):
        registry.load("backends", name)
    protocols = {
        (j.config["protocol"]["name"], json.dumps(j.config["protocol"]["options"], sort_keys=True)): j
        for j in sweep.jobs
    }
    for (name, _), job in sorted(protocols.items()):
        try:
            build_with(
                registry.load("protocols", name),
                job.config["protocol"]["options"],
                {"seed": job.seed},
                "protocol.options",
            )
        except AeqpropError as exc:
            raise type(exc)(f"sweep point {job.label!r}: {exc}") from None


def _progress_runs(
    store: RunStore,
    todo: list[dict[str, Any]],
    make_executor: MakeExecutor,
    settings: SweepSettings,
    progress: bool,
    title: str,
    on_record: Callable[[dict[str, Any], int, RunRecord], None] | None = None,
) -> SweepReport:
    if not progress:
        return run_jobs(store, todo, make_executor, settings, on_record=on_record)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(title, total=len(todo))

        def advance(job: dict[str, Any], run_id: int, rec: RunRecord) -> None:
            bar.update(task, advance=1, description=f"{title} (last: run {run_id}, {rec.status})")
            if on_record is not None:
                on_record(job, run_id, rec)

        return run_jobs(store, todo, make_executor, settings, on_record=advance)


def check_instruments(configs: list[dict], one_at_a_time: bool) -> None:
    """Runs on instruments (``substrate.wiring``) share one bench: they run one at a time, here."""
    if not one_at_a_time and any(c["substrate"].get("wiring") for c in configs):
        raise ConfigurationError(
            "this sweep trains instruments (substrate.wiring), one bench that runs cannot "
            "share; run it with --workers 1 and without --scheduler or --cluster"
        )


def start_sweep(
    sweep: Sweep,
    make_executor: MakeExecutor,
    settings: SweepSettings = SweepSettings(),
    progress: bool = False,
    on_created: Callable[[int], None] | None = None,
    one_at_a_time: bool = False,
    on_record: Callable[[dict, int, RunRecord], None] | None = None,
) -> tuple[int, SweepReport]:
    """Record a new sweep (validated and expanded by ``aeqprop.sweep``) and run all its jobs.
    ``one_at_a_time``: the executor runs one job at a time on this machine (required for instruments);
    ``on_record(job, run_id, record)``: called as each run is recorded."""
    from aeqprop.sweep_store import create_sweep, jobs, open_store

    check_names(sweep)
    check_instruments([j.config for j in sweep.jobs], one_at_a_time)
    store = open_store(sweep.runs)
    try:
        sweep_id = create_sweep(store, sweep)
        if on_created is not None:
            on_created(sweep_id)
        todo = jobs(store, sweep_id)
        return sweep_id, _progress_runs(
            store, todo, make_executor, settings, progress, f"sweep {sweep_id}", on_record=on_record
        )
    finally:
        store.close()


def resume_sweep(
    runs: str,
    sweep_id: int | str,
    make_executor: MakeExecutor,
    settings: SweepSettings = SweepSettings(),
    progress: bool = False,
    one_at_a_time: bool = False,
) -> tuple[int, int, SweepReport]:
    """Run the jobs of a recorded sweep that have no completed run (never run, failed, lost, stopped).
    Returns (sweep id, jobs run, report)."""
    from aeqprop.sweep_store import jobs, open_store, sweep_row

    store = open_store(runs, create=False)
    try:
        sid = sweep_row(store, sweep_id)["id"]
        todo = [j for j in jobs(store, sid) if j["status"] != "completed"]
        check_instruments([j["config"] for j in todo], one_at_a_time)
        if not todo:
            return sid, 0, SweepReport()
        return sid, len(todo), _progress_runs(store, todo, make_executor, settings, progress, f"sweep {sid}")
    finally:
        store.close()
