"""Resistive substrate benchmarks: digits accuracy, relaxation speed, the netlist against ngspice.

1. Digits test accuracy of the deep resistive network (64x2-H-10, ideal diodes)
   trained by centered EqProp and centered Aeqprop against SGD on the oracle
   gradient (implicit differentiation) of the same circuit.
2. Relaxation of a 784x2-1024-10 network on a batch of 32 random inputs to a
   relative KKT residual of 1e-6 (largest KCL imbalance at a free node, or
   reverse diode current, over the largest branch current): exact block
   coordinate descent against scipy's L-BFGS-B on the same energy (diodes as
   bounds), in the same run, at two operating points. A warm-up run finds the
   first sweep / iteration whose residual (sub.currents(), the same for both)
   reaches the target; the timed runs (median of --repeats) do exactly that
   many, without residual checks, input drive included for both.

3. (benchmarks/netlist_figures.py) Random circuits against ngspice, the worst KCL residual of a
   converged report, the netlist solver against the layered one on the same 64x2-256-10 circuit,
   and the wall time and accuracy of the shipped netlist example and of the default resistive run.

Run: python benchmarks/resistive.py [--epochs 30] [--hidden 256] [--skip-train] [--skip-relax]
         [--skip-netlist] [--skip-runs] [--circuits 40]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from aeqprop.data import load_dataset
from aeqprop.trainer import Trainer
from protocols.aeqprop import Aeqprop
from protocols.eqprop import EqProp
from protocols.oracle_sgd import OracleSGD
from sim_backends.resistive import ResistiveSubstrate


def train_table(epochs: int, hidden: int, lr: float, beta: float, gain: float, seed: int) -> str:
    data = load_dataset("digits", seed=seed)
    runs = {
        "centered EqProp": lambda: EqProp(beta=beta, lr=lr, variant="centered"),
        "centered Aeqprop (native homeostasis, short release)": lambda: Aeqprop(beta=2 * beta, variant="centered"),
        "SGD on the oracle gradient": lambda: OracleSGD(lr=lr),
    }
    rows = []
    for name, make in runs.items():
        # Aeqprop's step is -eps (beta2 - beta1) g_hat: eps = lr / (2 beta) gives the same learning rate
        sub = ResistiveSubstrate(
            layers=(64, hidden, 10), gain=gain, eps=lr / (2 * beta), tol=1e-5, max_sweeps=100, seed=seed
        )
        t0 = time.perf_counter()
        result = Trainer(sub, make(), data, epochs=epochs, batch_size=16, seed=seed).run()
        rows.append(
            (
                name,
                result.final.test_accuracy,
                result.best_test_accuracy,
                result.final.sweeps_per_step,
                time.perf_counter() - t0,
            )
        )
    oracle = rows[-1][1]
    out = [
        f"digits, 64x2-{hidden}-10 resistive network, batch 16, {epochs} epochs, lr {lr}, b {beta}, gain {gain} V, seed {seed}",
        "",
        "| protocol | final test acc. | best test acc. | vs oracle (points) | sweeps/step | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, acc, best, sweeps, sec in rows:
        out.append(
            f"| {name} | {100 * acc:.2f} % | {100 * best:.2f} % | {100 * (acc - oracle):+.2f} | {sweeps:.0f} | {sec:.1f} |"
        )
    return "\n".join(out)


OPERATING_POINTS = {
    # every conductance uniform in [0, 0.1] S: a hidden node hears its 1568 inputs ~150x louder than its
    # 10 outputs, so the layers barely interact and a few sweeps settle them
    "uniform init (all g in [0, 0.1] S)": 0.1,
    # W2 ~157x W1 (1568 / 10): each hidden node's conductance to the outputs equals that to the inputs,
    # the strongly coupled regime in which the hidden and output layers must agree with each other
    "balanced init (W1 in [0, 0.0064] S, W2 in [0, 1] S)": {"W1": 0.0064, "b1": 0.1, "W2": 1.0, "b2": 0.1},
}


def relative_residual(sub: ResistiveSubstrate, target: float | None = None) -> float:
    """Largest KKT residual over the largest branch current (sub.currents()).

    With a target, returns inf without computing the largest current when the
    residual exceeds the target even against an upper bound of that current.
    """
    res = float(np.max(np.abs(sub.kkt_residual())))
    if target is not None:
        s, th = sub._s, sub.theta  # the state as it stands, not re-settled
        bound = max(
            max(
                (np.max(np.abs(s[l - 1])) + np.max(np.abs(s[l]))) * np.max(th[f"W{l}"]),
                (np.max(np.abs(s[l])) + sub.v_bias) * np.max(th[f"b{l}"]),
            )
            for l in range(1, sub.L + 1)
        )
        if res > target * bound:
            return np.inf
    return res / sub.largest_current()


def time_median(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def relax_row(name: str, init_g, batch: int, hidden: int, target: float, seed: int, repeats: int) -> list[str]:
    """BCD and L-BFGS-B on one network: both stop at the first iterate whose residual is <= target."""
    from scipy.optimize import Bounds, minimize

    sub = ResistiveSubstrate(layers=(784, hidden, 10), gain=1.0, seed=seed, init_g=init_g, max_batch=None)
    x = np.random.default_rng(seed).uniform(0, 1, (batch, 784))
    sizes = sub.sizes[1:]
    cuts = np.cumsum([batch * n for n in sizes])[:-1]

    def split(flat):
        return [a.reshape(batch, n) for a, n in zip(np.split(flat, cuts), sizes)]

    def f(flat):  # the substrate's own energy and gradient; the diodes are bounds
        e, g = sub.free_energy(split(flat), constant=False)
        return e, np.concatenate([a.ravel() for a in g])

    bounds = Bounds(
        np.concatenate([np.broadcast_to(sub.lo[l], (batch, n)).ravel() for l, n in enumerate(sizes, 1)]),
        np.concatenate([np.broadcast_to(sub.hi[l], (batch, n)).ravel() for l, n in enumerate(sizes, 1)]),
    )
    x0 = np.zeros(sum(batch * n for n in sizes))

    # warm-up and search: the first sweep / iteration at which the residual reaches the target
    sub.clamp(x)
    sweeps = 0
    while sweeps < 100_000:
        sub._relax(0.0, 1)
        sweeps += 1
        if relative_residual(sub, target) <= target:
            break
    found = []

    def check(xk):
        if not found:
            sub._s[1:] = split(xk)
            if relative_residual(sub, target) <= target:
                found.append(check.k)
        check.k += 1

    check.k = 1
    opts = {"maxiter": 100_000, "maxfun": 1_000_000, "ftol": 0.0, "gtol": 0.0, "maxcor": 20}
    sub.clamp(x)
    minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds, callback=check, options=opts)
    iters = found[0] if found else opts["maxiter"]

    # timed: clamp (input drive included) and exactly that many sweeps / iterations, median of repeats
    def bcd():
        sub.clamp(x)
        sub._relax(0.0, sweeps)

    t_bcd = time_median(bcd, repeats)
    r_bcd = relative_residual(sub)
    opts["maxiter"] = iters
    out = {}

    def lbfgsb():
        sub.clamp(x)
        out["opt"] = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)

    t_lb = time_median(lbfgsb, repeats)
    sub._s[1:] = split(out["opt"].x)
    r_lb = relative_residual(sub)
    return [
        f"| {name} | exact block coordinate descent | {sweeps} sweeps | {r_bcd:.1e} | {t_bcd:.4f} | 1 |",
        f"| {name} | scipy L-BFGS-B (box bounds for the diodes) | {out['opt'].nit} iterations, "
        f"{out['opt'].nfev} evaluations | {r_lb:.1e} | {t_lb:.4f} | {t_lb / t_bcd:.1f}x slower |",
    ]


def relax_table(batch: int, hidden: int, target: float, seed: int, repeats: int) -> str:
    out = [
        f"784x2-{hidden}-10 resistive network, batch {batch} random inputs in [0, 1], gain 1 V, "
        f"target relative residual {target:g}; median of {repeats} timed runs after a warm-up",
        "",
        "| operating point | solver | iterations | reached residual | seconds | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, init_g in OPERATING_POINTS.items():
        out += relax_row(name, init_g, batch, hidden, target, seed, repeats)
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--gain", type=float, default=48.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per solver (median reported)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-relax", action="store_true")
    p.add_argument("--skip-netlist", action="store_true", help="skip the ngspice and netlist-solver tables")
    p.add_argument("--skip-runs", action="store_true", help="skip the example and default-run table")
    p.add_argument("--circuits", type=int, default=40, help="random circuits per kind against ngspice")
    a = p.parse_args(argv)
    command = "python benchmarks/resistive.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not a.skip_train:
        print(f"`{command.strip()}`\n")
        print(train_table(a.epochs, a.hidden, a.lr, a.beta, a.gain, a.seed), "\n", flush=True)
    if not a.skip_relax:
        print(f"`{command.strip()}`\n")
        print(relax_table(32, 1024, 1e-6, a.seed, a.repeats), flush=True)
    if not a.skip_netlist or not a.skip_runs:
        from netlist_figures import netlist_tables

        print(f"\n`{command.strip()}`\n")
        print(netlist_tables(a.circuits, a.repeats, a.seed, spice=not a.skip_netlist, runs=not a.skip_runs), flush=True)


if __name__ == "__main__":
    main()
