"""Vector-field EqProp on the untied network (ALGORITHMS.md section 6).

Cosine between its update (each backward tensor folded into its forward one)
and the oracle gradient of the symmetric network (B = W), as the
forward/backward angle grows 0..90 degrees.

    python benchmarks/learning_rules.py [--hidden 256] [--seeds 0 1 2]

The digits accuracy of every built-in protocol is a sweep, benchmarks/learning_rules.toml:
``aeqprop sweep run benchmarks/learning_rules.toml`` (every core; --scheduler for a cluster).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.oracle import fidelity, flatten, protocol_update
from protocols.vector_field import VectorFieldEqProp
from sim_backends.untied import UntiedSubstrate

ANGLES = (0, 15, 30, 45, 60, 75, 90)


def angle_cosines(hidden: int, seeds, beta: float = 0.01, batch: int = 64) -> dict[int, list[float]]:
    data = load_dataset("digits", test_fraction=0.2, seed=0)
    out = {a: [] for a in ANGLES}
    for seed in seeds:
        idx = np.random.default_rng(seed).choice(len(data.x_train), batch, replace=False)
        x, y = data.x_train[idx], data.y_train[idx]
        for a in ANGLES:
            net = UntiedSubstrate(
                (data.n_features, hidden, data.n_classes), angle=a, seed=seed, tol=1e-10, max_sweeps=20_000
            )
            delta = protocol_update(net, VectorFieldEqProp(beta=beta, lr=1.0), x, y)
            tied = {n: v + delta.get("B" + n[1:], 0.0) if n[0] == "W" else v for n, v in delta.items() if n[0] != "B"}
            grad = net.symmetric_gradient(x, y)
            out[a].append(fidelity(flatten(tied, sorted(grad)), -flatten(grad)).cosine)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    command = " ".join(["python benchmarks/learning_rules.py", *(sys.argv[1:] if argv is None else argv)])

    cosines = angle_cosines(args.hidden, args.seeds)

    print(f"`{command}`\n")
    print(
        f"Vector-field EqProp on the untied 64-{args.hidden}-10 network (digits, batch 64, beta 0.01): "
        f"cosine with the oracle gradient of the symmetric network, mean ± std over seeds {args.seeds}\n"
    )
    print("| angle (deg) | cosine |")
    print("|---:|---:|")
    for a in ANGLES:
        c = np.array(cosines[a])
        print(f"| {a} | {c.mean():.4f} ± {c.std():.4f} |")


if __name__ == "__main__":
    main()
