"""Why long conv runs lose accuracy: centered Aeqprop on the conv substrate at a constant rate, with
what each window of steps did to the relaxations and to the parameters.

A few thousand Fashion-MNIST training images passed over repeatedly (the weights grow as in a long
run, sooner), the validation split's first 1,000 images scored after every window. Per window: the
share of relaxations of each phase that ended at max_sweeps without converging, the largest
parameter change of one step against the median step's largest change, and the largest singular
value of the map between the two conv layers (power iteration on A_2^T A_2 over the whole layer;
while it is below 1 the energy is convex in the state and each input has one equilibrium).

    python benchmarks/conv_stability.py [--steps 2000] [--every 250] [--train-size 3000] [--eps 0.1]
        [--beta 0.5] [--pooling average] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist import subset
from fashion_mnist_conv import parse_eps

from aeqprop.data import load_dataset
from aeqprop.trainer import evaluate
from protocols.aeqprop import Aeqprop
from sim_backends.conv import ConvHopfieldSubstrate
from sim_backends.conv_ops import Conv


def coupling_norm(sub: ConvHopfieldSubstrate, iterations: int = 60) -> float:
    """The largest singular value of layer 2's map A_2 (a conv map), by power iteration."""
    m, K = sub.maps[2], sub.W[2].astype(np.float64)
    assert isinstance(m, Conv)
    v = np.random.default_rng(0).normal(size=(1, *m.in_shape))
    s = 0.0
    for _ in range(iterations):
        w = m.adjoint(m.forward(v, K, m.route(v, K)), K, m.route(v, K))
        s = float(np.linalg.norm(w))
        v = w / s
    return float(np.sqrt(s))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--train-size", type=int, default=3000)
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--pooling", nargs="+", default=["average"])
    ap.add_argument("--max-sweeps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    data = subset(load_dataset("fashion-mnist", seed=args.seed), args.train_size, args.seed)
    cmd = "python benchmarks/conv_stability.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sub = ConvHopfieldSubstrate(
        (data.n_features, data.n_classes),
        input_shape=data.shape,
        channels=(32, 64),
        pooling=args.pooling[0] if len(args.pooling) == 1 else args.pooling,
        cost="cross-entropy",
        eps=parse_eps(args.eps),
        max_sweeps=args.max_sweeps,
        seed=args.seed,
        dtype="float32",
    )
    protocol = Aeqprop(beta=args.beta)
    order = np.random.default_rng(args.seed).permutation(len(data.x_train))
    B, per_pass = 16, len(order) // 16
    xv, lv = data.x_val[:1000], data.labels_val[:1000]
    rows, changes, capped = [], [], {}
    for k in range(args.steps):
        i = order[(k % per_pass) * B : (k % per_pass + 1) * B]
        report = protocol.step(sub, data.x_train[i], data.y_train[i])
        changes.append(max(float(np.abs(d).max()) for d in report.delta.values()))
        for phase, sweeps in report.sweeps.items():
            capped[phase] = capped.get(phase, 0) + int(sweeps >= args.max_sweeps)
        if (k + 1) % args.every == 0:
            window = changes[-args.every :]
            rows.append(
                (
                    k + 1,
                    evaluate(sub, xv, lv)[1],
                    {p: c / args.every for p, c in capped.items()},
                    max(window) / float(np.median(window)),
                    coupling_norm(sub),
                )
            )
            print(f"  step {k + 1}: validation {rows[-1][1]:.1%}", file=sys.stderr, flush=True)
            capped = {}
    print(
        f"\n`{cmd.strip()}`: {sub.info.description}, {'/'.join(args.pooling)} pooling, centered Aeqprop "
        f"b = {args.beta:g}, eps {args.eps}, constant rate, batch {B}, {len(data.x_train)} training images "
        f"passed over repeatedly, validation on 1,000 images\n"
    )
    phases = list(rows[0][2]) if rows else []
    print(
        "| steps | validation accuracy | "
        + " | ".join(f"{p} phases at max_sweeps" for p in phases)
        + " | largest step change / median step's | largest singular value of A_2 |"
    )
    print("|---" * (4 + len(phases)) + "|")
    for step, acc, cap, jump, sigma in rows:
        print(
            f"| {step} | {acc:.1%} | "
            + " | ".join(f"{cap.get(p, 0.0):.0%}" for p in phases)
            + f" | {jump:.1f} | {sigma:.2f} |"
        )


if __name__ == "__main__":
    main()
