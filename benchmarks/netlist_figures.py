"""Netlist figures for benchmarks/resistive.py: ngspice agreement, KCL residual, solver speed, runs.

1. Random circuits (sim_backends.netlist_spice: 5-40 nodes, 100 ohm to 100 kohm, 1-4 sources) of
   each kind solved here and by ngspice, and random two-layer circuits (random_layered_circuit); a
   circuit agrees when every node voltage is within its derived tolerance. The worst KCL residual
   of a converged report is the RelaxReport residual (largest KCL imbalance over the largest branch
   current, or over a lower bound of it) over the same circuits; "settled by the sweeps alone"
   counts the circuits that the exact solver did not have to finish.
2. One batch of digits through the same 64x2-256-10 circuit, as a netlist (coloured sweeps; the
   exact solver alone) and by the layered solver (block coordinate descent, at the training
   tolerance 1e-5 V and at 1e-9 V), from 0 V, clamp included; and a training step's three phases
   (free, nudged at -b/2 and +b/2, each warm-started from the last). Median and fastest of the
   repeats, interleaved.
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
    import sim_backends.netlist as netlist
    from sim_backends.netlist import NetlistSubstrate
    from sim_backends.netlist_spice import (
        KINDS,
        compare,
        ngspice_available,
        random_circuit,
        random_layered_circuit,
    )

    if ngspice_available() is None:
        return "ngspice is not installed: no comparison (apt-get install ngspice)"
    out = [
        f"{n} random circuits per kind, 5-40 nodes (layered: 4-35), against ngspice's operating point (ngspice -b)",
        "",
        (
            "| circuits | agree with ngspice | worst node difference | worst difference / tolerance | "
            "worst KCL residual of a converged report | settled by the sweeps alone |"
        ),
        "|---|---|---|---|---|---|",
    ]
    solve, exact = netlist.solve, []

    def spy(*args, **kwargs):
        exact.append(1)
        return solve(*args, **kwargs)

    netlist.solve = spy  # type: ignore[assignment]
    try:
        for name, make in (("", random_circuit), ("layered ", random_layered_circuit)):
            for kind in KINDS:
                agree, worst, ratio, kcl, swept = 0, 0.0, 0.0, 0.0, 0
                for seed in range(n):
                    c = make(seed, kind)
                    diff, tol = compare(c)
                    agree += diff <= tol
                    worst, ratio = max(worst, diff), max(ratio, diff / tol)
                    sub = NetlistSubstrate(text=c.ours, g_max=1.0, g_min=0.0)
                    sub.clamp(np.zeros((1, 0)))
                    exact.clear()
                    report = sub.relax()
                    swept += not exact
                    if report.converged:
                        kcl = max(kcl, report.residual)
                out.append(
                    f"| {name}{kind} | {agree} of {n} | {worst:.1e} V | {ratio:.2f} | {kcl:.1e} | {swept} of {n} |"
                )
    finally:
        netlist.solve = solve
    return "\n".join(out)


def solver_table(batch: int, repeats: int, seed: int) -> str:
    from aeqprop.data import load_dataset
    from sim_backends.netlist import NetlistSubstrate, layered_netlist
    from sim_backends.netlist_solve import check, solve
    from sim_backends.resistive import ResistiveSubstrate

    data = load_dataset("digits", seed=seed)
    x, y = data.x_train[:batch], data.y_train[:batch]
    res = ResistiveSubstrate((64, 256, 10), seed=seed, gain=48.0, tol=1e-5, max_sweeps=100_000)
    t0 = time.perf_counter()
    net = NetlistSubstrate(text=layered_netlist(res), g_max=1.0)
    build = time.perf_counter() - t0
    net5 = NetlistSubstrate(text=layered_netlist(res), g_max=1.0, tol=1e-5)

    def layered(tol):
        def run():
            res.clamp(x)
            res._relax(tol, 100_000)

        return run

    def netlist(sub):
        def run():
            sub.clamp(x)
            sub.relax()

        return run

    def exact():  # the exact solver alone (damped Newton, batched active set), from 0 V, and its check
        net.clamp(x)
        g = net._conductances()
        bt = net._batch(g, 0.0)
        sol = solve(net.st, bt, g, net._z, net._W, net.tol, net.max_sweeps)
        assert np.all(check(net.st, bt, g, sol).ok)

    def phases(sub, layered_sub=None):
        def run():  # a training step's three relaxations: free, then nudged at -b/2 and +b/2 (warm starts)
            s = layered_sub or sub
            s.clamp(x)
            for beta in (0.0, -0.5, 0.5):
                s.nudge(beta, y if beta else None)
                s._relax(s.tol, s.max_sweeps) if layered_sub else s.relax()

        return run

    from threadpoolctl import threadpool_limits

    runs = [
        ("layered, block coordinate descent, tol 1e-5 V (training)", layered(1e-5)),
        ("layered, block coordinate descent, tol 1e-9 V", layered(1e-9)),
        ("netlist, coloured sweeps, tol 1e-12 V (default)", netlist(net)),
        ("netlist, coloured sweeps, tol 1e-5 V", netlist(net5)),
        ("netlist, exact solver alone (batched active set)", exact),
        ("layered, a training step's 3 phases (free, -b/2, +b/2), tol 1e-5 V", phases(None, res)),
        ("netlist, a training step's 3 phases, tol 1e-12 V (default)", phases(net)),
    ]
    with threadpool_limits(1):  # one BLAS thread for all: on a shared machine spinning threads cost more
        times = _timed(runs, repeats)
        net.clamp(x)
        res.clamp(x)
        res._relax(1e-12, 100_000)
        diff = float(np.max(np.abs(res.outputs() - net.outputs())))
        sweeps = {}
        for name, sub in (("1e-12", net), ("1e-5", net5)):
            sub.clamp(x)
            sweeps[name] = sub.relax().sweeps
    med, best = [t[0] for t in times], [t[1] for t in times]
    out = [
        (
            f"64x2-256-10 resistive circuit (gain 48 V), batch of {batch} digits, {repeats} timed runs each "
            f"(interleaved), one BLAS thread; netlist built in {build:.1f} s, outputs agree with the layered "
            f"solver at 1e-12 V to {diff:.0e} V; coloured sweeps from 0 V: {sweeps['1e-12']} at 1e-12 V, "
            f"{sweeps['1e-5']} at 1e-5 V; every netlist relaxation checked to KCL 1e-9"
        ),
        "",
        "| solver | us per sample, median | vs layered (same task) | us per sample, fastest run | vs layered |",
        "|---|---|---|---|---|",
    ]
    for i, (name, _) in enumerate(runs):
        r = 5 if i >= 5 else 0  # the layered row of the same task
        out.append(
            f"| {name} | {1e6 * med[i] / batch:.1f} | {med[i] / med[r]:.1f}x | {1e6 * best[i] / batch:.1f} | "
            f"{best[i] / best[r]:.1f}x |"
        )
    return "\n".join(out)


def _timed(runs, repeats: int) -> list[tuple[float, float]]:
    """(median, fastest) seconds of each run, the runs interleaved so that a change in the machine's
    load falls on all of them alike (the fastest run is the one least preempted by other jobs)."""
    for _, run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, (_, run) in enumerate(runs):
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return [(float(np.median(t)), float(np.min(t))) for t in times]


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
