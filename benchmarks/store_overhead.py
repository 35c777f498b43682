"""The run store's cost as a share of training step time on the default run
(centered Aeqprop, Hopfield 64-512-10 on digits, batch 16, evaluation and checkpoint
every 50 steps).

In the same run, every store call (buffering step metrics, evaluations, epoch rows,
checkpoints with parameters, knobs and random states) is timed and divided by the time
spent in training steps. For reference, the same run is repeated without a store and the
wall times compared (that second figure carries the machine's timing noise).

    python benchmarks/store_overhead.py [--epochs 3] [--checkpoint-every 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from aeqprop import session
from aeqprop.config import load_config
from aeqprop.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=0, help="0: at each epoch end (the default run)")
    parser.add_argument("--eval-every", type=int, default=50)
    args = parser.parse_args()
    overrides = [
        f"schedule.epochs={args.epochs}",
        f"checkpoint.every={args.checkpoint_every}",
        f"evaluation.every={args.eval_every}",
    ]
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_config(overrides=overrides + [f'runs="{runs}"'])
        built = session.build(cfg)
        store = RunStore(runs)
        run_id = store.create_run(cfg.to_dict(), cfg.seed, **built.names)
        t0 = time.perf_counter()
        outcome = session.execute(built, store, run_id)
        with_store = time.perf_counter() - t0
        steps = len(store.metrics(run_id, "step_metrics"))
        checkpoints = len(store.db.execute("SELECT id FROM checkpoints").fetchall())
        store.close()
    built = session.build(cfg)
    t0 = time.perf_counter()
    bare = session.execute(built, None, None)
    without = time.perf_counter() - t0
    assert bare.status == outcome.status == "completed"
    share = outcome.store_seconds / outcome.step_seconds
    print(f"`{' '.join(['python', 'benchmarks/store_overhead.py', *sys.argv[1:]])}`\n")
    print("| run | steps | step time (ms) | store time per step (ms) | store / step time | wall time, store on / off |")
    print("|-----|------:|---------------:|-------------------------:|------------------:|--------------------------:|")
    print(
        f"| default, {args.epochs} epochs, checkpoint every {args.checkpoint_every}, evaluation every "
        f"{args.eval_every} ({checkpoints} checkpoints kept) | {steps} | {1e3 * outcome.step_seconds / steps:.2f} | "
        f"{1e3 * outcome.store_seconds / steps:.3f} | {share:.2%} | {with_store:.1f} s / {without:.1f} s |"
    )


if __name__ == "__main__":
    main()
