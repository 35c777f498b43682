"""Sweeps on a local process pool and on Dask (issue "sweeps"): speed-up, overhead, equality, a killed worker.

1. An 8-run sweep (centered EqProp, Hopfield 64-H-10 on digits, 2 values of beta x 4
   seeds) on a local pool of 2 workers, against the same 8 runs one after another in
   this process, recorded the same way, in the same invocation.
2. Scheduling and recording overhead per run on a Dask LocalCluster of one worker:
   (wall time from the first submission to the last record - the same runs trained one
   after another in this process as `aeqprop train` trains them) / runs, over 16 short
   runs (iris, 1 epoch).
3. The sweep of 1 run again on a Dask LocalCluster of 2 workers: each run's digest (step
   losses, epoch figures, final parameters) against the local pool's.
4. A worker killed (SIGKILL) once the first run is recorded, on the local pool and on a Dask
   LocalCluster: runs recorded per job.

    python benchmarks/sweep.py [--epochs 48] [--hidden 64] [--workers 2]

Speed figures depend on how loaded the machine is: the script prints the load average
before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from aeqprop import session
from aeqprop.config import validate
from aeqprop.sweep import expand
from aeqprop.sweep_exec import LocalPool, SweepSettings, run_job, run_jobs
from aeqprop.sweep_store import create_sweep, jobs, open_store, record_run, run_digest


def sweep_spec(dataset: str, hidden: int, epochs: int, seeds: list[int], betas: list[float]) -> dict:
    return {
        "seeds": seeds,
        "grid": {"protocol.options.beta": betas},
        "config": {
            "dataset": {"name": dataset},
            "substrate": {"backend": "hopfield", "options": {"hidden": [hidden], "eps": 0.1, "tol": 1e-3}},
            "protocol": {"name": "eqprop", "options": {"lr": 0.1}},
            "schedule": {"epochs": epochs, "batch_size": 16},
        },
    }


def new_sweep(folder: Path, spec: dict):
    sweep = expand(spec, runs=str(folder))
    store = open_store(sweep.runs)
    return store, create_sweep(store, sweep)


def digests(store, sweep_id) -> dict:
    return {(j["point"], j["seed"]): run_digest(store, j["run_id"]) for j in jobs(store, sweep_id)}


def runs_per_job(store, sweep_id) -> list[int]:
    return [j["attempts"] for j in jobs(store, sweep_id)]


def dask_cluster(workers: int):
    from aeqprop.dask_executor import DaskExecutor

    return DaskExecutor(cluster="local", workers=workers)


def killer(executor_box: list, pool: bool):
    """An on_record callback that SIGKILLs one worker of the executor when the first run is recorded."""
    state = {"done": False}

    def on_record(job, run_id, rec):
        if state["done"]:
            return
        state["done"] = True
        ex = executor_box[-1]
        if pool:
            pid = next(iter(ex._pool._processes))
        else:
            pid = next(iter(ex.client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)

    return on_record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    command = " ".join(["python benchmarks/sweep.py", *(sys.argv[1:] if argv is None else argv)])
    load_before = os.getloadavg()
    spec = sweep_spec("digits", args.hidden, args.epochs, [0, 1, 2, 3], [0.2, 0.5])
    tmp = Path(tempfile.mkdtemp(prefix="aeqprop-bench-sweep-"))
    os.environ["TMPDIR"] = str(tmp)  # workers' scratch stores, those of killed workers included, go here
    tempfile.tempdir = None

    # 1. sequential in this process, then the local pool
    store, sid = new_sweep(tmp / "sequential", spec)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        for job in jobs(store, sid):
            record_run(store, job["id"], job["config"], run_job(job["config"]))
    sequential = time.perf_counter() - t0
    reference = digests(store, sid)
    store, sid = new_sweep(tmp / "pool", spec)
    pool = run_jobs(store, jobs(store, sid), lambda: LocalPool(args.workers))
    pool_digests = digests(store, sid)

    # 2. overhead per run on a Dask LocalCluster of one worker
    short = sweep_spec("iris", 8, 1, list(range(8)), [0.2, 0.5])
    store, sid = new_sweep(tmp / "overhead", short)
    trained = []
    ex_box: list = []

    def one_worker():
        ex_box.append(dask_cluster(1))
        return ex_box[-1]

    over = run_jobs(store, jobs(store, sid), one_worker, on_record=lambda j, r, rec: trained.append(rec.train_seconds))
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        for job in jobs(store, sid):  # the same runs as `aeqprop train` runs them, one after another
            session.start(validate({**job["config"], "runs": str(tmp / "direct")}))
    direct = time.perf_counter() - t0
    overhead = (over.seconds - direct) / len(trained)

    # 3. the same sweep on a Dask LocalCluster of 2 workers
    store, sid = new_sweep(tmp / "dask", spec)
    dask_run = run_jobs(store, jobs(store, sid), lambda: dask_cluster(args.workers))
    dask_digests = digests(store, sid)

    # 4. a worker killed once the first run is recorded
    killed = {}
    for name, make, is_pool in (
        ("local pool", lambda: LocalPool(args.workers), True),
        ("Dask LocalCluster", lambda: dask_cluster(args.workers), False),
    ):
        store, sid = new_sweep(tmp / f"kill-{is_pool}", spec)
        box: list = []

        def factory(make=make, box=box):
            box.append(make())
            return box[-1]

        report = run_jobs(store, jobs(store, sid), factory, SweepSettings(), on_record=killer(box, is_pool))
        killed[name] = (runs_per_job(store, sid), report, digests(store, sid))
    load_after = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"`{command}`\n")
    print(
        f"Load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; {os.cpu_count()} cores\n"
    )
    print("| figure | measured | goal |")
    print("|---|---:|---:|")
    print(
        f"| 8-run sweep (digits, 64-{args.hidden}-10, {args.epochs} epochs), {args.workers} local workers vs one "
        f"after another | {sequential / pool.seconds:.2f}x ({pool.seconds:.1f} s vs {sequential:.1f} s) | >= 1.8x |"
    )
    print(
        f"| scheduling and recording overhead per run, Dask LocalCluster (1 worker, {len(trained)} iris runs) | "
        f"{overhead:.3f} s ({over.seconds:.1f} s vs {direct:.1f} s in one process) | <= 0.3 s |"
    )
    same = sum(dask_digests[k] == pool_digests[k] for k in pool_digests)
    alone = sum(pool_digests[k] == reference[k] for k in reference)
    print(
        f"| Dask LocalCluster ({args.workers} workers) vs local pool, same seeds: runs bitwise equal | "
        f"{same}/{len(pool_digests)} (pool vs one after another: {alone}/{len(reference)}) | all |"
    )
    for name, (counts, report, found) in killed.items():
        equal = sum(found[k] == reference[k] for k in reference)
        print(
            f"| a {name} worker killed after the first run: runs recorded per job | "
            f"{'exactly once' if counts == [1] * len(counts) else counts} ({len(counts)} jobs, "
            f"{report.resubmitted} resubmitted, {equal}/{len(reference)} bitwise equal) | exactly once |"
        )
    print(f"\nDask run of the 8-run sweep: {dask_run.seconds:.1f} s ({args.workers} workers, cluster start excluded)")


if __name__ == "__main__":
    main()
