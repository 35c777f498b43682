"""Robustness study: digits test accuracy of centered EqProp and centered Aeqprop on imperfect devices.

Each effect of sim_backends/nonideal.py at three magnitudes, and a realistic
mix, against the ideal device; 3 seeds each (initial parameters, minibatch
order and the device's random streams). Both protocols take the same first-order
step: EqProp lr = 0.1 with beta = 0.5 (nudging -0.5 / +0.5), Aeqprop eps = 0.1
with beta = 1.0 (nudging -0.5 / +0.5, feedback homeostasis, release of one
update). Aeqprop runs as ``aeqprop train`` runs it: a calibration first
(protocols/calibration.py) picks eps per tensor, the probe length and the
averaged reads; EqProp does not average. Beside each accuracy: reads of theta
or dE/dtheta per training step (the cost of averaging).

    python benchmarks/robustness.py                      # the full study
    python benchmarks/robustness.py --only ideal,read_noise,program_noise,mix   # the issue's figures
    python benchmarks/robustness.py --epochs 1 --seeds 1 --only ideal,read_noise   # a smoke test
    python benchmarks/robustness.py --native --layers 64,512,10 --epochs 5 --seeds 1  # feedback vs native, ideal

Prints a markdown table; saves a PNG plot (and the raw results as JSON beside it).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per worker

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.errors import AeqpropError
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealSubstrate

#: effect -> three (label, NonidealConfig fields), mild to severe
EFFECTS: dict[str, list[tuple[str, dict]]] = {
    "read_noise": [(f"sigma {s:g}", {"read_noise": s}) for s in (1e-4, 1e-3, 1e-2)],
    "program_noise": [(f"sigma {s:g}", {"program_noise": s}) for s in (1e-4, 1e-3, 1e-2)],
    "write_response": [
        (f"nl {n:g}, asym {a:g}", {"write_nonlinearity": n, "write_asymmetry": a})
        for n, a in ((0.2, 0.05), (0.5, 0.2), (0.8, 0.5))
    ],
    "levels": [(f"{n} levels", {"levels": n}) for n in (1024, 256, 64)],
    "drift": [(f"{s:g} / step", {"drift": s}) for s in (1e-4, 1e-3, 1e-2)],
    "variability": [(f"log-std {s:g}", {"variability": s}) for s in (0.1, 0.3, 1.0)],
    "stuck": [(f"{p:.0%} stuck", {"stuck": p}) for p in (0.01, 0.03, 0.1)],
    "settling": [(f"{n} sweeps", {"settle_sweeps": n}) for n in (20, 8, 3)],
}
MIX = {
    "read_noise": 1e-3,
    "program_noise": 1e-3,
    "write_nonlinearity": 0.3,
    "write_asymmetry": 0.1,
    "levels": 1024,
    "drift": 1e-4,
    "variability": 0.3,
    "stuck": 0.01,
    "settle_sweeps": 20,
}
PROTOCOLS = ("eqprop", "aeqprop")


def conditions(only: set[str] | None = None) -> list[tuple[str, int, str, dict]]:
    """(effect, level 0..3, label, config) for the ideal device, every effect and the mix."""
    out = [("ideal", 0, "ideal", {})]
    for effect, levels in EFFECTS.items():
        out += [(effect, k + 1, label, cfg) for k, (label, cfg) in enumerate(levels)]
    out.append(("mix", 1, "realistic mix", MIX))
    return [c for c in out if only is None or c[0] in only]


def make_protocol(name: str, homeostasis_iterations: int):
    if name == "eqprop":
        return EqProp(beta=0.5, lr=0.1, variant="centered")
    if name == "native":
        return Aeqprop(beta=1.0, variant="centered", homeostasis="native", release=1.0)
    return Aeqprop(
        beta=1.0,
        variant="centered",
        homeostasis="feedback",
        release=1.0,
        homeostasis_iterations=homeostasis_iterations,
        homeostasis_on_cap="hold",
    )


def count_reads(sub) -> dict:
    """Count the substrate's reads of theta and dE/dtheta (a reading of ``parameters`` or ``energy_gradients``)."""
    counts = {"reads": 0}
    for name in ("parameters", "energy_gradients"):
        method = getattr(sub, name)

        def counted(*args, _method=method, **kwargs):
            counts["reads"] += 1
            return _method(*args, **kwargs)

        setattr(sub, name, counted)
    return counts


def run_one(task: dict) -> dict:
    """Train one protocol on one device with one seed; the final test accuracy."""
    data = load_dataset("digits", seed=0)
    sub = HopfieldSubstrate(task["layers"], eps=0.1, tol=1e-3, seed=task["seed"])
    sub = NonidealSubstrate(sub, {**task["config"], "seed": 1000 + task["seed"]})
    protocol = make_protocol(task["protocol"], task["homeostasis_iterations"])
    t0 = time.perf_counter()
    capped, calibration = [], ""
    counts = count_reads(sub)
    try:
        if getattr(protocol, "calibrate_first", False):  # as a run does (aeqprop.session.calibrate)
            calibration = protocol.calibrate(sub, data.x_train[:16], data.y_train[:16])["summary"]
        before = counts["reads"]
        trainer = Trainer(sub, protocol, data, epochs=task["epochs"], batch_size=16, seed=task["seed"])
        result = trainer.run(on_step=lambda e, k, rep: capped.append(rep.extra.get("homeostasis_capped", 0.0)))
        accuracy, error = result.final.test_accuracy, ""
        reads = (counts["reads"] - before) / max(len(capped), 1)
    except AeqpropError as exc:  # a run that breaks down counts as chance level, and says why
        accuracy, error, reads = 1.0 / data.n_classes, str(exc), float("nan")
    return {
        **task,
        "accuracy": accuracy,
        "error": error,
        "seconds": time.perf_counter() - t0,
        "capped": float(np.mean(capped)) if capped else 0.0,
        "reads": reads,
        "calibration": calibration,
    }


