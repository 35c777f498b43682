"""Looking at a sweep: a table per point, a PNG of accuracy against each swept axis, a CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from aeqprop.sweep_store import PointSummary, by_validation_accuracy, jobs, open_store, summarize, sweep_row


def _load(runs: str, sweep_id: str) -> tuple[dict, list[dict]]:
    store = open_store(runs, create=False)
    try:
        row = sweep_row(store, sweep_id)
        return row, jobs(store, row["id"])
    finally:
        store.close()


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2%}"


def print_sweep(runs: str, sweep_id: str, markdown: bool = False) -> list[PointSummary]:
    """A table of the sweep's points ranked by mean final validation accuracy over seeds where every
    point has one, else by mean final test accuracy; the best marked (``markdown``: as a Markdown table)."""
    from rich.console import Console
    from rich.table import Table

    row, rows = _load(runs, sweep_id)
    points = summarize(rows)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"] or "not run"] = statuses.get(r["status"] or "not run", 0) + 1
    validated = by_validation_accuracy(points)
    ranked = "ranked by validation accuracy" if validated else "final test accuracy over seeds"
    table = Table(title=f"sweep {row['id']} ({row['name']}) in {runs}: {ranked}")
    columns = ["", "point", "runs", *(["validation (mean)"] if validated else []), "test accuracy (mean ± std)"]
    for col in (*columns, "per seed", "s per run"):
        table.add_column(col, justify="left" if col in ("", "point", "per seed") else "right")
    for p in points:
        spread = "-" if not p.completed else f"{_pct(p.mean)} ± {_pct(p.std)}"
        seconds = "-" if math.isnan(p.seconds) else f"{p.seconds:.2f}"
        table.add_row(
            "*" if p.best else "",
            p.label,
            f"{p.completed}/{p.jobs}",
            *([_pct(p.validation)] if validated else []),
            spread,
            ", ".join(_pct(a) for a in p.accuracies),
            seconds,
        )
    console = Console(width=140)
    if markdown:
        console.print(f"{table.title}\n", markup=False)
        head = "| best | point | runs | " + ("validation (mean) | " if validated else "")
        rule = "|---|---|---:|" + ("---:|" if validated else "")
        console.print(
            f"{head}test accuracy (mean ± std) | per seed | s per run |\n{rule}---:|---|---:|",
            markup=False,
        )
        for p in points:
            spread = "-" if not p.completed else f"{_pct(p.mean)} ± {_pct(p.std)}"
            seconds = "-" if math.isnan(p.seconds) else f"{p.seconds:.2f}"
            val = f" {_pct(p.validation)} |" if validated else ""
            console.print(
                f"| {'*' if p.best else ''} | {p.label} | {p.completed}/{p.jobs} |{val} {spread} | "
                f"{', '.join(_pct(a) for a in p.accuracies)} | {seconds} |",
                markup=False,
                soft_wrap=True,
            )
    else:
        console.print(table)
    console.print(
        "runs: " + ", ".join(f"{n} {k}" for k, n in sorted(statuses.items())) + "; * best point", markup=False
    )
    return points


def export_sweep(runs: str, sweep_id: str, output: str | None = None) -> Path:
    """One CSV row per run of the sweep: point, label, seed, each swept axis, run, status, figures."""
    row, rows = _load(runs, sweep_id)
    axes = sorted({k for r in rows for k in r["overrides"]})
    path = Path(output) if output else Path(runs) / f"sweep-{row['id']}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [
        "sweep",
        "point",
        "label",
        "seed",
        *axes,
        "run_id",
        "status",
        "attempts",
        "test_accuracy",
        "best_accuracy",
        "test_loss",
        "val_accuracy",
        "seconds",
        "error",
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for r in rows:
            writer.writerow(
                [
                    row["id"],
                    r["point"],
                    r["label"],
                    r["seed"],
                    *(r["overrides"].get(a, "") for a in axes),
                    r["run_id"],
                    r["status"] or "not run",
                    r["attempts"],
                    r["test_accuracy"],
                    r["best_accuracy"],
                    r["test_loss"],
                    r["val_accuracy"],
                    r["seconds"],
                    r["error"],
                ]
            )
    return path


def plot_sweep(runs: str, sweep_id: str, output: str | None = None) -> Path:
    """PNG: final test accuracy against each swept axis, one panel per axis; each run a dot,
    the mean over seeds with its standard deviation as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    row, rows = _load(runs, sweep_id)
    done = [r for r in rows if r["status"] == "completed" and r["test_accuracy"] is not None]
    axes = sorted({k for r in rows for k in r["overrides"]}) or ["point"]
    fig, panels = plt.subplots(1, len(axes), figsize=(4.5 * len(axes), 3.6), squeeze=False)
    for ax, axis in zip(panels[0], axes):
        values = [r["label"] if axis == "point" else r["overrides"].get(axis) for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values
        keys = sorted(set(map(_key, values)), key=lambda k: (k[0], k[1]))
        xs = {k: (k[1] if numeric else i) for i, k in enumerate(keys)}
        for v, r in zip(values, done):
            ax.plot(xs[_key(v)], 100 * r["test_accuracy"], ".", color="0.6")
        for k in keys:
            acc = [100 * r["test_accuracy"] for v, r in zip(values, done) if _key(v) == k]
            ax.errorbar(xs[k], np.mean(acc), yerr=np.std(acc), fmt="o", color="C0", capsize=3)
        if not numeric:
            ax.set_xticks(list(xs.values()), [k[2] for k in keys], rotation=30, ha="right", fontsize=7)
        elif len(keys) > 2 and min(k[1] for k in keys) > 0 and max(k[1] for k in keys) / min(k[1] for k in keys) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"sweep {row['id']} ({row['name']}): {len(done)} completed runs, mean ± std over seeds")
    fig.tight_layout()
    path = Path(output) if output else Path(runs) / f"sweep-{row['id']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _key(value: object) -> tuple[int, float, str]:
    """A sortable key for an axis value: numbers by value, anything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), f"{value:g}")
    return (1, 0.0, str(value))
