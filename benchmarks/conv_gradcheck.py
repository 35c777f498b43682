"""Gradient check of the convolutional Hopfield substrate on Fashion-MNIST images: centered EqProp's
estimate at small beta against the oracle (implicit differentiation by conjugate gradients), and the
oracle against central finite differences of the loss on sampled entries.

    python benchmarks/conv_gradcheck.py [--batch 8] [--betas 1e-3 1e-2] [--entries 4]
        [--poolings average max,average max]   (per conv layer, comma-separated; one name: every layer)
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.oracle import compare, finite_difference
from protocols.eqprop import EqProp
from sim_backends.conv import ConvHopfieldSubstrate


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--betas", type=float, nargs="+", default=[1e-3, 1e-2])
    ap.add_argument("--entries", type=int, default=4, help="finite-difference entries per tensor")
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--poolings", nargs="+", default=["average", "max,average", "max"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = load_dataset("fashion-mnist", seed=args.seed)
    x, y = data.x_train[: args.batch].astype(np.float64), data.y_train[: args.batch]
    cmd = "python benchmarks/conv_gradcheck.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for pooling, cost in ((p, c) for p in args.poolings for c in ("squared", "cross-entropy")):
        kinds = pooling.split(",")
        sub = ConvHopfieldSubstrate(
            (784, 10),
            input_shape=(1, 28, 28),
            channels=tuple(args.channels),
            kernel=5,
            pool=2,
            pooling=kinds[0] if len(kinds) == 1 else kinds,
            cost=cost,
            seed=args.seed,
            tol=1e-12,
            max_sweeps=100_000,
        )
        oracle = sub.true_gradient(x, y)
        fd, masks = finite_difference(sub, x, y, h=1e-6, entries=args.entries, seed=args.seed)
        picked = {n: oracle[n][masks[n]] for n in oracle}
        fd_fid = compare({n: fd[n][masks[n]] for n in fd}, picked)["all"]
        for beta in args.betas:
            g_hat, _, _ = EqProp(beta=beta).estimate(sub, x, y)
            fid = compare(g_hat, oracle)
            worst = max((n for n in oracle), key=lambda n: fid[n].rel_error)
            rows.append((pooling.replace(",", " / "), cost, beta, fid["all"], worst, fid[worst], fd_fid))
    print(
        f"\n`{cmd.strip()}`: {sub.info.description.replace(', softmax readout', '')}, "
        f"{args.batch} Fashion-MNIST training images, at initialisation (seed {args.seed})\n"
    )
    print(
        "| pooling (per conv layer) | cost | beta | EqProp centered vs oracle: relative error | cosine "
        "| worst tensor (rel. error) | "
        f"oracle vs finite differences ({args.entries} entries per tensor): relative error |"
    )
    print("|---|---|---|---|---|---|---|")
    for pooling, cost, beta, fid, worst, wf, fd_fid in rows:
        print(
            f"| {pooling} | {cost} | {beta:g} | {fid.rel_error:.1e} | {fid.cosine:.8f} | {worst} ({wf.rel_error:.1e}) | "
            f"{fd_fid.rel_error:.1e} |"
        )


if __name__ == "__main__":
    main()
