"""A run from its config to its recorded end: build, train, checkpoint, resume, close.

Order of work: the config is validated (``aeqprop.config``), names are looked
up in the registry, the data is loaded and the substrate built (``aeqprop.parts``); only then is
the run store opened and the run recorded. Every exit path closes the
substrate (recording a ``closed`` event) and records the status: completed,
failed (with the error) or interrupted.

Ctrl+C (SIGINT), SIGTERM or SIGHUP once: the run stops after the current step, writes a
checkpoint and is marked interrupted. Twice: it stops at once; each store
write is one transaction, so the store stays consistent and the run resumes
from its last checkpoint.

What a checkpoint saves of the substrate, and how it is put back, is in ``aeqprop.snapshot``.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, ParamSpec

import numpy as np

from aeqprop.checks import health
from aeqprop.config import RunConfig, validate
from aeqprop.errors import AeqpropError
from aeqprop.parts import Built, build
from aeqprop.snapshot import (  # noqa: F401  (Arrays, DeviceStateSubstrate, Snapshot re-exported)
    Arrays,
    DeviceStateSubstrate,
    Snapshot,
    check_restorable,
    restore,
    snapshot,
)
from aeqprop.store import RunStore, StoreError
from aeqprop.substrate import CalibratingProtocol, ResumableProtocol, StepReport
from aeqprop.trainer import EpochRecord, Position, TrainResult

P = ParamSpec("P")


#: The signals a process gets in practice, each handled as Ctrl+C: stop at the next safe point.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopFlag:
    """Handler of SIGINT, SIGTERM and SIGHUP: the first asks for a stop at the next safe point
    (a checkpoint is written, the substrate closed, the run marked interrupted); a second stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    def __enter__(self) -> StopFlag:
        self._previous = {}
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handler
            pass
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        return False


def norm(arrays: dict[str, np.ndarray]) -> float:
    """Euclidean norm over all tensors (einsum: np.vdot goes through BLAS threads, 1000x slower under load)."""
    return float(np.sqrt(sum(float(np.einsum("i,i->", v.ravel(), v.ravel())) for v in arrays.values())))


@dataclass
class Outcome:
    run_id: int
    status: str
    result: TrainResult
    store_seconds: float = 0.0  # time spent writing to the store (the benchmark's numerator)
    step_seconds: float = 0.0  # time spent in training steps
    warnings: list[str] = field(default_factory=list)  # what the user must hear although the run completed


def execute(
    built: Built,
    store: RunStore | None,
    run_id: int | None,
    checkpoint: dict[str, Any] | None = None,
    progress: bool = False,
) -> Outcome:
    """Train a built run, recording into ``store`` (None: no store, for the overhead benchmark)."""
    import time

    sub = built.substrate
    outcome = Outcome(run_id or 0, "failed", TrainResult())
    status, error = "failed", None
    knobbed = "aeqprop" in sub.info.capabilities
    clock = {"store": 0.0, "steps": 0.0}
    try:
        trainer = built.trainer
        assert trainer is not None, "build() sets the trainer"
        start = None
        if checkpoint is not None:
            restore(sub, checkpoint["parameters"], checkpoint["knobs"])
            trainer.set_random_states(checkpoint["random"])
            start = Position(
                checkpoint["epoch"],
                checkpoint["step"],
                checkpoint["global_step"],
                checkpoint["order"],
                tuple(checkpoint["sums"]),
            )
        spe = trainer.steps_per_epoch()
        calibrate(built, store, run_id, None if checkpoint is None else checkpoint["global_step"])

        def timed(fn: Callable[P, None]) -> Callable[P, None]:
            """``fn`` with its time added to the store's clock; without a store, nothing at all."""

            def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
                t0 = time.perf_counter()
                fn(*args, **kwargs)
                clock["store"] += time.perf_counter() - t0

            def skip(*args: P.args, **kwargs: P.kwargs) -> None:
                pass

            return wrapper if store is not None and run_id is not None else skip

        @timed
        def on_step(epoch: int, k: int, report: StepReport) -> None:
            if store is not None and run_id is not None:  # else timed skips it
                step = (epoch - 1) * spe + k + 1
                store.log_step(run_id, step, epoch, report.loss, report.sweeps, report.seconds, report.extra)

        @timed
        def on_eval(epoch: int, g: int, loss: float, acc: float) -> None:
            if store is not None and run_id is not None:
                store.log_eval(run_id, epoch, g, loss, acc)

        @timed
        def on_epoch(record: EpochRecord) -> None:
            if store is not None and run_id is not None:
                store.log_epoch(run_id, record, norm(snapshot(sub, knobbed)["parameters"]))

        @timed
        def on_checkpoint(position: Position) -> None:
            if store is not None and run_id is not None:
                state = snapshot(sub, knobbed)
                store.save_checkpoint(run_id, position, state["parameters"], state["knobs"], trainer.random_states())

        t0 = time.perf_counter()
        # overflow and NaN end the run through the trainer's non-finite loss check, in one line
        with StopFlag() as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            outcome.result = trainer.run(
                progress=progress,
                on_step=on_step,
                on_epoch=on_epoch,
                on_eval=on_eval,
                on_checkpoint=on_checkpoint,
                should_stop=stop,
                start=start,
            )
        outcome.step_seconds = time.perf_counter() - t0 - clock["store"]
        status = "interrupted" if outcome.result.stopped else "completed"
        if status == "completed" and outcome.result.history:
            outcome.warnings = health(outcome.result, built.data)
            for message in outcome.warnings:
                if store is not None and run_id is not None:
                    store.event(run_id, "warning", message)
    except KeyboardInterrupt as exc:
        status, error = "interrupted", "stopped at once by a second Ctrl+C"
        # for the CLI's resume hint
        exc.run_id, exc.runs = run_id, None if store is None else str(store.folder)  # type: ignore[attr-defined]
        raise
    except AeqpropError as exc:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise
    except BaseException as exc:
        status, error = stop_status(exc), f"{type(exc).__name__}: {exc}"
        raise
    finally:
        outcome.status = status
        outcome.store_seconds = clock["store"]
        _finish(built, store, run_id, status, error)
    return outcome


