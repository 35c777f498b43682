"""The training loop: epochs, shuffled minibatches, evaluation, checkpoints, progress.

The trainer knows nothing of the substrate beyond the contract and nothing of
the protocol beyond ``step``. It checks what it can before the first step:
capabilities, batch width, data shapes.

Its whole state between two steps is a :class:`Position` (epoch, next step,
the epoch's permutation, running sums) plus the substrate's parameters and
knobs and the random generators of the trainer, protocol and substrate
(:func:`random_states`). Restoring all of them and calling ``run(start=...)``
continues bitwise as if the run had never stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from aeqprop import augment as augmentation
from aeqprop.data import Dataset
from aeqprop.errors import ConfigurationError
from aeqprop.oracle import fidelity, flatten
from aeqprop.reads import ReadCounter
from aeqprop.substrate import OracleSubstrate, StepReport, Substrate, TrainingProtocol, require

#: ``before_step(epoch, step_in_epoch, global_step, total_steps)``
BeforeStep = Callable[[int, int, int, int], None]
#: ``on_step(epoch, step_in_epoch, report)``
StepHook = Callable[[int, int, StepReport], None]
#: ``on_eval(epoch, global_step, loss, accuracy)``
EvalHook = Callable[[int, int, float, float], None]


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float
    sweeps_per_step: float
    val_loss: float = float("nan")  # on the validation split, when the data has one
    val_accuracy: float = float("nan")
    unsettled_phases: int = 0  # relaxations that ended at their sweep cap (StepReport.unsettled)


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)
    stopped: bool = False  # True when should_stop() ended the run early (after a checkpoint)

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]

    @property
    def best_test_accuracy(self) -> float:
        return max(r.test_accuracy for r in self.history)


@dataclass
class Position:
    """Where a run is in its data order: the next step is ``step`` of ``epoch`` (1-based epochs).

    ``order`` is the epoch's permutation of the training split; ``sums`` the
    running (loss, correct, sweeps, unsettled phases) of the epoch so far (a checkpoint
    written before the fourth was counted holds three); ``global_step`` the steps done
    since the start of the run.
    """

    epoch: int
    step: int
    global_step: int
    order: np.ndarray
    sums: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)


def _generators(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, np.random.Generator]:
    """Every numpy Generator held by ``obj``: attributes, dict values, and wrapped objects (``inner``)."""
    found: dict[str, np.random.Generator] = {}
    if depth > 3 or not hasattr(obj, "__dict__"):
        return found
    for name, value in vars(obj).items():
        if isinstance(value, np.random.Generator):
            found[prefix + name] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, np.random.Generator):
                    found[f"{prefix}{name}[{key}]"] = item
        elif name in ("inner", "substrate", "feedback") and value is not obj:
            found.update(_generators(value, f"{prefix}{name}.", depth + 1))
    return found


def random_states(obj: Any) -> dict[str, dict]:
    """The bit-generator states of every numpy Generator that ``obj`` holds, by attribute path."""
    return {k: dict(g.bit_generator.state) for k, g in _generators(obj).items()}


def set_random_states(obj: Any, states: dict[str, dict]) -> None:
    """Restore states saved by :func:`random_states`; a generator missing on either side is an error."""
    gens = _generators(obj)
    if set(gens) != set(states):
        raise ConfigurationError(
            f"the checkpoint holds random generators {sorted(states)}, the run {sorted(gens)}; "
            "was the configuration changed?"
        )
    for k, g in gens.items():
        g.bit_generator.state = states[k]


def evaluate(substrate: Substrate, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean squared-cost loss, accuracy) of the free equilibrium, in batches of the substrate's
    ``eval_batch``, at most ``max_batch``."""
    info = substrate.info
    width = min((w for w in (info.eval_batch, info.max_batch, len(x)) if w), default=1)
    n_classes = substrate.info.n_outputs
    loss = correct = 0.0
    substrate.nudge(0.0)
    for i in range(0, len(x), width):
        xb, lb = x[i : i + width], labels[i : i + width]
        substrate.clamp(xb)
        substrate.nudge(0.0)
        substrate.relax()
        o = substrate.outputs()
        y = np.zeros((len(lb), n_classes))
        y[np.arange(len(lb)), lb] = 1.0
        loss += 0.5 * float(np.sum((o - y) ** 2))
        correct += float(np.sum(np.argmax(o, axis=1) == lb))
    return loss / len(x), correct / len(x)


class Hooks(TypedDict, total=False):
    """What :meth:`Trainer.run_epoch` calls besides ``on_step``: held-out evaluations, checkpoints, stop requests."""

    on_eval: EvalHook
    on_checkpoint: Callable[[Position], None]
    should_stop: Callable[[], bool]


