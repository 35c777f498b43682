"""What the sweep cap does to centered Aeqprop on the conv substrate: training steps of
benchmarks/fashion_mnist_conv.py's network, from its initial theta, once per max_sweeps, on the
same batches in the same order.

Per cap: the share of steps with a relaxation cut off at the cap (its contrast then holds the
unfinished settling, not only the nudge's effect), the largest step's length over the median
step's, the validation accuracy after the steps (on the first --val-size validation images), the
sweeps per step, and the time per step against the first cap's, measured in the same run. The
other options are fashion_mnist_conv.py's (its --max-sweeps is replaced by --caps; the steps are
Aeqprop's at the schedules' starting eps and b, with --augment's flips if asked). With
``--start STATE`` (a --state file of fashion_mnist_conv.py) the steps start from that run's theta,
on its network and settings (an --eps given here replaces the run's; other settings of the run are
refused beside it), instead: what the cap does later in training, where the relaxations are slower,
or what a change of rate does there.

    python benchmarks/conv_settling.py [--steps 1000] [--caps 100 1000] [--eps 0.5 --beta 0.1]
    python benchmarks/conv_settling.py --start STATE [--steps 300] [--eps 0.2]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist import subset
from fashion_mnist_conv import build, parser, start_from

from aeqprop import augment as augmentation
from aeqprop.data import load_dataset
from aeqprop.trainer import evaluate
from protocols.aeqprop import Aeqprop


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    ap.description = (__doc__ or "").splitlines()[0]
    ap.add_argument("--steps", type=int, default=1000, help="training steps per cap")
    ap.add_argument("--caps", type=int, nargs="+", default=[100, 1000], help="the max_sweeps compared")
    ap.add_argument("--val-size", type=int, default=2000, help="validation images evaluated after the steps")
    ap.add_argument("--start", type=Path, default=None, help="start from this saved run's theta and settings")
    ap.set_defaults(eps=None)  # None: fashion_mnist_conv.py's, or with --start the saved run's
    args = ap.parse_args(argv)
    if args.rule != "aeqprop":
        ap.error("--rule oracle: this script measures Aeqprop's relaxations; drop --rule")
    args, theta, start = start_from(ap, args, ("steps", "caps", "val_size"))
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    data = subset(load_dataset("fashion-mnist", seed=args.seed, data_dir=args.data_dir), args.train_size, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(data.x_train))
    order = np.resize(order, args.steps * args.batch)  # wraps around on a small training split
    rows = []
    for cap in args.caps:
        args.max_sweeps = cap
        sub = build(args, data, args.dtype)
        if theta is not None:
            sub.set_parameters(theta)
        protocol = Aeqprop(beta=args.beta)
        flips = augmentation.generator(args.seed)  # the same flips for every cap
        lengths, cut, sweeps = [], 0, 0
        t0 = time.perf_counter()
        for k in range(args.steps):
            idx = order[k * args.batch : (k + 1) * args.batch]
            x = augmentation.apply(args.augment, data.x_train[idx], data.shape, flips)
            report = protocol.step(sub, x, data.y_train[idx])
            lengths.append(float(np.sqrt(sum(np.vdot(d, d) for d in report.delta.values()))))
            cut += bool(report.unsettled)
            sweeps += sum(report.sweeps.values())
        seconds = (time.perf_counter() - t0) / args.steps
        n = min(args.val_size, len(data.x_val))
        val = evaluate(sub, data.x_val[:n], data.labels_val[:n])[1]
        rows.append(
            (cap, cut / args.steps, max(lengths) / float(np.median(lengths)), val, sweeps / args.steps, seconds)
        )
        print(
            f"  max_sweeps {cap}: {cut} steps cut off, validation {val:.2%}, {seconds * 1e3:.0f} ms per step",
            file=sys.stderr,
            flush=True,
        )
    cmd = "python benchmarks/conv_settling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n`{cmd.strip()}`: {sub.info.description}, centered Aeqprop b = {args.beta:g}, eps {args.eps}, batch "
        f"{args.batch}, {args.dtype}, tol {args.tol:g}; {args.steps} steps from {start}, "
        f"validation on {n} images\n"
    )
    print(
        "| max_sweeps | steps with a relaxation cut off at the cap | largest step / median step "
        "| validation accuracy after the steps | sweeps per step | time per step / first row's |"
    )
    print("|---|---|---|---|---|---|")
    for cap, share, spread, val, per_step, seconds in rows:
        print(f"| {cap} | {share:.1%} | {spread:.1f} | {val:.2%} | {per_step:.1f} | {seconds / rows[0][5]:.2f} |")


if __name__ == "__main__":
    main()