#: How a calibration record is kept in an event message: the summary line, then the JSON record.
CALIBRATION_JSON = "\njson: "


def calibrate(built: Built, store: RunStore | None, run_id: int | None, resumed_at: int | None) -> None:
    """A protocol that calibrates (feedback Aeqprop) measures the substrate once at the start of a run,
    on the first batch of the training split; the record goes into the run's events (kind
    ``calibration``). A run resumed after step ``resumed_at`` puts the recorded calibration back
    instead of measuring again, and hands the protocol that step's extras (what its loop carries)."""
    import json

    protocol, sub = built.protocol, built.substrate
    if not isinstance(protocol, CalibratingProtocol):
        return
    resumed = resumed_at is not None and store is not None and run_id is not None
    found = []
    if resumed and store is not None and run_id is not None:
        found = [e for e in store.metrics(run_id, "events") if e["kind"] == "calibration"]
    if found:
        protocol.apply_calibration(sub, json.loads(found[-1]["message"].split(CALIBRATION_JSON, 1)[1]))
    elif not resumed:
        width = min(built.config.schedule.batch_size, sub.info.max_batch or built.config.schedule.batch_size)
        record = protocol.calibrate(sub, built.data.x_train[:width], built.data.y_train[:width])
        if record is not None and store is not None and run_id is not None:
            store.event(run_id, "calibration", record["summary"] + CALIBRATION_JSON + json.dumps(record))
    if resumed and store is not None and run_id is not None and isinstance(protocol, ResumableProtocol):
        last = [r for r in store.metrics(run_id, "step_metrics") if r["step"] == resumed_at and r["extra"]]
        if last:
            protocol.resume_after(json.loads(last[0]["extra"]))
    eps = getattr(sub, "eps", None)
    if built.hook is not None and getattr(built.hook, "eps0", None) is not None and isinstance(eps, dict):
        built.hook.eps0 = dict(eps)  # an eps schedule scales the calibrated eps


def _finish(built: Built, store: RunStore | None, run_id: int | None, status: str, error: str | None) -> None:
    """Close the substrate and record it and the status, whatever happened before.

    If the store cannot be written (disk full, damaged), the run's original error goes on;
    the run stays unowned once this process ends, so it resumes from its last checkpoint.
    """
    close_error = None
    try:
        built.substrate.close()
    except Exception as exc:  # recorded, and the status still written
        close_error = f"{type(exc).__name__}: {exc}"
    if store is None or run_id not in store._tokens:  # no store, or another process took the run over
        return
    try:
        if store.db.in_transaction:  # a second Ctrl+C inside a write: SQLite rolls it back
            store.db.execute("ROLLBACK")
        if status != "failed" or error is None:
            store.flush()
        else:
            store._steps = []
        if error is not None:
            store.event(run_id, "fault" if status == "failed" else "warning", error)
        store.event(
            run_id, "closed", f"substrate closed ({status})" + (f"; close failed: {close_error}" if close_error else "")
        )
        store.set_status(run_id, status, error)
        store.release(run_id)
    except (StoreError, sqlite3.Error) as exc:
        if error is None:  # nothing else went wrong: the store's failure is the error
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{store.path}: recording the end of run {run_id} failed ({exc})") from None


