"""Fashion-MNIST: centered EqProp and centered Aeqprop on a 784-H-10 Hopfield network against numpy
backprop of the same net, on the official 60k/10k split with a validation split carved from training;
and a short run of the convolutional Hopfield substrate.

Model selection uses the validation split only: each method's reported test accuracy is the one
at the epoch of its best validation accuracy (the final epoch's is shown beside it). Every method
trains epoch by epoch in lockstep with the backprop baseline, so each epoch-time ratio is taken
under the same machine load.

    python benchmarks/fashion_mnist.py [--epochs 20] [--hidden 1024] [--seeds 0] [--train-size 0]
        [--conv-epochs 0] [--conv-train-size 6000] [--lr-schedule constant]

Timing only (the epoch-time table, no accuracies; evaluation cut to 1,000 samples):

    python benchmarks/fashion_mnist.py --timing --epochs 3 --train-size 3200
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from baselines import BackpropMLP, limit_blas_threads

from aeqprop.data import Dataset, load_dataset
from aeqprop.schedules import Schedule, ScheduleHook
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from sim_backends.conv import ConvHopfieldSubstrate
from sim_backends.hopfield import HopfieldSubstrate

#: Compliance per tensor of Aeqprop (the reference code's 784-2048-10 MNIST settings), and nudging b.
EPS = {"W1": 0.1, "W2": 0.05, "b1": 0.02, "b2": 0.01}
BETA = 0.5


def subset(data: Dataset, n: int, seed: int) -> Dataset:
    """The first ``n`` of a seeded permutation of the training split (0: all); val and test untouched."""
    if not n or n >= len(data.x_train):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data.x_train))[:n])
    return Dataset(
        data.name,
        data.x_train[keep],
        data.labels_train[keep],
        data.x_test,
        data.labels_test,
        data.n_classes,
        data.x_val,
        data.labels_val,
        data.shape,
    )


def timing_only(data: Dataset, n: int = 1000) -> Dataset:
    """The same training split with test and validation cut to ``n`` samples (timing runs: the
    evaluation after each epoch is outside the timed training, but costs wall time)."""
    return Dataset(
        data.name,
        data.x_train,
        data.labels_train,
        data.x_test[:n],
        data.labels_test[:n],
        data.n_classes,
        None if data.x_val is None else data.x_val[:n],
        None if data.labels_val is None else data.labels_val[:n],
        data.shape,
    )


def selected(history) -> tuple[float, float, int]:
    """(test accuracy at the best-validation epoch, final test accuracy, that epoch)."""
    best = max(history, key=lambda r: r[1])
    return best[2], history[-1][2], best[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--train-size", type=int, default=0, help="train on this many samples (0: all 54,000)")
    ap.add_argument("--cost", default="squared", choices=["squared", "cross-entropy"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: the library's default)")
    ap.add_argument("--conv-epochs", type=int, default=0, help="epochs of the conv substrate (0: skip it)")
    ap.add_argument("--conv-train-size", type=int, default=6000)
    ap.add_argument("--conv-channels", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--lr-schedule",
        default="constant",
        help="learning-rate schedule of every method (aeqprop/schedules.py), e.g. cosine:0.05; backprop's lr "
        "takes its value at each epoch's middle",
    )
    ap.add_argument("--timing", action="store_true", help="the epoch-time table only (evaluation on 1,000 samples)")
    args = ap.parse_args(argv)
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    layers = (784, args.hidden, 10)
    schedule = Schedule.parse(args.lr_schedule, "lr schedule")
    lr = {n: e * BETA for n, e in EPS.items()}  # EqProp at Aeqprop's first-order rate eps (beta2 - beta1)
    methods = {
        f"Aeqprop, centered (b = {BETA}, eps = W {EPS['W1']}/{EPS['W2']}, b {EPS['b1']}/{EPS['b2']})": lambda: Aeqprop(
            beta=BETA
        ),
        f"EqProp, centered (b = {BETA / 2}, lr = eps b)": lambda: EqProp(beta=BETA / 2, lr=lr),
    }
    bp_name = "numpy backprop, same net (SGD, lr = 0.05)"
    results = {name: [] for name in [*methods, bp_name]}
    ratios = {name: [] for name in methods}
    seconds = {name: [] for name in [*methods, bp_name]}
    sweeps = {name: [] for name in methods}
    data = None
    for seed in args.seeds:
        data = subset(load_dataset("fashion-mnist", seed=seed, data_dir=args.data_dir), args.train_size, seed)
        if args.timing:
            data = timing_only(data)
        trainers = {}
        for name, make in methods.items():
            protocol = make()
            trainers[name] = Trainer(
                HopfieldSubstrate(layers, eps=EPS, tol=1e-3, seed=seed, dtype=args.dtype, cost=args.cost),
                protocol,
                data,
                epochs=args.epochs,
                batch_size=args.batch,
                seed=seed,
                before_step=ScheduleHook(protocol, lr=args.lr_schedule),
            )
        bp = BackpropMLP(layers, lr=0.05, seed=seed, cost=args.cost, dtype=args.dtype)
        history = {name: [] for name in results}
        for epoch in range(1, args.epochs + 1):
            bp.lr = 0.05 * schedule.factor(2 * epoch - 1, 2 * args.epochs)  # at the epoch's middle
            t_bp = bp.epoch(data.x_train, data.y_train, args.batch)
            seconds[bp_name].append(t_bp)
            history[bp_name].append(
                (epoch, bp.accuracy(data.x_val, data.labels_val), bp.accuracy(data.x_test, data.labels_test))
            )
            for name, trainer in trainers.items():
                rec = trainer.run_epoch(epoch)
                seconds[name].append(rec.seconds)
                ratios[name].append(rec.seconds / t_bp)
                sweeps[name].append(rec.sweeps_per_step)
                history[name].append((epoch, rec.val_accuracy, rec.test_accuracy))
                print(
                    f"  seed {seed} epoch {epoch}: {name}: val {rec.val_accuracy:.2%} test {rec.test_accuracy:.2%} "
                    f"({rec.seconds:.1f} s, backprop {t_bp:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        for name in results:
            results[name].append(selected(history[name]))

    cmd = "python benchmarks/fashion_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"\n`{cmd.strip()}`: Fashion-MNIST, {'-'.join(map(str, layers))} Hopfield ({args.dtype}, {args.cost} cost), "
        f"batch {args.batch}, {args.epochs} epochs, lr schedule {args.lr_schedule}, trained on {len(data.x_train)} samples, validation "
        f"{len(data.x_val)}, official test split {len(data.x_test)}, seeds {args.seeds}, "
        f"BLAS threads {args.threads or 'default'}\n"
    )
    if not args.timing:
        print(
            "| method | test accuracy at best validation epoch (mean) | per seed (epoch) | final-epoch test accuracy (mean) |"
        )
        print("|---|---|---|---|")
        for name, rows in results.items():
            per = " / ".join(f"{t:.2%} ({e})" for t, _, e in rows)
            print(f"| {name} | {np.mean([r[0] for r in rows]):.2%} | {per} | {np.mean([r[1] for r in rows]):.2%} |")
    bp_s = float(np.median(seconds[bp_name]))
    print(
        f"\nTraining epoch time (median; each epoch's ratio is to the backprop epoch run just before it, "
        f"median backprop epoch {bp_s:.2f} s):\n"
    )
    print("| method | seconds per epoch | relative to backprop | relaxation sweeps per step |")
    print("|---|---|---|---|")
    print(f"| {bp_name} | {bp_s:.2f} | 1.0x | - |")
    for name in methods:
        print(
            f"| {name} | {np.median(seconds[name]):.2f} | {np.median(ratios[name]):.1f}x | {np.mean(sweeps[name]):.1f} |"
        )
    if args.conv_epochs:
        conv_run(args, cmd)


def conv_run(args, cmd: str) -> None:
    """The conv substrate on a training subset: accuracy on the official test split, and its time."""
    seed = args.seeds[0]
    data = subset(load_dataset("fashion-mnist", seed=seed, data_dir=args.data_dir), args.conv_train_size, seed)
    sub = ConvHopfieldSubstrate(
        (784, 10),
        input_shape=(1, 28, 28),
        channels=tuple(args.conv_channels),
        kernel=5,
        pool=2,
        cost=args.cost,
        eps=0.1,
        tol=1e-3,
        seed=seed,
    )
    trainer = Trainer(sub, Aeqprop(beta=BETA), data, epochs=args.conv_epochs, batch_size=args.batch, seed=seed)
    t0 = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - t0
    best = max(result.history, key=lambda r: r.val_accuracy)
    print(
        f"\nConv Hopfield ({sub.info.description}), centered Aeqprop b = {BETA}, eps = 0.1, batch {args.batch}, "
        f"{args.conv_epochs} epochs on {len(data.x_train)} training samples, seed {seed} (same command):\n"
    )
    print(
        "| substrate | test accuracy at best validation epoch (epoch) | final test accuracy | training s per epoch | "
        "wall time incl. evaluation |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| conv Hopfield, average pooling | {best.test_accuracy:.2%} ({best.epoch}) | {result.final.test_accuracy:.2%} | "
        f"{np.median([r.seconds for r in result.history]):.0f} | {wall / 60:.1f} min |"
    )


if __name__ == "__main__":
    main()
