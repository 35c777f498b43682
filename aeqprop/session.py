"""A run from its config to its recorded end: build, train, checkpoint, resume, close.

Order of work: the config is validated (``aeqprop.config``), names are looked
up in the registry, the data is loaded and the substrate built; only then is
the run store opened and the run recorded. Every exit path closes the
substrate (recording a ``closed`` event) and records the status: completed,
failed (with the error) or interrupted.

Ctrl+C (SIGINT), SIGTERM or SIGHUP once: the run stops after the current step, writes a
checkpoint and is marked interrupted. Twice: it stops at once; each store
write is one transaction, so the store stays consistent and the run resumes
from its last checkpoint.
"""

from __future__ import annotations

import inspect
import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aeqprop.config import RunConfig, validate
from aeqprop.errors import AeqpropError, ConfigurationError
from aeqprop.store import RunStore, StoreError
from aeqprop.trainer import Position, Trainer, TrainResult

#: Where the nonideal wrapper lives, found by name like the registry's built-ins.
NONIDEAL = "sim_backends.nonideal:NonidealSubstrate"


def build_with(factory, options: dict, injected: dict, what: str):
    """Call ``factory`` with the user's ``options`` and whichever ``injected`` ones it takes.

    An option the factory does not take is refused with the valid names
    (``what`` names the config table, e.g. ``protocol.options``).
    """
    params = inspect.signature(factory).parameters
    injected = {k: v for k, v in injected.items() if k in params}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ConfigurationError(f"{what}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(params)}")
    try:
        return factory(**{**injected, **options})
    except TypeError as exc:  # a factory taking **options passes them on; say which table they came from
        raise ConfigurationError(f"{what}: {exc}") from None


class EventSink:
    """The ``on_event(kind, message)`` callback handed to a substrate (instrument faults, retries,
    reconnects). Events raised before the run exists are kept and written once it is recorded."""

    def __init__(self):
        self.pending: list[tuple[str, str]] = []
        self.store: RunStore | None = None
        self.run_id: int | None = None

    def __call__(self, kind: str, message: str) -> None:
        if self.store is None:
            self.pending.append((kind, message))
        else:
            self.store.event(self.run_id, kind, message)

    def attach(self, store: RunStore, run_id: int) -> None:
        self.store, self.run_id = store, run_id
        for kind, message in self.pending:
            store.event(run_id, kind, message)
        self.pending.clear()


@dataclass
class Built:
    config: RunConfig
    data: Any
    protocol: Any
    substrate: Any
    hook: Any = None
    names: dict = field(default_factory=dict)
    trainer: Any = None
    events: EventSink = field(default_factory=EventSink)


def build(config: RunConfig) -> Built:
    """Data, protocol and substrate of a run; unknown names fail before anything is opened."""
    from aeqprop import registry
    from aeqprop.data import load_dataset

    backend = config.substrate.backend or "instrument"
    make_substrate = registry.load("backends", backend)
    make_protocol = registry.load("protocols", config.protocol.name)
    ds = config.dataset
    data = load_dataset(ds.name, test_fraction=ds.test_fraction, seed=config.data_seed, target_column=ds.target_column)
    protocol = build_with(make_protocol, config.protocol.options, {"seed": config.seed}, "protocol.options")
    options = dict(config.substrate.options)
    injected: dict[str, Any] = {"seed": config.seed}
    hidden = options.pop("hidden", None)
    if "layers" not in options and hidden is not None:
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        injected["layers"] = (data.n_features, *hidden, data.n_classes)
    if config.substrate.wiring is not None:
        injected["wiring"] = config.substrate.wiring
    events = EventSink()
    injected["on_event"] = events  # instruments report faults and retries
    substrate = build_with(make_substrate, options, injected, "substrate.options")
    if config.nonideal is not None:
        try:
            substrate = registry._import(NONIDEAL)(substrate, config.nonideal)
        except AeqpropError:
            substrate.close()
            raise
    names = {"dataset": ds.name, "backend": backend, "protocol": config.protocol.name}
    built = Built(config, data, protocol, substrate, names=names, events=events)
    try:
        built.hook = schedule_hook(config, protocol, substrate)
        built.trainer = Trainer(substrate, protocol, data, config.schedule.epochs, config.schedule.batch_size,
                                seed=config.seed, before_step=built.hook, eval_every=config.evaluation.every,
                                fidelity_every=config.evaluation.fidelity_every,
                                checkpoint_every=config.checkpoint.every)
    except BaseException:
        substrate.close()
        raise
    return built


def schedule_hook(config: RunConfig, protocol, substrate):
    """The ``before_step`` hook of the beta / lr / eps schedules, or None when the config has none."""
    tables = {k: getattr(config.schedule, k) for k in ("beta", "lr", "eps") if getattr(config.schedule, k)}
    if not tables:
        return None
    try:
        from aeqprop import schedules
    except ImportError:
        raise ConfigurationError(
            f"schedule.{next(iter(tables))}: schedules need aeqprop.schedules, which this version lacks"
        ) from None
    return schedules.hook(protocol, substrate, **tables)


