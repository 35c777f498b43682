"""How long evaluating held-out images takes on the conv substrate, by the width of the batches
they are relaxed in.

A relaxation sweeps its whole batch until the slowest sample settles, so the width decides how
many sweeps the others pay for. Per width: the seconds to evaluate the first --images validation
images from the same theta (the initial one, or a saved run's with ``--start``), their ratio to
the first width's, and the accuracy (each sample settles to the same tolerance at any width).

    python benchmarks/conv_eval_width.py [--widths 1024 256 64 16] [--images 2048]
    python benchmarks/conv_eval_width.py --start STATE
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from baselines import limit_blas_threads
from fashion_mnist import subset
from fashion_mnist_conv import build, parser, start_from

from aeqprop.data import load_dataset
from aeqprop.trainer import evaluate


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    ap.description = (__doc__ or "").splitlines()[0]
    ap.add_argument("--widths", type=int, nargs="+", default=[1024, 256, 64, 16], help="evaluation batch widths")
    ap.add_argument("--images", type=int, default=2048, help="validation images evaluated at each width")
    ap.add_argument("--start", type=Path, default=None, help="start from this saved run's theta and settings")
    ap.set_defaults(eps=None)  # None: fashion_mnist_conv.py's, or with --start the saved run's
    args = ap.parse_args(argv)
    if min(args.widths) < 1 or args.images < 1:
        ap.error("--widths and --images: give counts of 1 or more")
    args, theta, start = start_from(ap, args, ("widths", "images"))
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    data = subset(load_dataset("fashion-mnist", seed=args.seed, data_dir=args.data_dir), args.train_size, args.seed)
    sub = build(args, data, args.dtype)
    if theta is not None:
        sub.set_parameters(theta)
    x, labels = data.x_val[: args.images], data.labels_val[: args.images]
    rows = []
    for width in args.widths:
        sub.info = dataclasses.replace(sub.info, eval_batch=width, max_batch=max(width, sub.info.max_batch or 0))
        t0 = time.perf_counter()
        accuracy = evaluate(sub, x, labels)[1]
        rows.append((width, time.perf_counter() - t0, accuracy))
        print(f"  width {width}: {rows[-1][1]:.1f} s", file=sys.stderr, flush=True)
    cmd = "python benchmarks/conv_eval_width.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n`{cmd.strip()}`: {sub.info.description}, {args.dtype}, tol {args.tol:g}, max_sweeps {args.max_sweeps}; "
        f"{len(x)} validation images from {start}\n"
    )
    print("| evaluation batch width | s | time / first width's | accuracy |")
    print("|---|---|---|---|")
    for width, seconds, accuracy in rows:
        print(f"| {width} | {seconds:.1f} | {seconds / rows[0][1]:.2f} | {accuracy:.2%} |")


if __name__ == "__main__":
    main()
