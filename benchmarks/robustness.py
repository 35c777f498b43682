"""Robustness study: digits test accuracy of centered EqProp and centered Aeqprop on imperfect devices.

The runs are a sweep file, benchmarks/robustness.toml: each effect of
sim_backends/nonideal.py at three magnitudes, and a realistic mix, against the
ideal device; 3 seeds each (initial parameters, minibatch order and, offset by
1000, the device's random streams), one data split (seed 0). Both protocols take
the same first-order step: EqProp lr = 0.1 with beta = 0.5 (nudging -0.5 / +0.5),
Aeqprop eps = 0.1 with beta = 1.0 (nudging -0.5 / +0.5, feedback homeostasis,
release of one update). Aeqprop runs as ``aeqprop train`` runs it: a calibration
first (protocols/calibration.py) picks eps per tensor, the probe length and the
averaged reads; EqProp does not average. Beside each accuracy: reads of theta or
dE/dtheta per training step (the cost of averaging), as each run recorded them
(``substrate_reads`` in its step records). ``--native``: benchmarks/robustness_native.toml,
feedback against native homeostasis on the ideal device.

This script runs the sweep on a local process pool (every core by default) and
prints the table from the run store; ``--sweep ID`` prints a finished sweep
(e.g. one run by ``aeqprop sweep run benchmarks/robustness.toml``, on a cluster).

    python benchmarks/robustness.py                      # the full study
    python benchmarks/robustness.py --only ideal,read_noise,program_noise,mix   # the issue's figures
    python benchmarks/robustness.py --epochs 1 --seeds 1 --only ideal,read_noise   # a smoke test
    python benchmarks/robustness.py --native --layers 64,512,10 --epochs 30 --seeds 3  # feedback vs native, ideal
    python benchmarks/robustness.py --sweep 1 --runs runs/robustness   # a finished sweep's table

Prints a markdown table; saves a PNG plot (and the raw results as JSON beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aeqprop.config import read_toml
from aeqprop.errors import AeqpropError, ConfigurationError
from aeqprop.sweep import expand, flat

HERE = Path(__file__).resolve().parent
SWEEPS = {"study": HERE / "robustness.toml", "native": HERE / "robustness_native.toml"}
NAMES = {"eqprop": "EqProp", "native": "Aeqprop (native)", "aeqprop": "Aeqprop (feedback)"}  # in column order


def protocol_key(config: dict) -> str:
    """The table's column of a run: eqprop, aeqprop (feedback homeostasis) or native."""
    protocol = config["protocol"]
    if protocol["name"] == "aeqprop":
        return "native" if protocol["options"].get("homeostasis", "native") == "native" else "aeqprop"
    return protocol["name"]


def device(label: str) -> tuple[str, str]:
    """(effect, magnitude) of a point labelled "effect: magnitude" (or just "ideal")."""
    effect, _, magnitude = label.partition(": ")
    return effect, magnitude or effect


def devices(spec: dict) -> list[tuple[tuple[str, str], dict]]:
    """Each point of the sweep file: (effect, magnitude) and its overrides (dotted keys), in file order."""
    return [(device(p["label"]), flat({k: v for k, v in p.items() if k != "label"})) for p in spec["points"]]


def configure(args) -> dict:
    """The sweep file's contents with the command line's options applied."""
    raw = read_toml(SWEEPS["native" if args.native else "study"])
    config = raw.setdefault("config", {})
    if args.epochs is not None:
        config.setdefault("schedule", {})["epochs"] = args.epochs
    if args.seeds is not None:
        raw["seeds"] = list(range(args.seeds))
    if args.layers is not None:
        options = config.setdefault("substrate", {}).setdefault("options", {})
        options.pop("hidden", None)
        options["layers"] = [int(n) for n in args.layers.split(",")]
    if args.homeostasis_iterations is not None:
        for protocol in raw["grid"]["protocol"]:
            if protocol["options"].get("homeostasis") == "feedback":
                protocol["options"]["homeostasis_iterations"] = args.homeostasis_iterations
    if args.only:
        wanted = {name.strip().replace("_", " ") for name in args.only.split(",")}
        known = [effect for (effect, _), _ in devices(raw)]
        unknown = sorted(wanted - set(known))
        if unknown:
            valid = ", ".join(dict.fromkeys(e.replace(" ", "_") for e in known))
            raise ConfigurationError(f"--only {', '.join(unknown)}: no such effect; valid: {valid}")
        raw["points"] = [p for p in raw["points"] if device(p["label"])[0] in wanted]
    return raw


def figures(steps: list[dict], epochs: list[dict], events: list[dict]) -> dict:
    """A run's figures from its records: final test accuracy, reads per step, share of capped
    homeostasis steps, calibration summary (rows of step_metrics, epoch_metrics, events)."""
    extras = [json.loads(s["extra"] or "{}") for s in steps]
    reads = [e["substrate_reads"] for e in extras if "substrate_reads" in e]
    calibration = [e["message"].split("\n", 1)[0] for e in events if e["kind"] == "calibration"]
    return {
        "accuracy": epochs[-1]["test_accuracy"] if epochs else None,
        "reads": sum(reads) / len(reads) if reads else float("nan"),
        "capped": float(np.mean([e.get("homeostasis_capped", 0.0) for e in extras])) if extras else 0.0,
        "calibration": calibration[-1] if calibration else "",
    }


