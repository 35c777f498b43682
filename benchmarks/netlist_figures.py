"""Netlist figures for benchmarks/resistive.py: ngspice agreement, KCL residual, solver speed, runs.

1. Random circuits (sim_backends.netlist_spice: 5-40 nodes, 100 ohm to 100 kohm, 1-4 sources) of
   each kind solved here and by ngspice; a circuit agrees when every node voltage is within its
   derived tolerance. The worst KCL residual of a converged report is the RelaxReport residual
   (largest KCL imbalance over the largest branch current) over the same circuits.
2. One batch of digits through the same 64x2-256-10 circuit, as a netlist and by the layered
   solver (block coordinate descent, at the training tolerance 1e-5 V and at 1e-9 V); median of
   repeats, clamp included.
3. `aeqprop train examples/netlist_aeqprop.toml` and `aeqprop train --backend resistive` as a user
   runs them (a fresh process, wall time including start-up), with their test accuracy.

Run through benchmarks/resistive.py (--skip-train --skip-relax for these tables alone).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def spice_table(n: int) -> str:
    from sim_backends.netlist import NetlistSubstrate
    from sim_backends.netlist_spice import (
        KINDS,
        compare,
        ngspice_available,
        random_circuit,
    )

    if ngspice_available() is None:
        return "ngspice is not installed: no comparison (apt-get install ngspice)"
    out = [
        f"{n} random circuits per kind, 5-40 nodes, against ngspice's operating point (ngspice -b)",
        "",
        (
            "| circuits | agree with ngspice | worst node difference | worst difference / tolerance | "
            "worst KCL residual of a converged report |"
        ),
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        agree, worst, ratio, kcl = 0, 0.0, 0.0, 0.0
        for seed in range(n):
            c = random_circuit(seed, kind)
            diff, tol = compare(c)
            agree += diff <= tol
            worst, ratio = max(worst, diff), max(ratio, diff / tol)
            sub = NetlistSubstrate(text=c.ours, g_max=1.0, g_min=0.0)
            sub.clamp(np.zeros((1, 0)))
            report = sub.relax()
            if report.converged:
                kcl = max(kcl, report.residual)
        out.append(f"| {kind} | {agree} of {n} | {worst:.1e} V | {ratio:.2f} | {kcl:.1e} |")
    return "\n".join(out)


def median_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def solver_table(batch: int, repeats: int, seed: int) -> str:
    from aeqprop.data import load_dataset
    from sim_backends.netlist import NetlistSubstrate, layered_netlist
    from sim_backends.resistive import ResistiveSubstrate

    x = load_dataset("digits", seed=seed).x_train[:batch]
    res = ResistiveSubstrate((64, 256, 10), seed=seed, gain=48.0, tol=1e-5, max_sweeps=100_000)
    t0 = time.perf_counter()
    net = NetlistSubstrate(text=layered_netlist(res), g_max=1.0)
    build = time.perf_counter() - t0

    def layered(tol):
        def run():
            res.clamp(x)
            res._relax(tol, 100_000)

        return run

    def netlist():
        net.clamp(x)
        net.relax()

    from threadpoolctl import threadpool_limits

    rows = []
    with threadpool_limits(
        1
    ):  # one BLAS thread for both: on a shared machine spinning threads cost more than they gain
        rows += _timed(x, layered, netlist, repeats)
    diff = float(np.max(np.abs(res.outputs() - net.outputs())))
    base = rows[0][1]
    out = [
        (
            f"64x2-256-10 resistive circuit (gain 48 V), batch of {batch} digits, median of {repeats}, one BLAS thread; "
            f"netlist built in {build:.1f} s, outputs agree with the layered solver at 1e-9 V to {diff:.0e} V"
        ),
        "",
        "| solver | us per sample | vs layered at 1e-5 V |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {1e6 * t / batch:.1f} | {t / base:.1f}x |" for name, t in rows]
    return "\n".join(out)


def _timed(x, layered, netlist, repeats: int) -> list[tuple[str, float]]:
    rows = []
    for name, run in (
        ("layered, block coordinate descent, tol 1e-5 V (training)", layered(1e-5)),
        ("layered, block coordinate descent, tol 1e-9 V", layered(1e-9)),
        ("netlist, batched active set (exact; checked to KCL 1e-9)", netlist),
    ):
        run()
        rows.append((name, median_time(run, repeats)))
    return rows


def cli_run(args: list[str]) -> tuple[float, float, str]:
    """Wall time and CPU time (user + system) of ``aeqprop train ARGS`` in a fresh process, and its
    final test and train accuracy (two table cells). On a shared machine the wall time includes waiting for a core."""
    import resource

    with tempfile.TemporaryDirectory() as runs:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "cli", "train", *args, "--runs", runs, "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"test accuracy ([0-9.]+ ?%) after \d+ epochs \(train ([0-9.]+ ?%)", done.stdout)
    return (
        seconds,
        cpu,
        (f"{m.group(1)} | {m.group(2)}" if m else f"failed: {(done.stderr or done.stdout).strip()[-200:]} |"),
    )


def runs_table() -> str:
    out = [
        "| command | wall time (fresh process) | CPU time | final test accuracy | final train accuracy |",
        "|---|---|---|---|---|",
    ]
    for args in (["examples/netlist_aeqprop.toml"], ["--backend", "resistive"]):
        seconds, cpu, acc = cli_run(args)
        out.append(f"| `aeqprop train {' '.join(args)}` | {seconds:.1f} s | {cpu:.1f} s | {acc} |")
    return "\n".join(out)


def netlist_tables(circuits: int, repeats: int, seed: int, spice: bool = True, runs: bool = True) -> str:
    parts = []
    if spice:
        parts += [spice_table(circuits), solver_table(64, repeats, seed)]
    if runs:
        parts.append(runs_table())
    return "\n\n".join(parts)
