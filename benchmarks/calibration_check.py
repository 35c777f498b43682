"""What the agnostic loop's calibration measures on an imperfect device, against the truth.

The robustness study's network (digits, Hopfield 64-64-10, eps 0.1, tol 1e-3) behind the device
model of sim_backends/nonideal.py, calibrated as ``aeqprop train`` calibrates feedback Aeqprop
(protocols/calibration.py) on the first 16 training samples, once per seed. Per seed:

- the stiffness k it measured and the averaged reads it chose;
- its measure of one learning step (the RMS move of one nudged release from the holding knob),
  against the true step ``f eps (g(beta1) - g(beta2))`` at the starting theta, from the bare
  network's energy gradients (no device, no knobs) and each entry's eps factor f on the device;
- how far theta ended from where it started (largest RMS over the tensors, read from the bare
  network): the calibration is meant to hold it back where it found it;
- the true move of theta in the release it measured the step on (read from the bare network, no
  read noise: what the measure would be without it), and how far from the start theta was when
  that release began (largest RMS over the tensors): a step measured away from the start is the
  step there plus theta's own move under the holding knob.

    python benchmarks/calibration_check.py --variability 1 --seeds 6
    python benchmarks/calibration_check.py --read-noise 1e-2 --seeds 3
"""

from __future__ import annotations

import argparse

import numpy as np
from baselines import limit_blas_threads

from aeqprop.data import load_dataset
from aeqprop.substrate import RelaxReport
from protocols.calibration import Calibrator
from sim_backends.hopfield import HopfieldSubstrate
from sim_backends.nonideal import NonidealSubstrate

BETAS = (-0.5, 0.5)  # the robustness study's centered Aeqprop (beta 1.0)
EPS = 0.1


def rms(d: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate([np.ravel(v) for v in d.values()]) ** 2)))


def true_step(sub: HopfieldSubstrate, x: np.ndarray, y: np.ndarray, factor: dict[str, np.ndarray] | None) -> float:
    """RMS of ``f eps (dE/dtheta at beta1 - dE/dtheta at beta2)``, f each entry's eps factor on the
    device (1 without variability): the step a nudged release takes there."""
    grads = []
    for beta in BETAS:
        sub.clamp(x)
        sub.nudge(beta, y)
        sub.relax()
        grads.append(sub.energy_gradients())
    sub.nudge(0.0)
    f = factor or {n: 1.0 for n in grads[0]}
    return rms({n: f[n] * EPS * (grads[0][n] - grads[1][n]) for n in grads[0]})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variability", type=float, default=0.0)
    ap.add_argument("--read-noise", type=float, default=0.0)
    ap.add_argument("--levels", type=int, default=0, help="conductance levels (0: continuous)")
    args = ap.parse_args(argv)
    limit_blas_threads(1)
    data = load_dataset("digits", seed=0)
    x, y = data.x_train[:16], data.y_train[:16]
    device = {"variability": args.variability, "read_noise": args.read_noise, "levels": args.levels or None}
    shown = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in device.items() if v) or "ideal"
    print(f"Digits, Hopfield 64-64-10, eps {EPS}, beta {BETAS[0]} / {BETAS[1]}; device: {shown}; 16 samples\n")
    print(
        "| seed | stiffness k | averages | step as measured | true step | measured / true | theta moved (RMS) "
        "| true move of the measured release | theta's offset from the start then (RMS) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seed in range(args.seeds):
        sub = NonidealSubstrate(
            HopfieldSubstrate((64, 64, 10), eps=EPS, tol=1e-3, seed=seed), seed=1000 + seed, **device
        )
        truth = true_step(HopfieldSubstrate((64, 64, 10), eps=EPS, tol=1e-3, seed=seed), x, y, sub.factor)
        start = sub.inner.parameters()
        measured = watch_nudged_release(sub, BETAS[1])
        cal = Calibrator().run(sub, x, y, BETAS)
        end = sub.inner.parameters()
        moved = max(rms({n: end[n] - start[n]}) for n in start)
        ((before, after),) = measured  # the calibration releases once under beta2: its measure of a step
        offset = max(rms({n: before[n] - start[n]}) for n in start)
        print(
            f"| {seed} | {cal.stiffness:.2f} | {cal.averages} | {cal.signal:.4f} | {truth:.4f} "
            f"| {cal.signal / truth:.2f} | {moved:.1e} | {rms({n: after[n] - before[n] for n in before}):.4f} "
            f"| {offset:.1e} |"
        )


def watch_nudged_release(sub: NonidealSubstrate, beta: float) -> list[tuple[dict, dict]]:
    """Record the bare network's theta before and after every release made under nudging ``beta``."""
    seen: list[tuple[dict, dict]] = []
    nudged = {"beta": 0.0}
    nudge, release = sub.nudge, sub.release

    def watched_nudge(b: float, y: np.ndarray | None = None) -> None:
        nudged["beta"] = b
        nudge(b, y)

    def watched_release(duration: float | None = None) -> RelaxReport:
        before = sub.inner.parameters()
        report = release(duration)
        if nudged["beta"] == beta:
            seen.append((before, sub.inner.parameters()))
        return report

    sub.nudge, sub.release = watched_nudge, watched_release  # type: ignore[method-assign]
    return seen


if __name__ == "__main__":
    main()
