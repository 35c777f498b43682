"""Every protocol side by side (ALGORITHMS.md section 6).

1. Vector-field EqProp on the untied network: cosine between its update (each
   backward tensor folded into its forward one) and the oracle gradient of the
   symmetric network (B = W), as the forward/backward angle grows 0..90 degrees.
2. Digits test accuracy of every built-in protocol on the same Hopfield
   network, one run per seed, two worker processes.

    python benchmarks/learning_rules.py [--epochs 20] [--hidden 256] [--seeds 0 1 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.oracle import fidelity, flatten, protocol_update
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.continual import ContinualEqProp
from protocols.coupled import CoupledLearning
from protocols.eqprop import EqProp
from protocols.oracle_sgd import OracleSGD
from protocols.vector_field import VectorFieldEqProp
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.untied import UntiedSubstrate

#: name -> (factory, settings shown in the table)
PROTOCOLS = {
    "aeqprop": (lambda: Aeqprop(beta=1.0, variant="centered"), "centered, beta 1.0, eps 0.1, release 1.0"),
    "eqprop": (lambda: EqProp(beta=0.5, lr=0.1, variant="centered"), "centered, beta 0.5, lr 0.1"),
    "continual": (lambda: ContinualEqProp(beta=0.5, lr=0.01), "beta 0.5, lr 0.01"),
    "coupled": (lambda: CoupledLearning(eta=0.5, lr=0.1), "eta 0.5, lr 0.1, clamp_beta 1000"),
    "vector-field": (lambda: VectorFieldEqProp(beta=0.5, lr=0.1), "beta 0.5, lr 0.1 (tied weights)"),
    "sgd-oracle": (lambda: OracleSGD(lr=0.1), "lr 0.1 (true gradient)"),
}
ANGLES = (0, 15, 30, 45, 60, 75, 90)


def angle_cosines(hidden: int, seeds, beta: float = 0.01, batch: int = 64) -> dict[int, list[float]]:
    data = load_dataset("digits", test_fraction=0.2, seed=0)
    out = {a: [] for a in ANGLES}
    for seed in seeds:
        idx = np.random.default_rng(seed).choice(len(data.x_train), batch, replace=False)
        x, y = data.x_train[idx], data.y_train[idx]
        for a in ANGLES:
            net = UntiedSubstrate((data.n_features, hidden, data.n_classes), angle=a, seed=seed, tol=1e-10, max_sweeps=20_000)
            delta = protocol_update(net, VectorFieldEqProp(beta=beta, lr=1.0), x, y)
            tied = {n: v + delta.get("B" + n[1:], 0.0) if n[0] == "W" else v for n, v in delta.items() if n[0] != "B"}
            grad = net.symmetric_gradient(x, y)
            out[a].append(fidelity(flatten(tied, sorted(grad)), -flatten(grad)).cosine)
    return out


def train_one(job):
    name, seed, hidden, epochs, batch = job
    data = load_dataset("digits", test_fraction=0.2, seed=seed)
    sub = HopfieldSubstrate((data.n_features, hidden, data.n_classes), eps=0.1, seed=seed, tol=1e-3, max_sweeps=100)
    t0 = time.perf_counter()
    result = Trainer(sub, PROTOCOLS[name][0](), data, epochs=epochs, batch_size=batch, seed=seed).run()
    return name, seed, result.final.test_accuracy, time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    args = ap.parse_args(argv)
    command = " ".join(["python benchmarks/learning_rules.py", *(sys.argv[1:] if argv is None else argv)])

    jobs = [(p, s, args.hidden, args.epochs, args.batch) for p in args.protocols for s in args.seeds]
    with Pool(args.workers) as pool:
        pending = pool.map_async(train_one, jobs, chunksize=1)
        cosines = angle_cosines(args.hidden, args.seeds)
        runs = pending.get()

    print(f"`{command}`\n")
    print(f"Vector-field EqProp on the untied 64-{args.hidden}-10 network (digits, batch 64, beta 0.01): "
          f"cosine with the oracle gradient of the symmetric network, mean ± std over seeds {args.seeds}\n")
    print("| angle (deg) | cosine |")
    print("|---:|---:|")
    for a in ANGLES:
        c = np.array(cosines[a])
        print(f"| {a} | {c.mean():.4f} ± {c.std():.4f} |")

    print(f"\nDigits test accuracy after {args.epochs} epochs, Hopfield 64-{args.hidden}-10, batch {args.batch}, "
          f"tol 1e-3, seeds {args.seeds}\n")
    print("| protocol | settings | test accuracy (mean ± std) | per seed | s per run |")
    print("|---|---|---:|---|---:|")
    for p in args.protocols:
        rows = sorted((s, acc, sec) for name, s, acc, sec in runs if name == p)
        acc = np.array([r[1] for r in rows])
        sec = np.mean([r[2] for r in rows])
        per_seed = ", ".join(f"{r[1]:.2%}" for r in rows)
        print(f"| {p} | {PROTOCOLS[p][1]} | {acc.mean():.2%} ± {acc.std():.2%} | {per_seed} | {sec:.0f} |")


if __name__ == "__main__":
    main()
