"""Resistive substrate benchmarks: digits accuracy and relaxation speed.

1. Digits test accuracy of the deep resistive network (64x2-H-10, ideal diodes)
   trained by centered EqProp and centered Aeqprop against SGD on the oracle
   gradient (implicit differentiation) of the same circuit.
2. Relaxation of a 784x2-1024-10 network on a batch of 32 random inputs to a
   relative KKT residual of 1e-6 (largest KCL imbalance at a free node, or
   reverse diode current, over the largest branch current): exact block
   coordinate descent against scipy's L-BFGS-B on the same energy (diodes as
   bounds), in the same run. Each solver is timed without the residual checks,
   with the sweep count / tolerance found to reach the target.

Run: python benchmarks/resistive.py [--epochs 30] [--hidden 256] [--skip-train] [--skip-relax]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

_here = Path(__file__).resolve().parent  # run as a script: the repository root, not benchmarks/, on the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.insert(0, str(_here.parent))

from aeqprop.data import load_dataset  # noqa: E402
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
        sub = ResistiveSubstrate(layers=(64, hidden, 10), gain=gain, eps=lr / (2 * beta), tol=1e-5, max_sweeps=100, seed=seed)
        t0 = time.perf_counter()
        result = Trainer(sub, make(), data, epochs=epochs, batch_size=16, seed=seed).run()
        rows.append((name, result.final.test_accuracy, result.best_test_accuracy, result.final.sweeps_per_step,
                     time.perf_counter() - t0))
    oracle = rows[-1][1]
    out = [f"digits, 64x2-{hidden}-10 resistive network, batch 16, {epochs} epochs, lr {lr}, b {beta}, gain {gain} V, seed {seed}",
           "", "| protocol | final test acc. | best test acc. | vs oracle (points) | sweeps/step | seconds |",
           "|---|---|---|---|---|---|"]
    for name, acc, best, sweeps, sec in rows:
        out.append(f"| {name} | {100 * acc:.2f} % | {100 * best:.2f} % | {100 * (acc - oracle):+.2f} | {sweeps:.0f} | {sec:.1f} |")
    return "\n".join(out)


def relax_table(batch: int, hidden: int, target: float, seed: int) -> str:
    from scipy.optimize import minimize

    sub = ResistiveSubstrate(layers=(784, hidden, 10), gain=1.0, seed=seed, init_g=0.1, max_batch=None)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch, 784))

    def residual() -> float:
        res, big = sub.currents()
        return float(np.max(np.abs(res)) / big)

    # block coordinate descent: sweeps needed, then a clean timed run of that many sweeps
    sub.clamp(x)
    sweeps = 0
    while True:
        sub._relax(0.0, 1)
        sweeps += 1
        if residual() <= target or sweeps >= 10_000:
            break
    t_bcd = []
    for _ in range(3):
        sub.clamp(x)
        t0 = time.perf_counter()
        sub._relax(0.0, sweeps)
        t_bcd.append(time.perf_counter() - t0)
    r_bcd = residual()

    # L-BFGS-B on the same energy, diodes as bounds
    th = sub.parameters()
    W1, W2, b1, b2 = th["W1"], th["W2"], th["b1"], th["b2"]
    v0, vb = sub.state()[0], sub.v_bias
    drive = v0 @ W1 + vb * (b1[0] - b1[1])
    den1 = W1.sum(0) + W2.sum(1) + b1.sum(0)
    den2 = W2.sum(0) + b2.sum(0)
    n1 = hidden

    def energy(flat):  # E up to a constant independent of V: 1/2 sum den V^2 - V . drive - V1 W2 V2
        V1, V2 = flat[:batch * n1].reshape(batch, n1), flat[batch * n1:].reshape(batch, 10)
        c = V1 @ W2
        e = 0.5 * np.sum(den1 * V1 * V1) - np.sum(V1 * drive) + 0.5 * np.sum(den2 * V2 * V2)
        e -= np.sum(V2 * vb * (b2[0] - b2[1])) + np.sum(c * V2)
        g1 = den1 * V1 - drive - V2 @ W2.T
        g2 = den2 * V2 - vb * (b2[0] - b2[1]) - c
        return e, np.concatenate([g1.ravel(), g2.ravel()])

    half = (n1 + 1) // 2
    lo = np.tile(np.r_[np.zeros(half), np.full(n1 - half, -np.inf)], batch)
    hi = np.tile(np.r_[np.full(half, np.inf), np.zeros(n1 - half)], batch)
    bounds = list(zip(np.r_[lo, np.full(batch * 10, -np.inf)], np.r_[hi, np.full(batch * 10, np.inf)]))
    pgtol, r_lb = 1e-6, np.inf
    while r_lb > target and pgtol > 1e-16:
        t0 = time.perf_counter()
        opt = minimize(energy, np.zeros(batch * (n1 + 10)), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 100_000, "maxfun": 200_000, "ftol": 0.0, "gtol": pgtol, "maxcor": 20})
        t_lb = time.perf_counter() - t0
        sub.clamp(x)
        sub._s[1], sub._s[2] = opt.x[:batch * n1].reshape(batch, n1), opt.x[batch * n1:].reshape(batch, 10)
        sub._stale = False
        r_lb = residual()
        pgtol /= 10
    tb = min(t_bcd)
    out = [f"784x2-{hidden}-10 resistive network, batch {batch} random inputs, target relative residual {target:g}",
           "", "| solver | iterations | reached residual | seconds | ratio |", "|---|---|---|---|---|",
           f"| exact block coordinate descent | {sweeps} sweeps | {r_bcd:.1e} | {tb:.3f} | 1 |",
           f"| scipy L-BFGS-B (gtol {pgtol * 10:g}) | {opt.nit} iterations | {r_lb:.1e} | {t_lb:.3f} | {t_lb / tb:.1f}x slower |"]
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--gain", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-relax", action="store_true")
    a = p.parse_args(argv)
    command = "python benchmarks/resistive.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not a.skip_train:
        print(f"`{command.strip()}`\n")
        print(train_table(a.epochs, a.hidden, a.lr, a.beta, a.gain, a.seed), "\n", flush=True)
    if not a.skip_relax:
        print(f"`{command.strip()}`\n")
        print(relax_table(32, 1024, 1e-6, a.seed), flush=True)


if __name__ == "__main__":
    main()