def run_sweep(raw: dict, runs: str | None, workers: int | None) -> tuple[str, int, float]:
    """Run the sweep on a local pool; (runs folder, sweep id, wall time in s). Per-run lines go to stderr."""
    from aeqprop.sweep_exec import LocalPool, start_sweep

    sweep = expand(raw, HERE, runs)
    count = {"done": 0}

    def on_record(job, run_id, rec):
        count["done"] += 1
        got = figures(
            rec.tables.get("step_metrics", []), rec.tables.get("epoch_metrics", []), rec.tables.get("events", [])
        )
        acc = "failed" if got["accuracy"] is None or rec.status != "completed" else f"{100 * got['accuracy']:5.1f} %"
        note = f"  [{(rec.error or rec.tables['runs'][0]['error'] or '')[:60]}]" if rec.status != "completed" else ""
        print(
            f"{count['done']:3d}/{len(sweep.jobs)} run {run_id:<4d} {job['label'][:60]:60s} seed {job['seed']}  "
            f"{acc}  {got['reads']:6.1f} reads/step  {rec.seconds:5.1f} s{note}",
            file=sys.stderr,
        )
        if got["calibration"]:
            print(f"    calibration: {got['calibration']}", file=sys.stderr)

    first = [LocalPool(workers)]  # a new pool only if a worker dies and breaks this one
    print(
        f"sweep {sweep.name}: {len(sweep.jobs)} runs on {first[0].workers} workers into {sweep.runs}", file=sys.stderr
    )
    t0 = time.perf_counter()
    sweep_id, report = start_sweep(sweep, lambda: first.pop() if first else LocalPool(workers), on_record=on_record)
    if report.interrupted:
        raise SystemExit(
            f"sweep {sweep_id} interrupted; resume it with `aeqprop sweep resume {sweep_id} --runs {sweep.runs}`"
        )
    return sweep.runs, sweep_id, time.perf_counter() - t0


def results(runs: str, sweep_id: int | str) -> tuple[dict, list[dict]]:
    """The sweep's spec and one result per job: protocol, effect, magnitude, seed and figures.
    A run that failed counts as chance level and says why (reads: NaN); a job never run is left out."""
    from aeqprop.data import load_dataset
    from aeqprop.sweep_store import jobs, open_store, sweep_row

    store = open_store(runs, create=False)
    try:
        row = sweep_row(store, sweep_id)
        spec = json.loads(row["spec"])
        if not spec.get("points") or "protocol" not in spec.get("grid", {}):
            raise ConfigurationError(
                f"sweep {row['id']} ({row['name']}) in {runs} is not a robustness sweep (devices as points, "
                "protocols as a grid); give the id of one run from benchmarks/robustness*.toml"
            )
        named = devices(spec)
        out = []
        chance = None
        listed = jobs(store, row["id"])
        for job in listed:
            if job["run_id"] is None or job["status"] not in ("completed", "failed"):
                continue
            overrides = {k: v for k, v in job["overrides"].items() if k.split(".")[0] != "protocol"}
            found = [d for d, o in named if o == overrides]
            if not found:
                raise ConfigurationError(f"sweep {row['id']}: point {job['label']!r} is no device of its sweep file")
            effect, magnitude = found[0]
            got = figures(*(store.metrics(job["run_id"], t) for t in ("step_metrics", "epoch_metrics", "events")))
            if job["status"] == "failed":
                if chance is None:
                    ds = job["config"]["dataset"]
                    chance = 1.0 / load_dataset(ds["name"], ds["test_fraction"], ds["seed"] or 0).n_classes
                got.update(accuracy=chance, reads=float("nan"))
            out.append(
                {
                    "protocol": protocol_key(job["config"]),
                    "effect": effect,
                    "label": magnitude,
                    "seed": job["seed"],
                    "run_id": job["run_id"],
                    "error": job["error"] or "",
                    "seconds": job["seconds"],
                    **got,
                }
            )
        return {**spec, "config": listed[0]["config"]}, out
    finally:
        store.close()


def summarise(results: list[dict], conds, protocols) -> dict:
    table = {}
    for effect, label in conds:
        row = {}
        for p in protocols:
            rs = [r for r in results if r["effect"] == effect and r["label"] == label and r["protocol"] == p]
            if rs:
                acc = [r["accuracy"] for r in rs]
                row[p] = (
                    100 * float(np.mean(acc)),
                    100 * float(np.std(acc)),
                    len(acc),
                    float(np.mean([r["reads"] for r in rs])),
                )
        table[(effect, label)] = (label, row)
    return table


