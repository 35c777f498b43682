"""How well centered Aeqprop's step on the conv substrate follows the true gradient, at the theta
of a saved run of benchmarks/fashion_mnist_conv.py (its --state file), for several nudgings b.

For each b and each of a few random training batches: the cosine between the step's change of
theta and minus the oracle gradient (implicit differentiation at a tightly settled equilibrium,
sim_backends/conv_oracle.py), both from the saved theta, on the run's own network and settings;
and the step's length over the first-order step's, |step| / |eps b gradient| (1 when the nudge
is small enough for the step to be the gradient's; below 1 when a large nudge saturates).
A cosine well below 1 on some batches means the nudged phases settled in another minimum than
the free one (the energy is not convex once the coupling between the conv layers exceeds 1).

    python benchmarks/conv_fidelity.py STATE [--betas 0.5 0.25 0.1] [--batches 6] [--seed 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist_conv import build, read_state, saved_settings

from aeqprop.data import load_dataset
from aeqprop.oracle import fidelity
from protocols.aeqprop import Aeqprop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("state", type=Path, help="a --state file of benchmarks/fashion_mnist_conv.py")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.5, 0.25, 0.1])
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--seed", type=int, default=5, help="seed of the batches drawn from the training split")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    meta, part = read_state(args.state)
    settings = saved_settings(meta)
    limiter = limit_blas_threads(settings.threads)  # noqa: F841  (kept alive for the run)
    data = load_dataset("fashion-mnist", seed=settings.seed, data_dir=args.data_dir)
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(len(data.x_train), settings.batch, replace=False) for _ in range(args.batches)]
    theta = part["theta"]
    rows = []
    sub = build(settings, data, settings.dtype)
    sub.set_parameters(theta)
    names = sorted(theta)
    targets = []  # minus the oracle gradient on each batch, flat: computed once, compared with every b's step
    for idx in batches:
        g = sub.true_gradient(data.x_train[idx], data.y_train[idx])
        targets.append(-np.concatenate([g[n].ravel() for n in names]))
    for beta in args.betas:
        protocol = Aeqprop(beta=beta)
        rates = protocol.expected_rates(sub)  # eps (beta2 - beta1) per tensor: the first-order step's scale
        scale = np.concatenate([np.full(theta[n].size, rates[n]) for n in names])
        cosines, lengths, capped = [], [], 0
        for idx, target in zip(batches, targets, strict=True):
            sub.set_parameters(theta)
            sub.set_knobs(theta)
            report = protocol.step(sub, data.x_train[idx], data.y_train[idx])
            after = sub.parameters()
            step = np.concatenate([(after[n] - theta[n]).ravel().astype(np.float64) for n in names])
            cosines.append(fidelity(step, target).cosine)
            lengths.append(float(np.linalg.norm(step) / np.linalg.norm(scale * target)))
            capped += len(report.unsettled)  # relaxations cut off at the cap, unconverged
        rows.append((beta, float(np.mean(cosines)), float(np.min(cosines)), float(np.mean(lengths)), capped))
        print(
            f"  b = {beta:g}: cosines {' '.join(f'{c:.3f}' for c in cosines)}; "
            f"lengths {' '.join(f'{v:.3f}' for v in lengths)}",
            file=sys.stderr,
            flush=True,
        )
    cmd = "python benchmarks/conv_fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n`{cmd.strip()}`: the theta after epoch {len(meta['val'])} of a run with channels "
        f"{'/'.join(map(str, settings.channels))}, eps {settings.eps}, b {settings.beta:g}; "
        f"{args.batches} training batches of {settings.batch}, {settings.dtype}, tol {settings.tol:g}\n"
    )
    print(
        "| nudging b | cosine of the step to -gradient, mean | lowest | step length / first-order length, mean "
        "| phases ending at max_sweeps |"
    )
    print("|---|---|---|---|---|")
    for beta, mean, low, length, capped in rows:
        print(f"| {beta:g} | {mean:.3f} | {low:.3f} | {length:.3f} | {capped} of {3 * len(batches)} |")


if __name__ == "__main__":
    main()
