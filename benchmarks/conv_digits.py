"""The conv substrate's default run on digits (``aeqprop train --backend conv``), and how its
compliance was chosen.

The conv backend's default options (aeqprop/config.py, BACKEND_DEFAULTS) are one 3x3 conv of 32
channels and 2x2 max pooling (the 8x8 digits fit no deeper stack of 5x5 convs), a softmax readout,
float32, with the default run's protocol (centered Aeqprop, b = 1, native homeostasis) and schedule.
Its compliance eps is chosen here on a validation split carved from the training split (20 %),
mean over the seeds; the test split is used only for the chosen eps. The default Hopfield run
(``aeqprop train``) on the same seeds is the baseline; and the conv run once more with the top
layer's update under the readout as it was before the safe step (sim_backends/readout.py,
readout_step), counting the relaxations cut off at the sweep cap.

    python benchmarks/conv_digits.py [--eps 0.1 0.3 1.0] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from aeqprop import session
from aeqprop.config import BACKEND_DEFAULTS, load_config
from aeqprop.data import Dataset
from aeqprop.parts import build
from aeqprop.trainer import Trainer


def validation_accuracy(eps: float, seed: int, validation: float) -> float:
    """Final accuracy on the validation split of the conv default run at this eps, trained on the rest."""
    cfg = load_config(
        None,
        fields={
            "substrate.backend": "conv",
            "substrate.options.eps": eps,
            "seed": seed,
            "dataset.validation": validation,
        },
    )
    built = build(cfg)
    d = built.data
    assert d.x_val is not None and d.labels_val is not None
    held_out = Dataset(d.name, d.x_train, d.labels_train, d.x_val, d.labels_val, d.n_classes, shape=d.shape)
    try:
        trainer = Trainer(
            built.substrate,
            built.protocol,
            held_out,
            cfg.schedule.epochs,
            cfg.schedule.batch_size,
            seed=cfg.seed,
            before_step=built.hook,
        )
        return trainer.run().final.test_accuracy
    finally:
        built.substrate.close()


def default_run(seed: int, runs: str, fields: dict[str, Any]) -> tuple[float, int]:
    """What ``aeqprop train`` with these flags prints: final test accuracy, and the relaxations
    that ended at the sweep cap over the run (its warning)."""
    cfg = load_config(None, fields={"runs": runs, "seed": seed, **fields})
    outcome = session.start(cfg, progress=False)
    return outcome.result.final.test_accuracy, sum(r.unsettled_phases for r in outcome.result.history)


@contextlib.contextmanager
def plain_readout_iteration() -> Iterator[None]:
    """The top layer's update under the readout's force as it was before the safe step
    (sim_backends.readout.readout_step): the fixed-point iteration alone, for comparison."""
    import sim_backends.conv_relax as relax

    kept = relax.readout_step
    relax.readout_step = lambda beta, w: 1.0
    try:
        yield
    finally:
        relax.readout_step = kept


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3, 1.0], help="compliances compared")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--validation", type=float, default=0.2, help="fraction of the training split held out")
    args = ap.parse_args(argv)
    cmd = "python benchmarks/conv_digits.py " + " ".join(argv if argv is not None else sys.argv[1:])

    selection = {}
    for eps in args.eps:
        accs = [validation_accuracy(eps, s, args.validation) for s in args.seeds]
        selection[eps] = accs
        print(f"  eps {eps:g}: validation {' '.join(f'{a:.2%}' for a in accs)}", file=sys.stderr, flush=True)
    chosen = max(args.eps, key=lambda e: float(np.mean(selection[e])))
    rows = []
    conv = {"substrate.backend": "conv", "substrate.options.eps": chosen}
    with tempfile.TemporaryDirectory() as runs:
        for name, fields, context in (
            (f"conv, eps {chosen:g} (chosen)", conv, contextlib.nullcontext()),
            (f"conv, eps {chosen:g}, the readout's plain fixed-point iteration", conv, plain_readout_iteration()),
            ("Hopfield 64-512-10 (`aeqprop train`)", {}, contextlib.nullcontext()),
        ):
            t0 = time.perf_counter()
            with context:
                results = [default_run(s, runs, fields) for s in args.seeds]
            accs, unsettled = [a for a, _ in results], sum(n for _, n in results)
            rows.append((name, accs, unsettled, (time.perf_counter() - t0) / len(args.seeds)))
            print(f"  {name}: test {' '.join(f'{a:.2%}' for a in accs)}", file=sys.stderr, flush=True)

    print(
        f"\n`{cmd.strip()}`: digits, the default run's protocol and schedule, seeds "
        f"{', '.join(map(str, args.seeds))}; eps chosen on a validation split of {args.validation:g} of the "
        "training split\n"
    )
    print("| eps | validation accuracy, mean | per seed |")
    print("|---|---|---|")
    for eps, accs in selection.items():
        mark = " (chosen)" if eps == chosen else ""
        print(f"| {eps:g}{mark} | {np.mean(accs):.2%} | {' / '.join(f'{a:.2%}' for a in accs)} |")
    print()
    print("| run | test accuracy, mean | per seed | relaxations cut off at the sweep cap, all seeds | s per run |")
    print("|---|---|---|---|---|")
    for name, accs, unsettled, seconds in rows:
        per_seed = " / ".join(f"{a:.2%}" for a in accs)
        print(f"| {name} | {np.mean(accs):.2%} | {per_seed} | {unsettled} | {seconds:.1f} |")
    default_eps = BACKEND_DEFAULTS["conv"]["eps"]
    if default_eps != chosen:
        print(f"\nnote: the conv backend's default eps is {default_eps:g}, not the chosen {chosen:g}")


if __name__ == "__main__":
    main()
