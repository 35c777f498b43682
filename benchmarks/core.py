"""Digits accuracy of centered Aeqprop (float64 and float32), centered EqProp and oracle-gradient
SGD on the same Hopfield network, against scikit-learn's MLPClassifier and numpy backprop of the
same net; the time of a training epoch against the backprop epoch, and where a step's time goes.

Every method trains epoch by epoch in lockstep with the backprop baseline, so each epoch's
time ratio is taken under the same machine load; the table gives the median ratio.

    python benchmarks/core.py [--epochs 30] [--hidden 512] [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
from baselines import BackpropMLP, limit_blas_threads

from aeqprop.data import load_dataset
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from protocols.oracle_sgd import OracleSGD
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.hopfield_relax import Acceleration

BACKPROP = "numpy backprop MLP (same net, SGD lr = 0.1)"
#: The two methods whose steps are equal in exact arithmetic (ALGORITHMS.md section 3, short release)
TWINS = ("Aeqprop, centered (b = 1, eps = 0.1, native homeostasis)", "EqProp, centered (b = 0.5, lr = 0.1)")


def sklearn_mlp(data, hidden: int, seed: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), random_state=seed, max_iter=300)
        clf.fit(data.x_train, data.labels_train)
    return float(clf.score(data.x_test, data.labels_test))


class PhaseClock:
    """Sums a step report's seconds per phase (the cost split)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.sweeps: dict[str, int] = {}
        self.steps = 0

    def __call__(self, epoch, k, report) -> None:
        self.steps += 1
        for phase, s in report.seconds.items():
            self.seconds[phase] = self.seconds.get(phase, 0.0) + s
        for phase, n in report.sweeps.items():
            self.sweeps[phase] = self.sweeps.get(phase, 0) + n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: the library's default)")
    args = ap.parse_args(argv)
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)

    plain = Acceleration(enabled=False, warm_start=False)  # block coordinate descent, sweep for sweep
    methods = {
        "Aeqprop, centered (b = 1, eps = 0.1, native homeostasis)": (lambda: Aeqprop(beta=1.0), "float64", None),
        "Aeqprop, same, float32": (lambda: Aeqprop(beta=1.0), "float32", None),
        "Aeqprop, same, plain sweeps (no acceleration, no warm start)": (lambda: Aeqprop(beta=1.0), "float64", plain),
        "EqProp, centered (b = 0.5, lr = 0.1)": (lambda: EqProp(beta=0.5, lr=0.1), "float64", None),
        "oracle-gradient SGD (lr = 0.1)": (lambda: OracleSGD(lr=0.1), "float64", None),
    }
    acc = {name: [] for name in methods}
    acc["scikit-learn MLPClassifier (adam)"] = []
    acc[BACKPROP] = []
    ratios = {name: [] for name in methods}
    seconds = {name: [] for name in methods}
    bp_seconds = {"float64": [], "float32": []}
    clocks = {name: PhaseClock() for name in methods}
    twins: list[float] = []  # largest |theta_Aeqprop - theta_EqProp| per seed
    for seed in args.seeds:
        data = load_dataset("digits", seed=seed)
        trainers = {}
        for name, (make, dtype, acceleration) in methods.items():
            sub = HopfieldSubstrate(
                (64, args.hidden, 10), eps=0.1, seed=seed, tol=1e-3, dtype=dtype, acceleration=acceleration
            )
            trainers[name] = Trainer(sub, make(), data, epochs=args.epochs, batch_size=args.batch, seed=seed)
        bps = {dtype: BackpropMLP((64, args.hidden, 10), lr=0.1, seed=seed, dtype=dtype) for dtype in bp_seconds}
        bp = bps["float64"]
        records = {}
        for epoch in range(1, args.epochs + 1):
            t_bp = {dtype: net.epoch(data.x_train, data.y_train, args.batch) for dtype, net in bps.items()}
            for dtype, t in t_bp.items():
                bp_seconds[dtype].append(t)
            for name, trainer in trainers.items():
                records[name] = trainer.run_epoch(epoch, on_step=clocks[name])
                seconds[name].append(records[name].seconds)
                ratios[name].append(records[name].seconds / t_bp[methods[name][1]])
        for name in methods:
            acc[name].append(records[name].test_accuracy)
            print(f"  seed {seed}: {name}: {records[name].test_accuracy:.2%}", file=sys.stderr)
        acc["scikit-learn MLPClassifier (adam)"].append(sklearn_mlp(data, args.hidden, seed))
        acc[BACKPROP].append(bp.accuracy(data.x_test, data.labels_test))
        a, e = (trainers[name].substrate.parameters() for name in TWINS)
        twins.append(max(float(np.max(np.abs(a[n] - e[n]))) for n in a))

    cmd = "python benchmarks/core.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n`{cmd.strip()}`: digits, 64-{args.hidden}-10, batch {args.batch}, {args.epochs} epochs, "
        f"final-epoch test accuracy, seeds {args.seeds}, BLAS threads {args.threads or 'default'}\n"
    )
    print("| method | test accuracy (mean of seeds) | per seed |")
    print("|---|---|---|")
    for name, values in acc.items():
        print(f"| {name} | {np.mean(values):.2%} | {' / '.join(f'{v:.2%}' for v in values)} |")
    print(f"\n{TWINS[0]} and {TWINS[1]}: largest difference of their final parameters {max(twins):.1e}")
    print(
        "\nTime of one training epoch (median over epochs and seeds); each epoch's ratio is to the numpy "
        "backprop epoch of the same precision run just before it:\n"
    )
    print("| method | seconds per epoch | relative to backprop (median of per-epoch ratios) |")
    print("|---|---|---|")
    for dtype, values in bp_seconds.items():
        print(f"| numpy backprop MLP ({dtype}) | {np.median(values):.4f} | 1.0x |")
    for name in methods:
        print(f"| {name} | {np.median(seconds[name]):.4f} | {np.median(ratios[name]):.2f}x |")
    print("\nWhere a step's time goes (mean ms per step; 'other' is the protocol's own work and the trainer's):\n")
    phases = ["free", "beta1", "homeostasis", "beta2", "update"]
    print("| method | " + " | ".join(phases) + " | other | total | sweeps per step (free / beta1 / beta2) |")
    print("|---|" + "---|" * (len(phases) + 3))
    for name in methods:
        c = clocks[name]
        per = {p: c.seconds.get(p, 0.0) / c.steps * 1e3 for p in phases}
        total = float(np.sum(seconds[name])) / c.steps * 1e3
        cells = " | ".join(f"{per[p]:.3f}" if p in c.seconds else "-" for p in phases)
        sweeps = " / ".join(
            f"{c.sweeps[p] / c.steps:.1f}" if p in c.sweeps else "-" for p in ("free", "beta1", "beta2")
        )
        print(f"| {name} | {cells} | {total - sum(per.values()):.3f} | {total:.3f} | {sweeps} |")


if __name__ == "__main__":
    main()
