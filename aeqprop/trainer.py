"""The training loop: epochs, shuffled minibatches, evaluation, progress.

The trainer knows nothing of the substrate beyond the contract and nothing of
the protocol beyond ``step``. It checks what it can before the first step:
capabilities, batch width, data shapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aeqprop.data import Dataset
from aeqprop.errors import ConfigurationError
from aeqprop.substrate import StepReport, Substrate, require


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float
    sweeps_per_step: float


@dataclass
class TrainResult:
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]

    @property
    def best_test_accuracy(self) -> float:
        return max(r.test_accuracy for r in self.history)


def evaluate(substrate: Substrate, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean squared-cost loss, accuracy) of the free equilibrium, in batches the substrate takes."""
    width = substrate.info.max_batch or len(x)
    n_classes = substrate.info.n_outputs
    loss = correct = 0.0
    substrate.nudge(0.0)
    for i in range(0, len(x), width):
        xb, lb = x[i:i + width], labels[i:i + width]
        substrate.clamp(xb)
        substrate.nudge(0.0)
        substrate.relax()
        o = substrate.outputs()
        y = np.zeros((len(lb), n_classes))
        y[np.arange(len(lb)), lb] = 1.0
        loss += 0.5 * float(np.sum((o - y) ** 2))
        correct += float(np.sum(np.argmax(o, axis=1) == lb))
    return loss / len(x), correct / len(x)


class Trainer:
    """Runs ``protocol.step`` over shuffled minibatches for a number of epochs.

    Example: ``Trainer(substrate, Aeqprop(beta=1.0), data, epochs=12, batch_size=16, seed=0).run()``.
    ``on_step(epoch, step, report)`` and ``on_epoch(record)`` are called as training goes.
    """

    def __init__(self, substrate: Substrate, protocol, data: Dataset, epochs: int, batch_size: int, seed: int = 0):
        if epochs < 1:
            raise ConfigurationError(f"epochs={epochs}: must be >= 1")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size={batch_size}: must be >= 1")
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

    def steps_per_epoch(self) -> int:
        return -(-len(self.data.x_train) // self.batch_size)

    def run_epoch(self, epoch: int, on_step: Callable | None = None) -> EpochRecord:
        data, sub = self.data, self.substrate
        order = self.rng.permutation(len(data.x_train))
        y_all = data.y_train
        t0 = time.perf_counter()
        loss = correct = sweeps = 0.0
        for k, i in enumerate(range(0, len(order), self.batch_size)):
            idx = order[i:i + self.batch_size]
            report: StepReport = self.protocol.step(sub, data.x_train[idx], y_all[idx])
            if not np.isfinite(report.loss):
                raise ConfigurationError("the training loss became non-finite; lower the learning rate or eps")
            loss += report.loss * len(idx)
            correct += float(np.sum(np.argmax(report.outputs, axis=1) == data.labels_train[idx]))
            sweeps += sum(report.sweeps.values())
            if on_step is not None:
                on_step(epoch, k, report)
        seconds = time.perf_counter() - t0
        test_loss, test_acc = evaluate(sub, data.x_test, data.labels_test)
        n = len(order)
        return EpochRecord(epoch, loss / n, correct / n, test_loss, test_acc, seconds, sweeps / self.steps_per_epoch())

    def run(self, progress: bool = False, on_step: Callable | None = None, on_epoch: Callable | None = None) -> TrainResult:
        result = TrainResult()
        if not progress:
            for epoch in range(1, self.epochs + 1):
                result.history.append(self.run_epoch(epoch, on_step))
                if on_epoch is not None:
                    on_epoch(result.history[-1])
            return result
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  train {task.fields[train]:.1%}  test {task.fields[test]}"),
            TimeRemainingColumn(),
        )
        total = self.epochs * self.steps_per_epoch()
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("train", total=total, epoch=1, epochs=self.epochs, loss=float("nan"), train=0.0, test="-")
            running = {"loss": 0.0, "n": 0, "correct": 0.0}

            def step_hook(epoch, k, report):
                b = len(report.outputs)
                running["loss"] += report.loss * b
                running["n"] += b
                bar.update(task, advance=1, epoch=epoch, loss=running["loss"] / running["n"])
                if on_step is not None:
                    on_step(epoch, k, report)

            for epoch in range(1, self.epochs + 1):
                running.update(loss=0.0, n=0)
                record = self.run_epoch(epoch, step_hook)
                result.history.append(record)
                bar.update(task, train=record.train_accuracy, test=f"{record.test_accuracy:.1%}")
                if on_epoch is not None:
                    on_epoch(record)
        return result
