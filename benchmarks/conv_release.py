"""What a release split into parts does to centered Aeqprop's step on the conv substrate.

The figure's release is one parameter update (``release = 1.0``): theta moves to ``u - eps dE/dtheta``
at the nudged state, the state held meanwhile. On a device the parameters move while the network
settles; a release in k equal parts, with the state settled again between parts, is a step toward
that (each part moves theta 1/k of the way to the target the current state gives: the fractions
1/k, 1/(k-1), ..., 1 of the remaining way). Where the coupling is stiff enough the parts add up to
the one update's step; where it is not, the target moves with the state, and the split step goes
elsewhere (the joint release, ``release = "equilibrium"``, is the limit of many parts).

Per tensor and per part count, over a few training batches from the same theta (the initial one,
or a saved run's with ``--start``; an --eps given here replaces the run's): the split step's length
over the one update's (mean and largest over the batches) and the cosine between the two steps
(mean and lowest).

    python benchmarks/conv_release.py [--eps 0.1] [--parts 2 10] [--batches 6]
    python benchmarks/conv_release.py --start STATE [--eps 0.2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist import subset
from fashion_mnist_conv import build, parser, start_from

from aeqprop.data import load_dataset


def step(sub, theta, x, y, beta: float, parts: int) -> dict[str, np.ndarray]:
    """Centered Aeqprop's change of theta from ``theta`` on one batch (native homeostasis), released
    in ``parts`` equal parts."""
    sub.set_parameters(theta)
    sub.set_knobs(theta)
    sub.clamp(x)
    sub.nudge(0.0)
    sub.relax()
    sub.nudge(-beta / 2, y)
    sub.relax()
    sub.homeostasis()
    sub.nudge(beta / 2, y)
    sub.relax()
    for i in range(parts):
        sub.release(1.0 / (parts - i))  # 1/k of the first target's distance per part
    sub.nudge(0.0)
    return {n: v - theta[n] for n, v in sub.parameters().items()}


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    ap.description = (__doc__ or "").splitlines()[0]
    ap.add_argument("--parts", type=int, nargs="+", default=[2, 10], help="release part counts compared with one")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-seed", type=int, default=5, help="seed of the batches drawn from the training split")
    ap.add_argument("--start", type=Path, default=None, help="start from this saved run's theta and settings")
    ap.set_defaults(eps=None)  # None: fashion_mnist_conv.py's, or with --start the saved run's
    args = ap.parse_args(argv)
    if any(k < 2 for k in args.parts):
        ap.error("--parts: give part counts of 2 or more (1 is the reference)")
    args, theta, start = start_from(ap, args, ("parts", "batches", "batch_seed"))
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    data = subset(load_dataset("fashion-mnist", seed=args.seed, data_dir=args.data_dir), args.train_size, args.seed)
    sub = build(args, data, args.dtype)
    if theta is None:
        theta = sub.parameters()
    theta = {n: np.array(v, dtype=sub.dtype) for n, v in theta.items()}
    rng = np.random.default_rng(args.batch_seed)
    batches = [rng.choice(len(data.x_train), args.batch, replace=False) for _ in range(args.batches)]
    names = sorted(theta)
    ratios = {k: {n: [] for n in [*names, "all"]} for k in args.parts}
    cosines = {k: {n: [] for n in [*names, "all"]} for k in args.parts}
    for b, idx in enumerate(batches, 1):
        x, y = data.x_train[idx], data.y_train[idx]
        one = step(sub, theta, x, y, args.beta, 1)
        one["all"] = np.concatenate([one[n].ravel() for n in names])
        for k in args.parts:
            split = step(sub, theta, x, y, args.beta, k)
            split["all"] = np.concatenate([split[n].ravel() for n in names])
            for n in [*names, "all"]:
                a, c = one[n].ravel().astype(np.float64), split[n].ravel().astype(np.float64)
                ratios[k][n].append(float(np.linalg.norm(c) / np.linalg.norm(a)))
                cosines[k][n].append(float(a @ c / (np.linalg.norm(a) * np.linalg.norm(c))))
        print(f"  batch {b} of {len(batches)}", file=sys.stderr, flush=True)
    cmd = "python benchmarks/conv_release.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n`{cmd.strip()}`: {sub.info.description}, centered Aeqprop b = {args.beta:g}, eps {args.eps}, batch "
        f"{args.batch}, {args.dtype}, tol {args.tol:g}; {len(batches)} training batches from {start}\n"
    )
    print(
        "| release | tensor | split step / one update's step, mean | largest "
        "| cosine between the steps, mean | lowest |"
    )
    print("|---|---|---|---|---|---|")
    for k in args.parts:
        for n in [*names, "all"]:
            r, c = np.array(ratios[k][n]), np.array(cosines[k][n])
            print(f"| {k} parts | {n} | {r.mean():.2f} | {r.max():.2f} | {c.mean():.3f} | {c.min():.3f} |")


if __name__ == "__main__":
    main()
