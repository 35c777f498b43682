"""Discrete-time EqProp against BPTT (Ernoult et al. 2019): the GDU property and digits accuracy.

1. Per-step relative error of EqProp's updates against BPTT's gradients, every
   layer and step of K = 10, beta 1e-3, on a batch of digits (64-256-10 at
   initialisation, default smooth activation): the full table for the first seed,
   and the worst cell per seed for the smooth and the clip activations.
2. Worst per-step relative error against beta, one-sided and centered, both activations.
3. Sign agreement of the weight updates at beta 0.1: of the update over the K nudged steps
   (the paper's measure), and per step (pooled, worst step); per-step relative error at
   beta 0.1 by step, with a linear network (rho = identity: no activation at all) as the
   reference for what the nudge alone does at that beta.
4. Digits test accuracy of discrete-time EqProp (centered) and of BPTT (SGD on the
   oracle gradient, through the T free steps) on the same net, one run per seed and
   activation, two worker processes.
The figure of the per-step updates (first seed, smooth, beta 1e-3) is written to docs/gdu.png.

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
from sim_backends.activations import Linear
from sim_backends.discrete import DiscreteSubstrate
from sim_backends.gdu import GDUReport, GDUSettings, gdu_check, plot_gdu, table_rows

BETAS = (1e-1, 1e-2, 1e-3, 1e-4)
VARIANTS = ("positive", "centered")
ACTIVATIONS = ("smooth", "clip")  # the default first
METHODS = {
    "EqProp": (lambda: EqProp(beta=0.5, lr=0.1, variant="centered"), "centered, beta 0.5, lr 0.1"),
    "BPTT": (lambda: OracleSGD(lr=0.1), "SGD on the BPTT gradient through T = 200 free steps, lr 0.1"),
}
SIGN_FLOOR = GDUSettings().sign_floor


def batch_of(data, seed: int, size: int = 16):
    idx = np.random.default_rng(seed).choice(len(data.x_train), size, replace=False)
    return data.x_train[idx], data.y_train[idx]


def train_one(job):
    method, activation, seed, hidden, epochs, batch = job
    data = load_dataset("digits", test_fraction=0.2, seed=seed)
    sub = DiscreteSubstrate(
        (data.n_features, hidden, data.n_classes), seed=seed, tol=1e-3, max_sweeps=200, activation=activation
    )
    t0 = time.perf_counter()
    result = Trainer(sub, METHODS[method][0](), data, epochs=epochs, batch_size=batch, seed=seed).run()
    return method, activation, seed, result.final.test_accuracy, time.perf_counter() - t0


def worst_at_step(r: GDUReport, t: int) -> float:
    """Largest relative error over the layers and tensors reached at step t."""
    vals = [v[t] for v in r.rel_error.values() if np.isfinite(v[t])]
    return max(vals)


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
    jobs = [(m, a, s, args.hidden, args.epochs, args.batch) for m in METHODS for a in ACTIVATIONS for s in args.seeds]
    jobs.sort(key=lambda j: (j[0] != "BPTT", j[1] != "smooth"))  # the longest first
    with Pool(args.workers) as pool:
        pending = pool.map_async(train_one, jobs, chunksize=1) if args.epochs > 0 else None
        reports, linear = {}, {}
        for seed in args.seeds:
            x, y = batch_of(data, seed, args.batch)
            for activation in ACTIVATIONS:
                net = DiscreteSubstrate(layers, seed=seed, activation=activation)
                for variant in VARIANTS:
                    for beta in BETAS:
                        reports[seed, activation, variant, beta] = gdu_check(
                            net, x, y, beta=beta, K=10, variant=variant
                        )
            net = DiscreteSubstrate(layers, seed=seed)
            net.rho = [Linear()] * (net.L + 1)  # the reference without any activation (unbounded state)
            linear[seed] = gdu_check(net, x, y, beta=0.1, K=10, variant="centered")
        runs = pending.get() if pending is not None else []
    net_name = "-".join(map(str, layers))
    seeds = args.seeds
    print(f"`{command}`\n")

    first = reports[seeds[0], "smooth", "centered", 1e-3]
    print(
        f"Per-step relative error ||D_EP + g_BPTT|| / ||g_BPTT||, centered, beta 1e-3, K = 10, digits batch of "
        f"{args.batch}, {net_name} (smooth, the default) at initialisation, seed {seeds[0]} "
        f"(T = {first.T} free steps; · : BPTT's gradient is exactly zero at that step)\n"
    )
    rows = table_rows(first)
    print("| t | " + " | ".join(n for n, _ in rows) + " |")
    print("|---:|" + "---:|" * len(rows))
    for t in range(first.K):
        print(f"| {t} | " + " | ".join(cells[t] for _, cells in rows) + " |")

    print("\nWorst per-step relative error over every layer and step of K = 10, beta 1e-3, per seed (aim <= 1e-2)\n")
    print("| seed | activation | variant | neurons | weights | biases | cells <= 1e-2 |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for seed in seeds:
        for activation in ACTIVATIONS:
            for variant in VARIANTS:
                r = reports[seed, activation, variant, 1e-3]
                cells = np.concatenate(list(r.rel_error.values()))
                cells = cells[np.isfinite(cells)]
                print(
                    f"| {seed} | {activation} | {variant} | {r.worst('s'):.1e} | {r.worst('W'):.1e} | "
                    f"{r.worst('b'):.1e} | {np.mean(cells <= 1e-2):.0%} |"
                )

    print(f"\nWorst per-step relative error (every layer and step) against beta, worst over seeds {seeds}\n")
    print(
        "| beta | "
        + " | ".join(f"{a}, {'one-sided' if v == 'positive' else v}" for a in ACTIVATIONS for v in VARIANTS)
        + " |"
    )
    print("|---:|" + "---:|" * (len(ACTIVATIONS) * len(VARIANTS)))
    for beta in BETAS:
        cells = [f"{max(reports[s, a, v, beta].worst() for s in seeds):.1e}" for a in ACTIVATIONS for v in VARIANTS]
        print(f"| {beta:g} | " + " | ".join(cells) + " |")

    print(
        "\nSign agreement of the weight updates with BPTT at beta 0.1 (aim >= 99 %). The aim's column is the "
        "weight update EqProp makes over the K = 10 nudged steps (the sum of its per-step updates) against minus "
        "BPTT's gradient truncated to the same K steps: the measure of the paper's reference code (its sign "
        "statistics compare the cumulative EP update and the cumulative BPTT gradient at the last step). Beside "
        "it, stricter: every entry of every per-step update of W1, W2 pooled over the K steps, and the worst "
        f"single step. Left out: entries where |g_BPTT| <= {SIGN_FLOOR:g} of the largest in their step and "
        "tensor (the exact zeros: W1 rows of pixels that are 0 in every image of the batch), and the steps where "
        "BPTT's gradient of a tensor is exactly zero (·). Linear: rho = identity in every layer, no activation, "
        "the reference for what the nudge itself does at beta 0.1\n"
    )
    print("| seed | activation | variant | update over the K steps (aim) | per step, pooled | worst step |")
    print("|---:|---|---|---:|---:|---:|")
    for seed in seeds:
        cases = [(a, v, reports[seed, a, v, 0.1]) for a in ACTIVATIONS for v in VARIANTS]
        for activation, variant, r in cases + [("linear", "centered", linear[seed])]:
            worst = min(np.nanmin(r.sign_agreement[n]) for n in r.sign_agreement if n[0] == "W")
            print(
                f"| {seed} | {activation} | {variant} | {r.update_sign_agreement():.2%} | "
                f"{r.sign_agreement_of('W'):.2%} | {worst:.2%} |"
            )

    print(
        f"\nPer-step relative error at beta 0.1 by nudged step t, centered, worst over the layers and tensors "
        f"reached at that step, seed {seeds[0]}\n"
    )
    cases = [(a, reports[seeds[0], a, "centered", 0.1]) for a in ACTIVATIONS] + [("linear", linear[seeds[0]])]
    K = first.K
    print("| activation | " + " | ".join(f"t={t}" for t in range(K)) + " |")
    print("|---|" + "---:|" * K)
    for activation, r in cases:
        print(f"| {activation} | " + " | ".join(f"{worst_at_step(r, t):.2f}" for t in range(K)) + " |")

    if runs:
        print(
            f"\nDigits test accuracy after {args.epochs} epochs, discrete-time {net_name}, batch {args.batch}, "
            f"tol 1e-3, max 200 time steps per phase, seeds {seeds} (aim: EqProp within 0.5 point of BPTT)\n"
        )
        print("| activation | method | settings | test accuracy (mean ± std) | per seed | s per run |")
        print("|---|---|---|---:|---|---:|")
        means = {}
        for activation in ACTIVATIONS:
            for m in METHODS:
                got = sorted((s, acc, sec) for name, a, s, acc, sec in runs if name == m and a == activation)
                acc = np.array([g[1] for g in got])
                means[activation, m] = acc.mean()
                print(
                    f"| {activation} | {m} | {METHODS[m][1]} | {acc.mean():.2%} ± {acc.std():.2%} | "
                    f"{', '.join(f'{g[1]:.2%}' for g in got)} | {np.mean([g[2] for g in got]):.0f} |"
                )
        print()
        for activation in ACTIVATIONS:
            gap = 100 * (means[activation, "EqProp"] - means[activation, "BPTT"])
            print(f"EqProp - BPTT, {activation}: {gap:+.2f} points")
    if args.figure:
        print(f"\nFigure: {plot_gdu(first, args.figure, seed=seeds[0])}")


if __name__ == "__main__":
    main()