def markdown(table: dict, protocols) -> str:
    ideal = table.get(("ideal", "ideal"), (None, {}))[1]
    a, b = protocols
    lines = [
        f"| effect | magnitude | {NAMES[a]} test acc. (%) | reads / step | {NAMES[b]} test acc. (%) "
        f"| reads / step | {NAMES[b]} - {NAMES[a]} |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for (effect, _), (label, row) in table.items():
        cells = []
        for p in protocols:
            if p in row:
                m, s, _, reads = row[p]
                drop = f" ({m - ideal[p][0]:+.1f})" if p in ideal and effect != "ideal" else ""
                cells += [f"{m:.1f} ± {s:.1f}{drop}", f"{reads:.0f}"]
            else:
                cells += ["-", "-"]
        diff = f"{row[b][0] - row[a][0]:+.1f}" if len(row) == 2 else "-"
        lines.append(f"| {effect} | {label} | {' | '.join(cells)} | {diff} |")
    return "\n".join(lines)


def plot(table: dict, path: Path, protocols, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    effects = list(dict.fromkeys(e for e, _ in table if e != "ideal"))
    if not effects:
        return
    ideal = table.get(("ideal", "ideal"), (None, {}))[1]
    cols = 3
    rows = -(-len(effects) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
    for ax, effect in zip(axes.flat, effects):
        keys = [k for k in table if k[0] == effect]
        labels = ["ideal"] + [table[k][0] for k in keys]
        for p, colour in zip(protocols, ("tab:blue", "tab:orange")):
            pts = [ideal.get(p)] + [table[k][1].get(p) for k in keys]
            xs = [i for i, v in enumerate(pts) if v is not None]
            ax.errorbar(
                xs,
                [pts[i][0] for i in xs],
                yerr=[pts[i][1] for i in xs],
                marker="o",
                capsize=3,
                color=colour,
                label=NAMES[p],
            )
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set_title(effect)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(effects) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("digits test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Centered EqProp vs centered Aeqprop on imperfect devices (mean ± std, {seeds} seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layers_of(config: dict) -> str:
    """The network's layer sizes as "64-64-10" (features and classes of the dataset around ``hidden``)."""
    options = config["substrate"]["options"]
    if "layers" in options:
        return "-".join(map(str, options["layers"]))
    from aeqprop.data import load_dataset

    ds = config["dataset"]
    data = load_dataset(ds["name"], ds["test_fraction"], ds["seed"] or 0)
    return "-".join(map(str, (data.n_features, *options["hidden"], data.n_classes)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/out/robustness.png", help="path of the PNG plot")
    ap.add_argument("--epochs", type=int, default=None, help="[default: the sweep file's, 4; --native: 30]")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 [default: the sweep file's, 3]")
    ap.add_argument("--workers", type=int, default=None, help="worker processes [default: one per core]")
    ap.add_argument("--layers", default=None, help="e.g. 64,64,10 [default: the sweep file's]")
    ap.add_argument("--homeostasis-iterations", type=int, default=None, help="[default: the sweep file's, 30]")
    ap.add_argument("--only", default=None, help="comma-separated effects (ideal, read_noise, ..., mix)")
    ap.add_argument("--native", action="store_true", help="feedback against native Aeqprop on the ideal device")
    ap.add_argument("--runs", default=None, help="runs folder [default: the sweep file's, runs/robustness]")
    ap.add_argument("--sweep", default=None, help="print the table of this finished sweep instead of running one")
    args = ap.parse_args(argv)
    try:
        if args.sweep is not None:
            runs = args.runs or read_toml(SWEEPS["native" if args.native else "study"])["runs"]
            sweep_id, wall = args.sweep, None
        else:
            runs, sweep_id, wall = run_sweep(configure(args), args.runs, args.workers)
        spec, rows = results(runs, sweep_id)
    except AeqpropError as exc:
        raise SystemExit(f"robustness: {exc}") from None
    config = spec["config"]  # a run's validated config: what every run shares
    keys = {protocol_key({"protocol": p}) for p in spec["grid"]["protocol"]}
    protocols = tuple(p for p in NAMES if p in keys)
    conds = [d for d, _ in devices(spec)]
    table = summarise(rows, conds, protocols)
    out = Path(args.out)
    if "native" not in protocols:
        plot(table, out, protocols, len(spec["seeds"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    schedule = config["schedule"]
    print(
        f"Digits, Hopfield {layers_of(config)}, {schedule['epochs']} epochs, batch {schedule['batch_size']}, "
        f"{len(spec['seeds'])} seeds; final test accuracy, mean ± std (change from the ideal device).\n"
    )
    print(markdown(table, protocols))
    capped = [r["capped"] for r in rows if r["protocol"] == "aeqprop"]
    cap = [p["options"].get("homeostasis_iterations") for p in spec["grid"]["protocol"]]
    print(
        f"\nAeqprop homeostasis steps at the iteration cap ({', '.join(str(c) for c in cap if c)}): "
        f"{100 * np.mean(capped) if capped else 0:.0f} % on average."
    )
    done = (
        f"Wall time {wall:.0f} s, sweep {sweep_id} in {runs}." if wall is not None else f"Sweep {sweep_id} in {runs}."
    )
    print(f"{done} Plot: {out}" if "native" not in protocols else done)


if __name__ == "__main__":
    main()
