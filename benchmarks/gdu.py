"""Discrete-time EqProp against BPTT (Ernoult et al. 2019): the GDU property and digits accuracy.

1. Per-step relative error of EqProp's updates against BPTT's gradients, every
   layer and step of K = 10, beta 1e-3, on a batch of digits (64-256-10 at
   initialisation), one table per seed's worst cell and one full table.
2. Worst per-step relative error against beta, one-sided and centered.
3. Sign agreement of the weight updates at beta 0.1, per step and summed over the K steps.
4. Digits test accuracy of discrete-time EqProp (centered) and of BPTT (SGD on the
   oracle gradient, through the T free steps) on the same net, one run per seed,
   two worker processes.
The figure of the per-step updates (seed 0, beta 1e-3) is written to docs/gdu.png.

    python benchmarks/gdu.py [--epochs 20] [--hidden 256] [--seeds 0 1 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.trainer import Trainer
from protocols.eqprop import EqProp
from protocols.oracle_sgd import OracleSGD
from sim_backends.discrete import DiscreteSubstrate
from sim_backends.gdu import gdu_check, plot_gdu, table_rows

BETAS = (1e-1, 1e-2, 1e-3, 1e-4)
METHODS = {
    "EqProp": (lambda: EqProp(beta=0.5, lr=0.1, variant="centered"), "centered, beta 0.5, lr 0.1"),
    "BPTT": (lambda: OracleSGD(lr=0.1), "SGD on the BPTT gradient through T = 200 free steps, lr 0.1"),
}


def batch_of(data, seed: int, size: int = 16):
    idx = np.random.default_rng(seed).choice(len(data.x_train), size, replace=False)
    return data.x_train[idx], data.y_train[idx]


def train_one(job):
    method, seed, hidden, epochs, batch = job
    data = load_dataset("digits", test_fraction=0.2, seed=seed)
    sub = DiscreteSubstrate((data.n_features, hidden, data.n_classes), seed=seed, tol=1e-3, max_sweeps=200)
    t0 = time.perf_counter()
    result = Trainer(sub, METHODS[method][0](), data, epochs=epochs, batch_size=batch, seed=seed).run()
    return method, seed, result.final.test_accuracy, time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--figure", default="docs/gdu.png")
    args = ap.parse_args(argv)
    command = " ".join(["python benchmarks/gdu.py", *(sys.argv[1:] if argv is None else argv)])
    data = load_dataset("digits", test_fraction=0.2, seed=0)
    layers = (data.n_features, args.hidden, data.n_classes)
    jobs = [(m, s, args.hidden, args.epochs, args.batch) for m in METHODS for s in args.seeds]
    with Pool(args.workers) as pool:
        pending = pool.map_async(train_one, jobs, chunksize=1) if args.epochs > 0 else None
        reports = {}
        for seed in args.seeds:
            x, y = batch_of(data, seed, args.batch)
            net = DiscreteSubstrate(layers, seed=seed)
            for variant in ("positive", "centered"):
                for beta in BETAS:
                    reports[seed, variant, beta] = gdu_check(net, x, y, beta=beta, K=10, variant=variant)
        runs = pending.get() if pending is not None else []
    net_name = "-".join(map(str, layers))
    print(f"`{command}`\n")

    first = reports[args.seeds[0], "centered", 1e-3]
    print(
        f"Per-step relative error ||D_EP + g_BPTT|| / ||g_BPTT||, centered, beta 1e-3, K = 10, digits batch of "
        f"{args.batch}, {net_name} at initialisation, seed {args.seeds[0]} (T = {first.T} free steps; "
        "· : BPTT's gradient is exactly zero at that step)\n"
    )
    rows = table_rows(first)
    print("| t | " + " | ".join(n for n, _ in rows) + " |")
    print("|---:|" + "---:|" * len(rows))
    for t in range(first.K):
        print(f"| {t} | " + " | ".join(cells[t] for _, cells in rows) + " |")

    print("\nWorst per-step relative error over every layer and step of K = 10, beta 1e-3, per seed (aim <= 1e-2)\n")
    print("| seed | variant | neurons | weights | biases | cells <= 1e-2 |")
    print("|---:|---|---:|---:|---:|---:|")
    for seed in args.seeds:
        for variant in ("positive", "centered"):
            r = reports[seed, variant, 1e-3]
            cells = np.concatenate(list(r.rel_error.values()))
            cells = cells[np.isfinite(cells)]
            print(
                f"| {seed} | {variant} | {r.worst('s'):.1e} | {r.worst('W'):.1e} | {r.worst('b'):.1e} | "
                f"{np.mean(cells <= 1e-2):.0%} |"
            )

    print("\nWorst per-step relative error (every layer and step) against beta, per seed\n")
    print("| beta | " + " | ".join(f"one-sided, seed {s} | centered, seed {s}" for s in args.seeds) + " |")
    print("|---:|" + "---:|" * (2 * len(args.seeds)))
    for beta in BETAS:
        cells = [f"{reports[s, v, beta].worst():.1e}" for s in args.seeds for v in ("positive", "centered")]
        print(f"| {beta:g} | " + " | ".join(cells) + " |")

    print(
        "\nSign agreement of the weight updates with -g_BPTT at beta 0.1 (aim >= 99 %): pooled over every "
        "step and weight tensor, and of the update summed over the K steps\n"
    )
    print("| seed | variant | per step, pooled | worst step | summed over K |")
    print("|---:|---|---:|---:|---:|")
    for seed in args.seeds:
        for variant in ("positive", "centered"):
            r = reports[seed, variant, 0.1]
            worst = min(np.nanmin(r.sign_agreement[n]) for n in r.sign_agreement if n[0] == "W")
            agree = total = 0
            for n in (n for n in r.ep if n[0] == "W"):
                e, g = sum(r.ep[n]), -sum(r.bptt[n])
                keep = np.abs(g) > 1e-6 * np.abs(g).max()
                agree += int(np.sum(np.sign(e[keep]) == np.sign(g[keep])))
                total += int(keep.sum())
            print(f"| {seed} | {variant} | {r.sign_agreement_of('W'):.2%} | {worst:.2%} | {agree / total:.2%} |")

    if runs:
        print(
            f"\nDigits test accuracy after {args.epochs} epochs, discrete-time {net_name}, batch {args.batch}, "
            f"tol 1e-3, max 200 time steps per phase, seeds {args.seeds} (aim: within 0.5 point)\n"
        )
        print("| method | settings | test accuracy (mean ± std) | per seed | s per run |")
        print("|---|---|---:|---|---:|")
        means = {}
        for m in METHODS:
            got = sorted((s, acc, sec) for name, s, acc, sec in runs if name == m)
            acc = np.array([g[1] for g in got])
            means[m] = acc.mean()
            print(
                f"| {m} | {METHODS[m][1]} | {acc.mean():.2%} ± {acc.std():.2%} | "
                f"{', '.join(f'{g[1]:.2%}' for g in got)} | {np.mean([g[2] for g in got]):.0f} |"
            )
        print(f"\nEqProp - BPTT: {100 * (means['EqProp'] - means['BPTT']):+.2f} points")
    if args.figure:
        print(f"\nFigure: {plot_gdu(first, args.figure, seed=args.seeds[0])}")


if __name__ == "__main__":
    main()