def start(config: RunConfig, progress: bool = False, on_created: Callable[[int], None] | None = None) -> Outcome:
    """Build and train a new run recorded in ``config.runs``, with the digests of its input files."""
    from aeqprop import inputs

    files = inputs.record(config.to_dict())
    built = build(config)
    try:
        store = RunStore(config.runs)
    except BaseException:
        built.substrate.close()
        raise
    with store:
        try:
            run_id = store.create_run(config.to_dict(), config.seed, inputs=files, **built.names)
            built.events.attach(store, run_id)
        except BaseException:
            built.substrate.close()
            raise
        if on_created is not None:
            try:
                on_created(run_id)
            except BaseException as exc:  # e.g. its line cannot be printed: stdout's reader has gone
                _finish(built, store, run_id, stop_status(exc), f"{type(exc).__name__}: {exc}")
                raise
        return execute(built, store, run_id, progress=progress)


def stop_status(exc: BaseException) -> str:
    """The status of a run that ``exc`` ends: Ctrl+C and a closed stdout interrupt it (it resumes),
    anything else fails it."""
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, BrokenPipeError)) else "failed"


def version_changes(recorded: dict) -> list[str]:
    """``numpy 1.26.4 -> 2.0.1`` for each package whose version differs from the one the run started with."""
    from aeqprop.store import versions

    now = versions()
    return [
        f"{k} {recorded.get(k, 'absent')} -> {now.get(k, 'absent')}"
        for k in sorted(set(recorded) | set(now))
        if recorded.get(k) != now.get(k)
    ]


def resume(
    runs: str, run_id: int | str, progress: bool = False, on_warning: Callable[[str], None] | None = None
) -> Outcome:
    """Continue a run from its last checkpoint (from its start if it has none).

    Refused while another process owns the run, or when an input file changed since the run started;
    inputs are read from the absolute paths recorded at the start. Package versions that differ from
    the start's are a warning (``on_warning(message)`` and an event), not a refusal.
    """
    with RunStore(runs, readonly=True) as store:
        return _resume(store, run_id, progress, on_warning)


def _resume(store: RunStore, run_id: int | str, progress: bool, on_warning: Callable[[str], None] | None) -> Outcome:
    from aeqprop import inputs, ownership

    row = store.run(run_id)
    rid = row["id"]
    if row["status"] == "completed":
        raise StoreError(f"run {rid} already completed; nothing to resume")
    # what the resume reads is read read-only before its first write (the lease): a store damaged where
    # the open's checks do not look (a row's text, a checkpoint's bytes) is refused with nothing written
    store.load_checkpoint(rid)
    store.inputs(rid)
    store.writable()
    previous = store.acquire(rid)
    try:
        config = validate(inputs.check(store.inputs(rid), row["config"]))
        checkpoint = store.load_checkpoint(rid)
        built = build(config)
    except BaseException:
        store.release(rid)
        raise
    done = 0 if checkpoint is None else checkpoint["global_step"]
    try:
        check_restorable(built.substrate, checkpoint, row["status"])
    except BaseException:
        built.substrate.close()
        store.release(rid)
        raise
    warnings = []
    if previous is not None and row["status"] == "running":
        warnings.append(f"run {rid} was left running by {ownership.describe(previous)}, which is gone; taking it over")
    changes = version_changes(row["versions"])
    if changes:
        warnings.append(
            f"package versions differ from the run's start ({', '.join(changes)}); "
            "the resumed part may not match bitwise"
        )
    try:
        store.set_status(rid, "running")
        store.event(rid, "resumed", f"resumed after step {done}", step=done)
        for message in warnings:
            store.event(rid, "warning", message, step=done)
            if on_warning is not None:
                on_warning(message)
        built.events.attach(store, rid)
    except BaseException:
        built.substrate.close()
        store.release(rid)
        raise
    return execute(built, store, rid, checkpoint, progress=progress)
