"""Fashion-MNIST on the convolutional Hopfield substrate, trained by centered Aeqprop on the full
training split (official 60k/10k split, 6,000 training images held out for validation).

Model selection uses the validation split only: the validation split is evaluated after each epoch
and theta kept; the official test split is evaluated at the epoch of the best validation accuracy
(the reported figure) and at the final epoch. Progress per epoch goes to stderr; the table to
stdout. The defaults are the settings of README.md's figure and of
examples/fashion_mnist_conv.toml.

    python benchmarks/fashion_mnist_conv.py [--epochs 20] [--channels 32 64] [--hidden 512]
        [--pooling max average] [--cost cross-entropy] [--eps 0.1 | --eps W=0.1,b=0.02] [--beta 0.5]
        [--lr-schedule cosine:0.01] [--beta-schedule step:0.5:0.5 [--hold-step]] [--max-sweeps 1000]
        [--dtype float32] [--threads 1] [--train-size 0]

A long run can go on over several invocations: ``--state FILE`` saves the run after every epoch
(theta, the knobs, the order's random state, the validation curve, the best-validation theta) and
a rerun of the same command picks it up there, to the same bits as one uninterrupted run;
``--stop-after N`` ends an invocation after N epochs (the schedule still spans --epochs):

    python benchmarks/fashion_mnist_conv.py --epochs 20 --state conv.npz [--stop-after 5]

Timing only (no accuracy): the same steps of centered Aeqprop with plain float64 sweeps, heavy-ball
float64 sweeps and heavy-ball float32 sweeps, from parameters trained for --warmup steps first
(the sweeps a relaxation needs grow as the weights do):

    python benchmarks/fashion_mnist_conv.py --timing 200 --warmup 1000
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from baselines import limit_blas_threads
from fashion_mnist import subset

from aeqprop.data import Dataset, load_dataset
from aeqprop.errors import ConfigurationError
from aeqprop.schedules import ScheduleHook
from aeqprop.snapshot import restore, snapshot
from aeqprop.trainer import EpochRecord, Trainer, evaluate
from protocols.aeqprop import Aeqprop
from protocols.oracle_sgd import OracleSGD
from sim_backends.conv import ConvHopfieldSubstrate


def parse_eps(text: str) -> float | dict[str, float]:
    """``0.1`` or ``W1=0.1,W=0.3,b=0.01`` (per tensor, or per kind "W" / "b")."""
    if "=" not in text:
        return float(text)
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if not name.strip() or not value.strip():
            raise ConfigurationError(f"--eps {text!r}: give NAME=VALUE pairs separated by commas, e.g. W=0.3,b=0.01")
        out[name.strip()] = float(value)
    return out


def parser() -> argparse.ArgumentParser:
    """The options; their defaults are examples/fashion_mnist_conv.toml's settings (a test holds them equal)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--hidden", type=int, nargs="*", default=[], help="dense hidden layers after the conv stack")
    ap.add_argument("--kernel", type=int, default=5)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument(
        "--pooling",
        nargs="+",
        default=["max", "average"],
        help="average or max: one for every conv layer, or one per layer",
    )
    ap.add_argument("--cost", default="cross-entropy", choices=["squared", "cross-entropy"])
    ap.add_argument("--eps", default="0.1", help="compliance: a number or NAME=VALUE,... per tensor")
    ap.add_argument("--beta", type=float, default=0.5, help="nudging b of centered Aeqprop (-b/2, +b/2)")
    ap.add_argument("--lr-schedule", default="cosine:0.01", help="schedule of the release (aeqprop/schedules.py)")
    ap.add_argument("--beta-schedule", default=None, help="schedule of b, e.g. step:0.5:0.5 (none: b throughout)")
    ap.add_argument(
        "--hold-step",
        action="store_true",
        help="divide eps by b's factor, so the step eps b follows --lr-schedule only",
    )
    ap.add_argument(
        "--rule",
        default="aeqprop",
        choices=["aeqprop", "oracle"],
        help="oracle: SGD on the true gradient at the same rate eps b (a diagnostic of the network itself)",
    )
    ap.add_argument(
        "--oracle-tol",
        type=float,
        default=None,
        help="--rule oracle: settle the free equilibrium and solve for the gradient to this tolerance "
        "(default: 1e-13 and 1e-12, a checking oracle's)",
    )
    ap.add_argument(
        "--augment",
        default="none",
        choices=["none", "flip"],
        help="flip: mirror each training image left-right with probability 1/2",
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--max-sweeps", type=int, default=1000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (0: the library's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=0, help="train on this many samples (0: all 54,000)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--timing", type=int, default=0, help="time this many steps per relaxation setting instead")
    ap.add_argument("--warmup", type=int, default=1000, help="steps trained before the timing")
    ap.add_argument("--state", type=Path, default=None, help="save the run here after every epoch; resume from it")
    ap.add_argument("--stop-after", type=int, default=0, help="end this invocation after this many epochs (0: none)")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    limiter = limit_blas_threads(args.threads)  # noqa: F841  (kept alive for the run)
    eps = parse_eps(args.eps)
    data = subset(load_dataset("fashion-mnist", seed=args.seed, data_dir=args.data_dir), args.train_size, args.seed)
    cmd = "python benchmarks/fashion_mnist_conv.py " + " ".join(argv if argv is not None else sys.argv[1:])

    substrate = functools.partial(build, args, data)  # (dtype, acceleration=True)

    if args.timing:
        if args.rule != "aeqprop":
            raise ConfigurationError("--timing times Aeqprop's relaxations: drop --rule oracle")
        timing(args, data, substrate, cmd)
        return
    sub = substrate(args.dtype)
    protocol = make_protocol(args, sub)
    # The trainer evaluates its "test" split after each epoch: here the validation split, which alone
    # selects the epoch; theta is kept per epoch and the official test split evaluated afterwards,
    # at the best-validation epoch and the final one (each epoch's test evaluation would cost
    # another 10,000 relaxations).
    held_out = Dataset(
        data.name, data.x_train, data.labels_train, data.x_val, data.labels_val, data.n_classes, shape=data.shape
    )
    trainer = Trainer(
        sub,
        protocol,
        held_out,
        epochs=args.epochs,
        batch_size=args.batch,
        seed=args.seed,
        before_step=ScheduleHook(
            protocol, lr=args.lr_schedule, beta=args.beta_schedule, substrate=sub, hold_step=args.hold_step
        ),
        augment=args.augment,
    )
    t0 = time.perf_counter()
    run = (
        RunState.load(args.state, fingerprint(args), sub, trainer) if args.state and args.state.exists() else RunState()
    )
    if run.val:
        print(f"  resumed from {args.state} after epoch {len(run.val)}", file=sys.stderr, flush=True)
    for epoch in range(len(run.val) + 1, args.epochs + 1):
        rec = trainer.run_epoch(epoch)
        assert rec is not None  # no stop hook
        run.add(rec, sub)  # rec.test_accuracy is the validation split's (see held_out)
        print(
            f"  epoch {epoch}: train {rec.train_accuracy:.2%} val {rec.test_accuracy:.2%} ({rec.seconds:.0f} s, "
            f"{rec.sweeps_per_step:.1f} sweeps per step, {rec.unsettled_phases} relaxations unsettled at the cap, "
            f"{(run.wall + time.perf_counter() - t0) / 60:.1f} min)"
            + (f"; {sub.oracle_retries} oracle solves redone at 1e-13 so far" if args.oracle_tol is not None else ""),
            file=sys.stderr,
            flush=True,
        )
        if args.state:
            run.save(args.state, fingerprint(args), sub, trainer, time.perf_counter() - t0)
        if args.stop_after and epoch - run.first + 1 >= args.stop_after and epoch < args.epochs:
            print(f"  stopped after epoch {epoch}; rerun the same command to go on", file=sys.stderr, flush=True)
            return
    at = int(np.argmax(run.val)) + 1
    final_theta = sub.parameters()
    tests = {}
    for epoch, theta in sorted({at: run.best, args.epochs: final_theta}.items()):
        sub.set_parameters(theta)
        tests[epoch] = evaluate(sub, data.x_test, data.labels_test)[1]
        print(f"  test accuracy at epoch {epoch}: {tests[epoch]:.2%}", file=sys.stderr, flush=True)
    best, final = tests[at], tests[args.epochs]
    wall = run.wall + time.perf_counter() - t0
    val, seconds, sweeps = run.val, run.seconds, run.sweeps
    print(
        f"\n`{cmd.strip()}`: Fashion-MNIST, trained on {len(data.x_train)} images, validation {len(data.x_val)}, "
        f"official test split {len(data.x_test)}, seed {args.seed}\n"
    )
    print(
        "| architecture | settings | epochs | test accuracy at best validation epoch (epoch; its validation accuracy) "
        "| final test accuracy "
        "| training s per epoch (median) | sweeps per step | relaxations unsettled at the sweep cap "
        "| total wall time incl. evaluation | BLAS threads |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    eps_text = args.eps if isinstance(eps, dict) else f"{eps:g}"
    rule = (
        f"SGD on the oracle gradient at lr = eps b (b = {args.beta:g}"
        + (f", oracle tol {args.oracle_tol:g})" if args.oracle_tol is not None else ")")
        if args.rule == "oracle"
        else f"centered Aeqprop b = {args.beta:g}"
    )
    settings = (
        rule
        + (
            f" (schedule {args.beta_schedule}{', eps / its factor' if args.hold_step else ''})"
            if args.beta_schedule
            else ""
        )
        + f", eps {eps_text}, {'lr' if args.rule == 'oracle' else 'release'} schedule {args.lr_schedule}, batch {args.batch}, "
        f"{args.dtype}, tol {args.tol:g}, max_sweeps {args.max_sweeps}"
        + (", random left-right flips" if args.augment == "flip" else "")
    )
    counted = [n for n in run.unsettled if n is not None]
    unsettled = f"{sum(counted)} of {3 * trainer.steps_per_epoch() * len(counted)}" + (
        f" (epochs {len(run.val) - len(counted) + 1}-{len(run.val)})" if len(counted) < len(run.val) else ""
    )
    print(
        f"| {sub.info.description} ({args.kernel}x{args.kernel} conv, {args.pool}x{args.pool} {'/'.join(args.pooling)} pooling) "
        f"| {settings} | {args.epochs} | {best:.2%} ({at}; validation {val[at - 1]:.2%}) | {final:.2%} | {np.median(seconds):.0f} "
        f"| {np.mean(sweeps):.1f} | {unsettled} | {wall / 60:.1f} min | {args.threads or 'default'} |"
    )


def make_protocol(args: argparse.Namespace, sub: ConvHopfieldSubstrate) -> Aeqprop | OracleSGD:
    """Centered Aeqprop, or (``--rule oracle``) SGD on the oracle gradient at Aeqprop's first-order
    rate eps b per tensor: the same network, schedule and batches with the estimator taken out."""
    if args.rule == "aeqprop":
        if args.oracle_tol is not None:
            raise ConfigurationError("--oracle-tol sets the oracle's tolerance: give it with --rule oracle")
        return Aeqprop(beta=args.beta)
    if args.beta_schedule or args.hold_step:
        raise ConfigurationError("--rule oracle has no nudge: drop --beta-schedule and --hold-step")
    if args.oracle_tol is not None:
        sub.oracle_tol = sub.oracle_rtol = args.oracle_tol
    return OracleSGD(lr={n: float(e) * args.beta for n, e in sub.eps.items()})


def build(args: argparse.Namespace, data: Dataset, dtype: str, acceleration: bool = True) -> ConvHopfieldSubstrate:
    """The conv network the options describe, for ``data``'s image shape and classes."""
    return ConvHopfieldSubstrate(
        (data.n_features, *args.hidden, data.n_classes),
        input_shape=data.shape,
        channels=tuple(args.channels),
        kernel=args.kernel,
        pool=args.pool,
        pooling=args.pooling[0] if len(args.pooling) == 1 else args.pooling,
        cost=args.cost,
        eps=parse_eps(args.eps),
        tol=args.tol,
        max_sweeps=args.max_sweeps,
        seed=args.seed,
        dtype=dtype,
        acceleration=acceleration,
    )


def fingerprint(args: argparse.Namespace) -> str:
    """The settings a saved run must share with the command resuming it (where the data lies, and
    how the run is split over invocations, aside)."""
    kept = {k: v for k, v in sorted(vars(args).items()) if k not in ("state", "stop_after", "data_dir")}
    later = (
        ("beta_schedule", None),
        ("hold_step", False),
        ("rule", "aeqprop"),
        ("augment", "none"),
        ("oracle_tol", None),
    )  # options added later
    for k, unset in later:  # at their defaults they are left out, so older saves resume
        if kept.get(k, unset) == unset:
            kept.pop(k, None)
    return json.dumps(kept, default=str)


def read_state(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """A saved run's record (its settings as JSON under "settings") and its arrays by kind:
    "theta", "knobs" and "best" (the best-validation theta)."""
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        part = {
            kind: {n.partition(".")[2]: f[n] for n in f.files if n.startswith(kind + ".")}
            for kind in ("theta", "knobs", "best")
        }
    return meta, part


def saved_settings(meta: dict[str, Any]) -> argparse.Namespace:
    """A saved run's settings as the parsed command's namespace: the options a save leaves out at
    their defaults (:func:`fingerprint`) put back."""
    return argparse.Namespace(**(vars(parser().parse_args([])) | json.loads(meta["settings"])))


def start_from(
    ap: argparse.ArgumentParser, args: argparse.Namespace, own: tuple[str, ...]
) -> tuple[argparse.Namespace, dict[str, np.ndarray] | None, str]:
    """What a diagnostic script starts from: its parsed options and the initial theta, or with
    ``--start STATE`` the saved run's network and settings, its theta, with the script's own options
    (``own``), --data-dir and an --eps given here (which replaces the run's rate). A setting of the
    run given beside --start stops the script with one line: the saved run's would silently win.
    Returns (settings, theta or None, what it starts from); the scripts set ``eps`` to None by default."""
    if args.start is None:
        if args.eps is None:
            args.eps = parser().get_default("eps")
        return args, None, "the initial theta"
    defaults = vars(parser().parse_args([]))
    allowed = {*own, "start", "data_dir", "eps"}
    given = [k for k, v in vars(args).items() if k in defaults and k not in allowed and v != defaults[k]]
    if given:
        ap.error(f"--start takes the saved run's network and settings: drop --{given[0].replace('_', '-')}")
    meta, part = read_state(args.start)
    kept = {k: getattr(args, k) for k in (*own, "start", "data_dir")}
    if args.eps is not None:
        kept["eps"] = args.eps
    settings = argparse.Namespace(**(vars(saved_settings(meta)) | kept))
    return settings, part["theta"], f"the theta after epoch {len(meta['val'])} of a saved run"


@dataclass
class RunState:
    """The run so far: per epoch the validation accuracy, training seconds, sweeps per step and
    relaxations that ended at the sweep cap (None for epochs saved before that was counted); the
    theta of the first best validation epoch; the wall time of earlier invocations."""

    val: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    sweeps: list[float] = field(default_factory=list)
    unsettled: list[int | None] = field(default_factory=list)
    best: dict[str, np.ndarray] = field(default_factory=dict)
    wall: float = 0.0
    first: int = 1  # the first epoch this invocation trains

    def add(self, rec: EpochRecord, sub: ConvHopfieldSubstrate) -> None:
        if not self.val or rec.test_accuracy > max(self.val):  # the first epoch of the best, as argmax
            self.best = sub.parameters()
        self.val.append(rec.test_accuracy)
        self.seconds.append(rec.seconds)
        self.sweeps.append(rec.sweeps_per_step)
        self.unsettled.append(rec.unsettled_phases)

    def save(self, path: Path, key: str, sub: ConvHopfieldSubstrate, trainer: Trainer, elapsed: float) -> None:
        """Write the run (atomically: a stop mid-write leaves the previous save)."""
        snap = snapshot(sub, knobbed=True)
        arrays = {f"theta.{n}": v for n, v in snap["parameters"].items()}
        arrays |= {f"knobs.{n}": v for n, v in (snap["knobs"] or {}).items()}
        arrays |= {f"best.{n}": v for n, v in self.best.items()}
        meta = {
            "settings": key,
            "val": self.val,
            "seconds": self.seconds,
            "sweeps": self.sweeps,
            "unsettled": self.unsettled,
            "wall": self.wall + elapsed,
            "order": trainer.rng.bit_generator.state,
        }
        if trainer.augment != "none":
            meta["augment"] = trainer.augment_rng.bit_generator.state
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, key: str, sub: ConvHopfieldSubstrate, trainer: Trainer) -> RunState:
        """The saved run, its theta and knobs put back into ``sub`` and its order's state into ``trainer``."""
        meta, part = read_state(path)
        if meta["settings"] != key:
            raise SystemExit(
                f"{path} was saved by a run with other settings; give another --state or the same settings"
            )
        restore(sub, part["theta"], part["knobs"] or None)
        trainer.rng.bit_generator.state = meta["order"]
        if trainer.augment != "none":
            trainer.augment_rng.bit_generator.state = meta["augment"]
        unsettled = meta.get("unsettled", [None] * len(meta["val"]))
        run = cls(meta["val"], meta["seconds"], meta["sweeps"], unsettled, part["best"], meta["wall"])
        run.first = len(run.val) + 1
        return run


def timing(args: argparse.Namespace, data: Dataset, substrate: Callable[..., ConvHopfieldSubstrate], cmd: str) -> None:
    """Milliseconds and sweeps per step of each relaxation setting, the same steps from the same theta."""
    x, y, B = data.x_train, data.y_train, args.batch
    warm = substrate("float64")
    protocol = Aeqprop(beta=args.beta)
    for k in range(args.warmup):
        i = (k * B) % (len(x) - B)
        protocol.step(warm, x[i : i + B], y[i : i + B])
    theta = warm.parameters()
    rows = []
    for name, dtype, accel in (
        ("float64, plain block coordinate descent", "float64", False),
        ("float64, heavy-ball sweeps", "float64", True),
        ("float32, heavy-ball sweeps (default of the figure)", "float32", True),
    ):
        sub = substrate(dtype, accel)
        sub.set_parameters(theta)
        sub.set_knobs(theta)
        start = args.warmup * B
        t0, sweeps = time.perf_counter(), 0
        for k in range(args.timing):
            i = (start + k * B) % (len(x) - B)
            sweeps += sum(Aeqprop(beta=args.beta).step(sub, x[i : i + B], y[i : i + B]).sweeps.values())
        rows.append((name, (time.perf_counter() - t0) / args.timing, sweeps / args.timing))
    print(
        f"\n`{cmd.strip()}`: {warm.info.description}, centered Aeqprop b = {args.beta:g}, batch {B}, tol {args.tol:g}, "
        f"{args.timing} steps each from the parameters after {args.warmup} training steps, BLAS threads "
        f"{args.threads or 'default'}\n"
    )
    print("| relaxation | ms per step | sweeps per step (three phases) | speed-up over plain float64 |")
    print("|---|---|---|---|")
    for name, seconds, sweeps in rows:
        print(f"| {name} | {seconds * 1e3:.1f} | {sweeps:.1f} | {rows[0][1] / seconds:.1f}x |")


if __name__ == "__main__":
    main()