def summarise(results: list[dict], conds, protocols=PROTOCOLS) -> dict:
    table = {}
    for effect, level, label, _ in conds:
        row = {}
        for p in protocols:
            rs = [r for r in results if r["effect"] == effect and r["level"] == level and r["protocol"] == p]
            if rs:
                acc = [r["accuracy"] for r in rs]
                row[p] = (
                    100 * float(np.mean(acc)),
                    100 * float(np.std(acc)),
                    len(acc),
                    float(np.mean([r["reads"] for r in rs])),
                )
        table[(effect, level)] = (label, row)
    return table


NAMES = {"eqprop": "EqProp", "aeqprop": "Aeqprop (feedback)", "native": "Aeqprop (native)"}


def markdown(table: dict, protocols=PROTOCOLS) -> str:
    ideal = table.get(("ideal", 0), (None, {}))[1]
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
        lines.append(f"| {effect.replace('_', ' ')} | {label} | {' | '.join(cells)} | {diff} |")
    return "\n".join(lines)


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    effects = list(dict.fromkeys(e for e, _ in table if e != "ideal"))
    if not effects:
        return
    ideal = table.get(("ideal", 0), (None, {}))[1]
    cols = 3
    rows = -(-len(effects) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharey=True)
    for ax, effect in zip(axes.flat, effects):
        keys = [k for k in table if k[0] == effect]
        labels = ["ideal"] + [table[k][0] for k in keys]
        for p, colour in zip(PROTOCOLS, ("tab:blue", "tab:orange")):
            pts = [ideal.get(p)] + [table[k][1].get(p) for k in keys]
            xs = [i for i, v in enumerate(pts) if v is not None]
            ax.errorbar(
                xs,
                [pts[i][0] for i in xs],
                yerr=[pts[i][1] for i in xs],
                marker="o",
                capsize=3,
                color=colour,
                label={"eqprop": "EqProp", "aeqprop": "Aeqprop (feedback)"}[p],
            )
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set_title(effect.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(effects) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("digits test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Centered EqProp vs centered Aeqprop on imperfect devices (mean ± std, 3 seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/out/robustness.png", help="path of the PNG plot")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layers", default="64,64,10")
    ap.add_argument("--homeostasis-iterations", type=int, default=30)
    ap.add_argument("--only", default=None, help="comma-separated effects (ideal, read_noise, ..., mix)")
    ap.add_argument("--native", action="store_true", help="feedback against native Aeqprop on the ideal device")
    args = ap.parse_args(argv)
    protocols = ("native", "aeqprop") if args.native else PROTOCOLS
    if args.native:
        args.only = "ideal"
    only = set(args.only.split(",")) if args.only else None
    conds = conditions(only)
    layers = tuple(int(n) for n in args.layers.split(","))
    tasks = [
        {
            "protocol": p,
            "effect": e,
            "level": lv,
            "label": lab,
            "config": cfg,
            "seed": s,
            "layers": layers,
            "epochs": args.epochs,
            "homeostasis_iterations": args.homeostasis_iterations,
        }
        for p in reversed(protocols)
        for (e, lv, lab, cfg) in conds
        for s in range(args.seeds)
    ]  # Aeqprop (slow) first, so the two workers finish together
    t0 = time.perf_counter()
    results = []
    with Pool(args.workers) as pool:
        for r in pool.imap_unordered(run_one, tasks):
            results.append(r)
            note = f"  [{r['error'][:60]}]" if r["error"] else ""
            print(
                f"{len(results):3d}/{len(tasks)} {r['protocol']:8s} {r['effect']:15s} {r['label']:18s} "
                f"seed {r['seed']}  {100 * r['accuracy']:5.1f} %  {r['reads']:6.1f} reads/step  "
                f"{r['seconds']:5.1f} s{note}",
                file=sys.stderr,
            )
            if r["calibration"]:
                print(f"    calibration: {r['calibration']}", file=sys.stderr)
    table = summarise(results, conds, protocols)
    out = Path(args.out)
    if not args.native:
        plot(table, out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(
        f"Digits, Hopfield {'-'.join(map(str, layers))}, {args.epochs} epochs, batch 16, {args.seeds} seeds; "
        f"final test accuracy, mean ± std (change from the ideal device).\n"
    )
    print(markdown(table, protocols))
    capped = [r["capped"] for r in results if r["protocol"] == "aeqprop"]
    print(
        f"\nAeqprop homeostasis steps at the iteration cap ({args.homeostasis_iterations}): "
        f"{100 * np.mean(capped) if capped else 0:.0f} % on average."
    )
    print(f"Wall time {time.perf_counter() - t0:.0f} s with {args.workers} workers. Plot: {out}")


if __name__ == "__main__":
    main()