class Trainer:
    """Runs ``protocol.step`` over shuffled minibatches for a number of epochs.

    Example: ``Trainer(substrate, Aeqprop(beta=1.0), data, epochs=12, batch_size=16, seed=0).run()``.

    ``before_step(epoch, step_in_epoch, global_step, total_steps)`` is called at
    the start of each step (schedules of beta, lr, eps recompute from it).
    Every ``eval_every`` steps (0: only at the end of each epoch) the held-out
    split is evaluated and ``on_eval(epoch, global_step, loss, accuracy)``
    called; every ``fidelity_every`` steps (0: never) the cosine between the step's
    update and the oracle gradient goes into the step report's extras as
    ``fidelity_cosine``; every ``checkpoint_every`` steps (0: at the end of each epoch),
    and when ``should_stop()`` turns true after a step,
    ``on_checkpoint(position)`` is called with the trainer's state at that point.
    Each step's report gets ``substrate_reads`` in its extras: the reads of theta and
    dE/dtheta the step made, counted on the substrate (:class:`aeqprop.reads.ReadCounter`).
    ``augment = "flip"`` mirrors each training image left-right with probability 1/2
    (:mod:`aeqprop.augment`; image data only).
    """

    def __init__(
        self,
        substrate: Substrate,
        protocol: TrainingProtocol,
        data: Dataset,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        before_step: BeforeStep | None = None,
        eval_every: int = 0,
        checkpoint_every: int = 0,
        fidelity_every: int = 0,
        augment: str = "none",
    ):
        if epochs < 1:
            raise ConfigurationError(f"epochs={epochs}: must be >= 1")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size={batch_size}: must be >= 1")
        if eval_every < 0 or checkpoint_every < 0 or fidelity_every < 0:
            raise ConfigurationError("eval_every, checkpoint_every and fidelity_every must be >= 0")
        self._oracle: OracleSubstrate | None = None  # for the gradient fidelity, when asked for
        if fidelity_every:
            if "oracle" not in substrate.info.capabilities or not isinstance(substrate, OracleSubstrate):
                raise ConfigurationError(
                    "gradient fidelity needs the oracle of a simulated substrate; set fidelity_every = 0"
                )
            self._oracle = substrate
        require(substrate, protocol.requires, f"protocol {protocol.name!r}")
        substrate.info.check_batch(batch_size)
        if data.n_features != substrate.info.n_inputs or data.n_classes != substrate.info.n_outputs:
            raise ConfigurationError(
                f"the data has {data.n_features} features and {data.n_classes} classes, the substrate "
                f"{substrate.info.n_inputs} inputs and {substrate.info.n_outputs} outputs"
            )
        self.substrate, self.protocol, self.data = substrate, protocol, data
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.before_step = before_step
        self.eval_every, self.checkpoint_every = int(eval_every), int(checkpoint_every)
        self.fidelity_every = int(fidelity_every)
        augmentation.check(augment, data.shape)
        self.augment = augment
        if augment != "none":  # its own generator: the shuffling order is the same with and without
            self.augment_rng = augmentation.generator(seed)

    def steps_per_epoch(self) -> int:
        return -(-len(self.data.x_train) // self.batch_size)

    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch()

    def random_states(self) -> dict[str, dict[str, Any]]:
        """Generator states of the trainer, protocol and substrate (for a checkpoint)."""
        return {
            "trainer": random_states(self),
            "protocol": random_states(self.protocol),
            "substrate": random_states(self.substrate),
        }

    def set_random_states(self, states: dict[str, dict[str, Any]]) -> None:
        set_random_states(self, states["trainer"])
        set_random_states(self.protocol, states["protocol"])
        set_random_states(self.substrate, states["substrate"])

    def run_epoch(
        self,
        epoch: int,
        on_step: StepHook | None = None,
        start: Position | None = None,
        hooks: Hooks | None = None,
        counter: ReadCounter | None = None,
    ) -> EpochRecord | None:
        """One epoch (from ``start`` if given); None if ``should_stop`` ended it early.
        ``counter``: an entered ReadCounter of the substrate, for each step's ``substrate_reads``."""
        data, sub = self.data, self.substrate
        hooks = hooks or {}
        if start is None:
            start = Position(epoch, 0, (epoch - 1) * self.steps_per_epoch(), self.rng.permutation(len(data.x_train)))
        order, k0 = start.order, start.step
        y_all = data.y_train
        t0 = time.perf_counter()
        loss, correct, sweeps, *rest = start.sums
        unsettled = rest[0] if rest else 0.0
        g = start.global_step
        n_steps, total = self.steps_per_epoch(), self.total_steps()
        should_stop = hooks.get("should_stop")
        for k in range(k0, n_steps):
            if self.before_step is not None:
                self.before_step(epoch, k, g, total)
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            xb = data.x_train[idx]
            if self.augment != "none":
                xb = augmentation.apply(self.augment, xb, data.shape, self.augment_rng)
            grad = None
            if self._oracle is not None and (g + 1) % self.fidelity_every == 0:
                # the oracle has no side effect on parameters or random state
                grad = self._oracle.true_gradient(xb, y_all[idx])
            before = counter.reads if counter is not None else 0
            report: StepReport = self.protocol.step(sub, xb, y_all[idx])
            if counter is not None and counter.counting:  # measured here, whatever the protocol reports
                report.extra["substrate_reads"] = float(counter.reads - before)
            if grad is not None:
                names = sorted(grad)
                report.extra["fidelity_cosine"] = fidelity(flatten(report.delta, names), -flatten(grad, names)).cosine
            if not math.isfinite(report.loss):
                raise ConfigurationError("the training loss became non-finite; lower the learning rate or eps")
            loss += report.loss * len(idx)
            correct += float(np.count_nonzero(np.argmax(report.outputs, axis=1) == data.labels_train[idx]))
            sweeps += sum(report.sweeps.values())
            if report.unsettled:
                unsettled += len(report.unsettled)
                report.extra["unsettled_phases"] = float(len(report.unsettled))
            g += 1
            if on_step is not None:
                on_step(epoch, k, report)
            if self.eval_every and g % self.eval_every == 0 and k + 1 < n_steps and "on_eval" in hooks:
                hooks["on_eval"](epoch, g, *evaluate(sub, data.x_test, data.labels_test))
            stop = should_stop is not None and should_stop()
            due = self.checkpoint_every and g % self.checkpoint_every == 0
            if (stop or due or k + 1 == n_steps) and "on_checkpoint" in hooks:
                hooks["on_checkpoint"](Position(epoch, k + 1, g, order, (loss, correct, sweeps, unsettled)))
            if stop:
                return None
        seconds = time.perf_counter() - t0
        test_loss, test_acc = evaluate(sub, data.x_test, data.labels_test)
        n = len(order)
        if "on_eval" in hooks:
            hooks["on_eval"](epoch, g, test_loss, test_acc)
        val = (float("nan"), float("nan"))
        if data.x_val is not None and data.labels_val is not None and len(data.x_val):
            val = evaluate(sub, data.x_val, data.labels_val)
        return EpochRecord(
            epoch, loss / n, correct / n, test_loss, test_acc, seconds, sweeps / n_steps, *val, int(unsettled)
        )

    def run(
        self,
        progress: bool = False,
        on_step: StepHook | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        on_eval: EvalHook | None = None,
        on_checkpoint: Callable[[Position], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        start: Position | None = None,
    ) -> TrainResult:
        """Train from the start, or from ``start`` (a Position restored with the run's state)."""
        hooks: Hooks = {}
        if on_checkpoint is not None:
            hooks["on_checkpoint"] = on_checkpoint
        if should_stop is not None:
            hooks["should_stop"] = should_stop
        result = TrainResult()
        first = 1 if start is None else start.epoch
        done = 0 if start is None else start.global_step
        bar = task = None
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            columns = (
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  train {task.fields[train]:.1%}  test {task.fields[test]}"),
                TimeRemainingColumn(),
            )
            bar = Progress(*columns, transient=False)
            task = bar.add_task(
                "train",
                total=self.total_steps(),
                completed=done,
                epoch=first,
                epochs=self.epochs,
                loss=float("nan"),
                train=0.0,
                test="-",
            )
        running = {"loss": 0.0, "n": 0}

        def step_hook(epoch: int, k: int, report: StepReport) -> None:
            if bar is not None and task is not None:
                b = len(report.outputs)
                running["loss"] += report.loss * b
                running["n"] += b
                bar.update(task, advance=1, epoch=epoch, loss=running["loss"] / running["n"])
            if on_step is not None:
                on_step(epoch, k, report)

        def eval_hook(epoch: int, g: int, loss: float, acc: float) -> None:
            if bar is not None and task is not None:
                bar.update(task, test=f"{acc:.1%}")
            if on_eval is not None:
                on_eval(epoch, g, loss, acc)

        hooks["on_eval"] = eval_hook
        counter = ReadCounter(self.substrate)
        try:
            counter.__enter__()
            if bar is not None:
                bar.start()
            for epoch in range(first, self.epochs + 1):
                running.update(loss=0.0, n=0)
                record = self.run_epoch(epoch, step_hook, start if epoch == first else None, hooks, counter)
                if record is None:
                    result.stopped = True
                    return result
                result.history.append(record)
                if bar is not None and task is not None:
                    bar.update(task, train=record.train_accuracy)
                if on_epoch is not None:
                    on_epoch(record)
        finally:
            counter.__exit__()
            if bar is not None:
                bar.stop()
        return result
