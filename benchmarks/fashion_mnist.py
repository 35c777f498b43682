"""Fashion-MNIST: centered EqProp and centered Aeqprop on a 784-H-10 Hopfield network against numpy
backprop of the same net, on the official 60k/10k split with a validation split carved from training.

Model selection uses the validation split only: each method's reported test accuracy is the one
at the epoch of its best validation accuracy (the final epoch's is shown beside it). With
``--select``, each method's step size is first chosen on the validation split of the first seed
(a grid: eps scaled for the two EqProp methods, lr for backprop; the best validation accuracy over
the epochs decides; ``--scales`` and ``--bp-lrs`` set it), then every seed trains with the chosen
ones (the first seed's runs are the grid's own, not trained again). Every method trains epoch by
epoch in lockstep with the backprop baseline, so each epoch-time ratio is taken under the same
machine load.

    python benchmarks/fashion_mnist.py [--epochs 20] [--hidden 1024] [--seeds 0] [--train-size 0]
        [--lr-schedule constant] [--cost squared] [--select [--scales 0.5 1 2 4 --bp-lrs 0.025 0.05 0.1 0.2]]

Timing only (the epoch-time table, no accuracies; evaluation cut to 1,000 samples):

    python benchmarks/fashion_mnist.py --timing --epochs 3

The convolutional substrate has its own script, benchmarks/fashion_mnist_conv.py.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from baselines import BackpropMLP, limit_blas_threads

from aeqprop.data import Dataset, load_dataset
from aeqprop.schedules import Schedule, ScheduleHook
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
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


#: The step-size grids of ``--select``: a factor on EPS (Aeqprop's eps, EqProp's lr = eps b) and backprop's lr.
SCALES = (0.5, 1.0, 2.0, 4.0)
BP_LRS = (0.025, 0.05, 0.1, 0.2)
AEQPROP, EQPROP, BACKPROP = "Aeqprop", "EqProp", "backprop"


def describe(method: str, scale: float, bp_lr: float) -> str:
    eps = {n: e * scale for n, e in EPS.items()}
    if method == AEQPROP:
        return f"Aeqprop, centered (b = {BETA}, eps = W {eps['W1']:g}/{eps['W2']:g}, b {eps['b1']:g}/{eps['b2']:g})"
    if method == EQPROP:
        scaled = "" if scale == 1.0 else f", eps x {scale:g}"
        return f"EqProp, centered (b = {BETA / 2}, lr = eps b{scaled})"
    return f"numpy backprop, same net (SGD, lr = {bp_lr:g})"


class Lockstep:
    """One seed: Aeqprop and EqProp (or one of them) at an eps scale, and backprop at its lr, epoch by epoch."""

    def __init__(
        self,
        args,
        data: Dataset,
        seed: int,
        scale: float,
        bp_lr: float,
        label: str = "",
        methods: tuple[str, ...] = (AEQPROP, EQPROP),
    ):
        self.args, self.data, self.seed, self.scale, self.bp_lr, self.label = args, data, seed, scale, bp_lr, label
        layers = (784, args.hidden, 10)
        eps = {n: e * scale for n, e in EPS.items()}
        lr = {n: e * BETA for n, e in eps.items()}  # EqProp at Aeqprop's first-order rate eps (beta2 - beta1)
        make = {AEQPROP: lambda: Aeqprop(beta=BETA), EQPROP: lambda: EqProp(beta=BETA / 2, lr=lr)}
        protocols = {name: make[name]() for name in methods}
        self.trainers = {
            name: Trainer(
                HopfieldSubstrate(layers, eps=eps, tol=1e-3, seed=seed, dtype=args.dtype, cost=args.cost),
                protocol,
                data,
                epochs=args.epochs,
                batch_size=args.batch,
                seed=seed,
                before_step=ScheduleHook(protocol, lr=args.lr_schedule),
            )
            for name, protocol in protocols.items()
        }
        self.bp = BackpropMLP(layers, lr=bp_lr, seed=seed, cost=args.cost, dtype=args.dtype)
        names = [*self.trainers, BACKPROP]
        self.history: dict[str, list] = {n: [] for n in names}
        self.seconds: dict[str, list] = {n: [] for n in names}
        self.ratios: dict[str, list] = {n: [] for n in self.trainers}
        self.sweeps: dict[str, list] = {n: [] for n in self.trainers}

    def run(self) -> Lockstep:
        data, schedule, epochs = self.data, Schedule.parse(self.args.lr_schedule, "lr schedule"), self.args.epochs
        for epoch in range(1, epochs + 1):
            self.bp.lr = self.bp_lr * schedule.factor(2 * epoch - 1, 2 * epochs)  # at the epoch's middle
            t_bp = self.bp.epoch(data.x_train, data.y_train, self.args.batch)
            self.seconds[BACKPROP].append(t_bp)
            self.history[BACKPROP].append(
                (epoch, self.bp.accuracy(data.x_val, data.labels_val), self.bp.accuracy(data.x_test, data.labels_test))
            )
            for name, trainer in self.trainers.items():
                rec = trainer.run_epoch(epoch)
                self.seconds[name].append(rec.seconds)
                self.ratios[name].append(rec.seconds / t_bp)
                self.sweeps[name].append(rec.sweeps_per_step)
                self.history[name].append((epoch, rec.val_accuracy, rec.test_accuracy))
            print(
                f"  {self.label}seed {self.seed} epoch {epoch}: "
                + ", ".join(f"{n} val {h[-1][1]:.2%}" for n, h in self.history.items())
                + " ("
                + " / ".join(f"{t[-1]:.1f}" for t in self.seconds.values())
                + " s)",
                file=sys.stderr,
                flush=True,
            )
        return self

    def best_val(self, name: str) -> tuple[float, int]:
        best = max(self.history[name], key=lambda r: r[1])
        return best[1], best[0]


def select(args) -> tuple[tuple[float, float, float], list[Lockstep]]:
    """The grids on the validation split of the first seed: (Aeqprop's scale, EqProp's scale, backprop's lr),
    each the best validation accuracy over its epochs, and the grid's runs; prints the table."""
    seed, scales, bp_lrs = args.seeds[0], args.scales, args.bp_lrs
    data = subset(load_dataset("fashion-mnist", seed=seed, data_dir=args.data_dir), args.train_size, seed)
    runs = [
        Lockstep(args, data, seed, scale, lr, label=f"select {i + 1}/{len(scales)}: ").run()
        for i, (scale, lr) in enumerate(zip(scales, bp_lrs, strict=True))
    ]
    print(
        f"\nStep sizes chosen on the validation split ({len(data.x_val)} samples, seed {seed}, {args.epochs} epochs, "
        "the best validation accuracy over the epochs; the test split is not looked at):\n"
    )
    print(
        "| eps scale (Aeqprop, EqProp) / backprop lr | Aeqprop val (epoch) | EqProp val (epoch) | backprop val (epoch) |"
    )
    print("|---|---|---|---|")
    for scale, lr, run in zip(scales, bp_lrs, runs, strict=True):
        cells = [f"{v:.2%} ({e})" for v, e in (run.best_val(n) for n in (AEQPROP, EQPROP, BACKPROP))]
        print(f"| {scale:g} / {lr:g} | " + " | ".join(cells) + " |")
    pick = {n: max(range(len(runs)), key=lambda i: runs[i].best_val(n)[0]) for n in (AEQPROP, EQPROP, BACKPROP)}
    chosen = scales[pick[AEQPROP]], scales[pick[EQPROP]], bp_lrs[pick[BACKPROP]]
    print(f"\nChosen: Aeqprop eps scale {chosen[0]:g}, EqProp eps scale {chosen[1]:g}, backprop lr {chosen[2]:g}")
    return chosen, runs


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
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--lr-schedule",
        default="constant",
        help="learning-rate schedule of every method (aeqprop/schedules.py), e.g. cosine:0.05; backprop's lr "
        "takes its value at each epoch's middle",
    )
    ap.add_argument(
        "--select",
        action="store_true",
        help="choose each method's step size on the validation split first (the grid of --scales and --bp-lrs)",
    )
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="--select's factors on eps")
    ap.add_argument(
        "--bp-lrs", type=float, nargs="+", default=list(BP_LRS), help="--select's backprop lrs, one per scale"
    )
    ap.add_argument("--timing", action="store_true", help="the epoch-time table only (evaluation on 1,000 samples)")
    args = ap.parse_args(argv)
    if len(args.scales) != len(args.bp_lrs):
        ap.error(f"--scales has {len(args.scales)} values and --bp-lrs {len(args.bp_lrs)}: give one lr per scale")
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    cmd = "python benchmarks/fashion_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (scale_aeq, scale_eq, bp_lr), grid = select(args) if args.select else ((1.0, 1.0, 0.05), [])
    names = {
        AEQPROP: describe(AEQPROP, scale_aeq, bp_lr),
        EQPROP: describe(EQPROP, scale_eq, bp_lr),
        BACKPROP: describe(BACKPROP, 1.0, bp_lr),
    }
    results: dict[str, list] = {n: [] for n in names}
    runs = []
    data = None
    for seed in args.seeds:
        data = subset(load_dataset("fashion-mnist", seed=seed, data_dir=args.data_dir), args.train_size, seed)
        if args.timing:
            data = timing_only(data)
        # the two EqProp methods may have chosen different scales: each runs in its own lockstep group then
        groups = {scale_aeq: [AEQPROP], scale_eq: [EQPROP]} if scale_aeq != scale_eq else {scale_aeq: [AEQPROP, EQPROP]}
        if grid and seed == args.seeds[0]:  # the grid trained this seed at every setting: its runs are these
            by_scale = {run.scale: run for run in grid}
            runs += [by_scale[scale_aeq]] + ([by_scale[scale_eq]] if scale_eq != scale_aeq else [])
            results[AEQPROP].append(selected(by_scale[scale_aeq].history[AEQPROP]))
            results[EQPROP].append(selected(by_scale[scale_eq].history[EQPROP]))
            bp_run = next(run for run in grid if run.bp_lr == bp_lr)
            results[BACKPROP].append(selected(bp_run.history[BACKPROP]))
            continue
        for scale, members in groups.items():
            run = Lockstep(args, data, seed, scale, bp_lr, methods=tuple(members)).run()
            runs.append(run)
            for name in members:
                results[name].append(selected(run.history[name]))
        results[BACKPROP].append(selected(runs[-1].history[BACKPROP]))

    layers = (784, args.hidden, 10)
    print(
        f"\n`{cmd.strip()}`: Fashion-MNIST, {'-'.join(map(str, layers))} Hopfield ({args.dtype}, {args.cost} cost), "
        f"batch {args.batch}, {args.epochs} epochs, lr schedule {args.lr_schedule}, trained on {len(data.x_train)} "
        f"samples, validation {len(data.x_val)}, official test split {len(data.x_test)}, seeds {args.seeds}, "
        f"BLAS threads {args.threads or 'default'}\n"
    )
    if not args.timing:
        print(
            "| method | test accuracy at best validation epoch (mean) | per seed (epoch) | final-epoch test accuracy (mean) |"
        )
        print("|---|---|---|---|")
        for key, rows in results.items():
            per = " / ".join(f"{t:.2%} ({e})" for t, _, e in rows)
            print(
                f"| {names[key]} | {np.mean([r[0] for r in rows]):.2%} | {per} | {np.mean([r[1] for r in rows]):.2%} |"
            )
    bp_s = float(np.median([t for run in runs for t in run.seconds[BACKPROP]]))
    print(
        f"\nTraining epoch time (median; each epoch's ratio is to the backprop epoch run just before it, "
        f"median backprop epoch {bp_s:.2f} s):\n"
    )
    print("| method | seconds per epoch | relative to backprop | relaxation sweeps per step |")
    print("|---|---|---|---|")
    print(f"| {names[BACKPROP]} | {bp_s:.2f} | 1.0x | - |")
    for key in (AEQPROP, EQPROP):
        mine = [run for run in runs if key in run.trainers]
        secs = [t for run in mine for t in run.seconds[key]]
        ratio = [r for run in mine for r in run.ratios[key]]
        sw = [v for run in mine for v in run.sweeps[key]]
        print(f"| {names[key]} | {np.median(secs):.2f} | {np.median(ratio):.1f}x | {np.mean(sw):.1f} |")


if __name__ == "__main__":
    main()
