"""Looking at recorded runs: tables, a summary, a PNG of the curves, CSV and JSON exports."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from aeqprop.store import RunStore, StoreError


def status(row: dict) -> str:
    """The status shown: a run recorded as running whose owner process is gone shows as ``killed``."""
    if row.get("status") == "running" and row.get("owner") is None:
        return "killed"
    return row.get("status") or "-"


def _duration(row: dict) -> str:
    if row.get("started") is None:
        return "-"
    if status(row) == "killed":  # ended at its last sign of life, not now
        end = row.get("last_seen") or row["started"]
    else:
        end = row.get("ended") or (time.time() if row.get("status") == "running" else row["started"])
    seconds = max(0.0, end - row["started"])
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def print_runs(runs: str) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    with RunStore(runs, readonly=True) as store:
        rows = store.runs()
    table = Table(title=f"runs in {runs}")
    for col in ("id", "status", "dataset", "backend", "protocol", "best accuracy", "duration"):
        table.add_column(col, justify="right" if col in ("id", "best accuracy", "duration") else "left")
    for r in rows:
        best = "-" if r["best_accuracy"] is None else f"{r['best_accuracy']:.2%}"
        table.add_row(
            str(r["id"]), status(r), str(r["dataset"]), str(r["backend"]), str(r["protocol"]), best, _duration(r)
        )
    Console(width=120).print(table)
    return rows


def print_run(runs: str, run_id: str) -> dict:
    from rich.console import Console

    with RunStore(runs, readonly=True) as store:
        row = store.run(run_id)
        rid = row["id"]
        epochs = store.metrics(rid, "epoch_metrics")
        events = store.metrics(rid, "events")
        steps = store.metrics(rid, "step_metrics")
    console = Console(width=120)
    console.print(
        f"run {rid}  {status(row)}  {row['dataset']} / {row['backend']} / {row['protocol']}"
        f"  seed {row['seed']}  host {row['host']}  duration {_duration(row)}",
        markup=False,
    )
    if status(row) == "killed":
        console.print(f"its process is gone (killed?); continue it with `aeqprop resume {rid}`", markup=False)
    if row["error"]:
        console.print(f"error: {row['error']}", markup=False)
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in row["versions"].items()), markup=False)
    # one line however long (no wrapping at the console's width): the config is copied from here
    console.print("config: " + json.dumps(row["config"], sort_keys=True), markup=False, soft_wrap=True)
    if epochs:
        best = max(epochs, key=lambda e: e["test_accuracy"])
        last = epochs[-1]
        console.print(
            f"{len(epochs)} epochs, {len(steps)} steps recorded; last epoch {last['epoch']}: "
            f"train loss {last['train_loss']:.4f}, train {last['train_accuracy']:.2%}, "
            f"test {last['test_accuracy']:.2%}; best test {best['test_accuracy']:.2%} (epoch {best['epoch']})"
        )
    else:
        console.print(f"no epoch finished; {len(steps)} steps recorded")
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        step = "" if e["step"] is None else f" step {e['step']}"
        message = e["message"].split("\njson: ", 1)[0]  # a calibration keeps its record after the summary
        console.print(f"  {when}{step} {e['kind']}: {message}", markup=False)
    return row


def _collect(store: RunStore, rid: int) -> dict:
    return {t: store.metrics(rid, t) for t in ("step_metrics", "epoch_metrics", "evaluations", "events")}


def _legend(ax: Any) -> None:
    """A legend when the axes have labelled curves (a run without epochs has none; matplotlib would warn)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_run(runs: str, run_id: str, output: str | None = None) -> Path:
    """Write a PNG of the run's curves; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with RunStore(runs, readonly=True) as store:
        row = store.run(run_id)
        rid = row["id"]
        m = _collect(store, rid)
    epochs, steps, evals = m["epoch_metrics"], m["step_metrics"], m["evaluations"]
    if not epochs and not steps:
        raise StoreError(f"run {rid} has no metrics yet; nothing to plot")
    fidelity: dict[str, list[tuple[int, float]]] = {}
    for s in steps:
        for k, v in json.loads(s["extra"] or "{}").items():
            if "cosine" in k or "fidelity" in k:
                fidelity.setdefault(k, []).append((s["step"], v))
    n = 5 if fidelity else 4
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), dpi=100)
    e = np.array([r["epoch"] for r in epochs])
    ax = axes[0]
    if epochs:
        ax.plot(e, [r["train_loss"] for r in epochs], "o-", label="train")
        ax.plot(e, [r["test_loss"] for r in epochs], "s-", label="test")
    ax.set(title="loss per epoch", xlabel="epoch", ylabel="squared cost")
    _legend(ax)
    ax = axes[1]
    if epochs:
        ax.plot(e, [r["train_accuracy"] for r in epochs], "o-", label="train")
        ax.plot(e, [r["test_accuracy"] for r in epochs], "s-", label="test")
    if evals and steps:
        per_epoch = max(s["step"] for s in steps) / max(s["epoch"] for s in steps)
        ax.plot(
            [v["step"] / per_epoch for v in evals],
            [v["test_accuracy"] for v in evals],
            ".",
            alpha=0.5,
            label="test (every N steps)",
        )
    ax.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    _legend(ax)
    ax = axes[2]
    phases: dict[str, list] = {}
    for s in steps:
        for phase, count in json.loads(s["sweeps"] or "{}").items():
            phases.setdefault(phase, []).append((s["step"], count))
    for phase, pts in phases.items():
        a = np.array(pts, dtype=float)
        ax.plot(a[:, 0], a[:, 1], lw=0.8, label=phase)
    ax.set(title="relaxation sweeps per phase", xlabel="step", ylabel="sweeps")
    if phases:
        ax.legend()
    ax = axes[3]
    if epochs:
        ax.plot(e, [r["parameter_norm"] for r in epochs], "o-", label="||theta||")
    ax.set(title="parameter norm", xlabel="epoch")
    if fidelity:
        ax = axes[4]
        for k, pts in fidelity.items():
            a = np.array(pts, dtype=float)
            ax.plot(a[:, 0], a[:, 1], lw=0.8, label=k)
        ax.set(title="gradient fidelity", xlabel="step")
        _legend(ax)
    fig.suptitle(f"run {rid}: {row['protocol']} on {row['backend']}, {row['dataset']} ({status(row)})")
    fig.tight_layout()
    try:
        path = plot_path(fig, runs, rid, output)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError as exc:
        raise StoreError(
            f"cannot write the plot to {output or path} ({exc.strerror or exc}); give another -o"
        ) from None
    finally:
        plt.close(fig)
    return path


def plot_path(fig: Any, runs: str, rid: int, output: str | None) -> Path:
    """Where the plot goes: ``output`` (an image file; no suffix: .png added) or ``<runs>/run-<id>.png``."""
    if not output:
        return Path(runs) / f"run-{rid}.png"
    path = Path(output)
    if str(output).endswith(("/", "\\")) or path.is_dir():
        raise StoreError(f"-o {output}: is a folder; give an image file, e.g. {path / f'run-{rid}.png'}")
    formats = fig.canvas.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        return path.with_name(path.name + ".png")
    if suffix not in formats:
        raise StoreError(
            f"-o {output}: unknown image format .{suffix}; use one of {', '.join('.' + f for f in sorted(formats))}"
        )
    return path


def export_run(runs: str, run_id: str, output: str | None = None) -> list[Path]:
    """Write ``steps.csv``, ``epochs.csv``, ``evaluations.csv``, ``events.csv`` and ``run.json``."""
    with RunStore(runs, readonly=True) as store:
        row = store.run(run_id)
        rid = row["id"]
        m = _collect(store, rid)
        header = {t: [d[1] for d in store.db.execute(f"PRAGMA table_info({t})")] for t in m}
    row.pop("owner", None)
    row.pop("last_seen", None)
    folder = Path(output) if output else Path(runs) / f"run-{rid}"
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"-o {folder}: is a file; export writes several files, give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the export folder {folder} ({exc.strerror or exc}); give another -o") from None
    paths = []
    for table, name in (
        ("step_metrics", "steps"),
        ("epoch_metrics", "epochs"),
        ("evaluations", "evaluations"),
        ("events", "events"),
    ):
        path = folder / f"{name}.csv"
        rows = m[table]
        columns = list(rows[0]) if rows else header[table]
        try:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise StoreError(f"cannot write {path} ({exc.strerror or exc}); give another -o") from None
        paths.append(path)
    path = folder / "run.json"
    try:
        path.write_text(json.dumps({"run": row, **{k: v for k, v in m.items()}}, indent=1, default=str))
    except OSError as exc:
        raise StoreError(f"cannot write {path} ({exc.strerror or exc}); give another -o") from None
    paths.append(path)
    return paths