#: The signals a process gets in practice, each handled as Ctrl+C: stop at the next safe point.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopFlag:
    """Handler of SIGINT, SIGTERM and SIGHUP: the first asks for a stop at the next safe point
    (a checkpoint is written, the substrate closed, the run marked interrupted); a second stops at once."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    def __enter__(self):
        self._previous = {}
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no handler
            pass
        return self

    def __exit__(self, *exc):
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


def execute(built: Built, store: RunStore | None, run_id: int | None, checkpoint: dict | None = None,
            progress: bool = False) -> Outcome:
    """Train a built run, recording into ``store`` (None: no store, for the overhead benchmark)."""
    import time

    sub = built.substrate
    outcome = Outcome(run_id or 0, "failed", TrainResult())
    status, error = "failed", None
    knobbed = "aeqprop" in sub.info.capabilities
    clock = {"store": 0.0, "last": None, "steps": 0.0}
    try:
        trainer = built.trainer
        start = None
        if checkpoint is not None:
            sub.set_parameters(checkpoint["parameters"])
            if checkpoint["knobs"] is not None:
                sub.set_knobs(checkpoint["knobs"])
            trainer.set_random_states(checkpoint["random"])
            start = Position(checkpoint["epoch"], checkpoint["step"], checkpoint["global_step"],
                             checkpoint["order"], tuple(checkpoint["sums"]))
        spe = trainer.steps_per_epoch()
        calibrate(built, store, run_id, None if checkpoint is None else checkpoint["global_step"])

        def timed(fn):
            def wrapper(*args):
                t0 = time.perf_counter()
                fn(*args)
                clock["store"] += time.perf_counter() - t0
            return wrapper if store is not None else (lambda *a: None)

        @timed
        def on_step(epoch, k, report):
            store.log_step(run_id, (epoch - 1) * spe + k + 1, epoch, report.loss, report.sweeps, report.seconds,
                           report.extra)

        @timed
        def on_eval(epoch, g, loss, acc):
            store.log_eval(run_id, epoch, g, loss, acc)

        @timed
        def on_epoch(record):
            store.log_epoch(run_id, record, norm(sub.parameters()))

        @timed
        def on_checkpoint(position):
            store.save_checkpoint(run_id, position, sub.parameters(), sub.knobs() if knobbed else None,
                                  trainer.random_states())

        t0 = time.perf_counter()
        with StopFlag() as stop:
            outcome.result = trainer.run(progress=progress, on_step=on_step, on_epoch=on_epoch, on_eval=on_eval,
                                         on_checkpoint=on_checkpoint, should_stop=stop, start=start)
        outcome.step_seconds = time.perf_counter() - t0 - clock["store"]
        status = "interrupted" if outcome.result.stopped else "completed"
    except KeyboardInterrupt:
        status, error = "interrupted", "stopped at once by a second Ctrl+C"
        raise
    except AeqpropError as exc:
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
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
    if not callable(getattr(protocol, "calibrate", None)):
        return
    resumed = resumed_at is not None and store is not None
    found = [e for e in store.metrics(run_id, "events") if e["kind"] == "calibration"] if resumed else []
    if found:
        protocol.apply_calibration(sub, json.loads(found[-1]["message"].split(CALIBRATION_JSON, 1)[1]))
    elif not resumed:
        width = min(built.config.schedule.batch_size, sub.info.max_batch or built.config.schedule.batch_size)
        record = protocol.calibrate(sub, built.data.x_train[:width], built.data.y_train[:width])
        if record is not None and store is not None:
            store.event(run_id, "calibration", record["summary"] + CALIBRATION_JSON + json.dumps(record))
    if resumed and callable(getattr(protocol, "resume_after", None)):
        last = [r for r in store.metrics(run_id, "step_metrics") if r["step"] == resumed_at and r["extra"]]
        if last:
            protocol.resume_after(json.loads(last[0]["extra"]))
    if getattr(built.hook, "eps0", None) is not None and isinstance(getattr(sub, "eps", None), dict):
        built.hook.eps0 = dict(sub.eps)  # an eps schedule scales the calibrated eps


def _finish(built: Built, store: RunStore | None, run_id: int | None, status: str, error: str | None) -> None:
    """Close the substrate and record it and the status, whatever happened before."""
    close_error = None
    try:
        built.substrate.close()
    except Exception as exc:  # recorded, and the status still written
        close_error = f"{type(exc).__name__}: {exc}"
    if store is None:
        return
    if store.db.in_transaction:  # a second Ctrl+C inside a write: SQLite rolls it back
        store.db.execute("ROLLBACK")
    if status != "failed" or error is None:
        store.flush()
    else:
        store._steps = []
    if error is not None:
        store.event(run_id, "fault" if status == "failed" else "warning", error)
    store.event(run_id, "closed", f"substrate closed ({status})" + (f"; close failed: {close_error}" if close_error else ""))
    store.set_status(run_id, status, error)


def start(config: RunConfig, progress: bool = False, on_created=None) -> Outcome:
    """Build and train a new run recorded in ``config.runs``."""
    built = build(config)
    try:
        store = RunStore(config.runs)
        run_id = store.create_run(config.to_dict(), config.seed, **built.names)
        built.events.attach(store, run_id)
    except BaseException:
        built.substrate.close()
        raise
    if on_created is not None:
        on_created(run_id)
    return execute(built, store, run_id, progress=progress)


def resume(runs: str, run_id: int | str, progress: bool = False) -> Outcome:
    """Continue a run from its last checkpoint (from its start if it has none)."""
    store = RunStore(runs, create=False)
    row = store.run(run_id)
    if row["status"] == "completed":
        raise StoreError(f"run {row['id']} already completed; nothing to resume")
    config = validate(row["config"])
    checkpoint = store.load_checkpoint(row["id"])
    built = build(config)
    done = 0 if checkpoint is None else checkpoint["global_step"]
    try:
        store.set_status(row["id"], "running")
        store.event(row["id"], "resumed", f"resumed after step {done}", step=done)
        built.events.attach(store, row["id"])
    except BaseException:
        built.substrate.close()
        raise
    return execute(built, store, row["id"], checkpoint, progress=progress)
