"""Digits accuracy of centered Aeqprop, centered EqProp and oracle-gradient SGD on the
same Hopfield network, against scikit-learn's MLPClassifier of the same hidden width;
and the time of one training epoch against a plain numpy backprop MLP, same run.

    python benchmarks/core.py [--epochs 30] [--hidden 512] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from protocols.oracle_sgd import OracleSGD
from sim_backends.hopfield import HopfieldSubstrate


def backprop_mlp(data, hidden: int, epochs: int, batch: int, lr: float, seed: int):
    """A plain numpy MLP of the same shape: hard-sigmoid hidden layer, linear outputs,
    squared cost, SGD. Returns (test accuracy, seconds per epoch)."""
    rng = np.random.default_rng(seed)
    n_in, n_out = data.n_features, data.n_classes
    W1 = rng.uniform(-1, 1, (n_in, hidden)) * 0.5 * np.sqrt(6 / (n_in + hidden))
    W2 = rng.uniform(-1, 1, (hidden, n_out)) * 0.5 * np.sqrt(6 / (hidden + n_out))
    b1, b2 = np.zeros(hidden), np.zeros(n_out)
    x, y = data.x_train, data.y_train
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            xb, yb = x[order[i:i + batch]], y[order[i:i + batch]]
            pre = xb @ W1 + b1
            h = np.clip(pre, 0.0, 1.0)
            o = h @ W2 + b2
            d_o = (o - yb) / len(xb)
            d_h = (d_o @ W2.T) * ((pre > 0) & (pre < 1))
            W2 -= lr * (h.T @ d_o)
            b2 -= lr * d_o.sum(0)
            W1 -= lr * (xb.T @ d_h)
            b1 -= lr * d_h.sum(0)
        times.append(time.perf_counter() - t0)
    o = np.clip(data.x_test @ W1 + b1, 0, 1) @ W2 + b2
    return float(np.mean(o.argmax(1) == data.labels_test)), float(np.median(times))


def sklearn_mlp(data, hidden: int, seed: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), random_state=seed, max_iter=300)
        clf.fit(data.x_train, data.labels_train)
    return float(clf.score(data.x_test, data.labels_test))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)

    protocols = {
        "Aeqprop, centered (b = 1, eps = 0.1, native homeostasis)": lambda: Aeqprop(beta=1.0),
        "EqProp, centered (b = 0.5, lr = 0.1)": lambda: EqProp(beta=0.5, lr=0.1),
        "oracle-gradient SGD (lr = 0.1)": lambda: OracleSGD(lr=0.1),
    }
    acc = {name: [] for name in protocols}
    epoch_s = {name: [] for name in protocols}
    acc["scikit-learn MLPClassifier (adam)"] = []
    acc["numpy backprop MLP (same net, SGD lr = 0.1)"] = []
    bp_s = []
    for seed in args.seeds:
        data = load_dataset("digits", seed=seed)
        for name, make in protocols.items():
            sub = HopfieldSubstrate((64, args.hidden, 10), eps=0.1, seed=seed, tol=1e-3)
            result = Trainer(sub, make(), data, epochs=args.epochs, batch_size=args.batch, seed=seed).run()
            acc[name].append(result.final.test_accuracy)
            epoch_s[name].append(float(np.median([r.seconds for r in result.history])))
            print(f"  seed {seed}: {name}: {result.final.test_accuracy:.2%}", file=sys.stderr)
        acc["scikit-learn MLPClassifier (adam)"].append(sklearn_mlp(data, args.hidden, seed))
        a, s = backprop_mlp(data, args.hidden, args.epochs, args.batch, 0.1, seed)
        acc["numpy backprop MLP (same net, SGD lr = 0.1)"].append(a)
        bp_s.append(s)

    cmd = "python benchmarks/core.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n`{cmd.strip()}`: digits, 64-{args.hidden}-10, batch {args.batch}, {args.epochs} epochs, "
          f"final-epoch test accuracy, seeds {args.seeds}\n")
    print("| method | test accuracy (mean of seeds) | per seed |")
    print("|---|---|---|")
    for name, values in acc.items():
        print(f"| {name} | {np.mean(values):.2%} | {' / '.join(f'{v:.2%}' for v in values)} |")
    bp = float(np.median(bp_s))
    print(f"\nTime of one training epoch (median), against the numpy backprop epoch measured in the same run ({bp * 1e3:.1f} ms):\n")
    print("| method | seconds per epoch | relative to backprop |")
    print("|---|---|---|")
    print(f"| numpy backprop MLP | {bp:.4f} | 1.0x |")
    for name, values in epoch_s.items():
        s = float(np.median(values))
        print(f"| {name} | {s:.4f} | {s / bp:.1f}x |")


if __name__ == "__main__":
    main()
