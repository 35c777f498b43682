"""The GDU property (Ernoult et al. 2019): EqProp's per-step updates match BPTT's per-step gradients.

After the free phase has settled (T time steps from s = 0), the nudged phase
runs K steps at beta. At each step t = 0..K-1 EqProp's updates are::

    Delta_s(t)     = (s_(t+1) - s_t) / beta
    Delta_theta(t) = (dPhi/dtheta(s_(t+1)) - dPhi/dtheta(s_t)) / beta = -(dE/dtheta(s_(t+1)) - dE/dtheta(s_t)) / beta

and, as beta -> 0, they equal minus the gradients that BPTT computes at the
matching step of the free phase (:class:`~sim_backends.discrete_bptt.BPTTResult`:
``neurons[t]``, ``params[t]``). One-sided nudging (``positive``: +beta,
``negative``: -beta) errs by O(beta); ``centered`` averages the +beta and
-beta trajectories, ``(Delta(+beta) + Delta(-beta)) / 2`` with each Delta over
its own beta, and errs by O(beta^2).

The EqProp side uses only the substrate's contract (clamp, nudge, relax one
step at a time through ``max_sweeps``, ``state()``, ``energy_gradients()``),
as the continual EqProp protocol does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError

SIGNS = {"centered": (1.0, -1.0), "positive": (1.0,), "negative": (-1.0,)}


@dataclass(frozen=True)
class GDUSettings:
    """How the check is run.

    free_tol: the free phase counts as settled when no unit moves by more than this in a step
    (dimensionless, like the state); max_free_steps: its cap; sign_floor: entries whose BPTT
    gradient is below this fraction of the largest one in their cell are left out of the sign
    agreement (their sign is that of rounding error).
    """

    free_tol: float = 1e-14
    max_free_steps: int = 100_000
    sign_floor: float = 1e-6


@dataclass(frozen=True)
class GDUReport:
    """EqProp's per-step updates against BPTT's per-step gradients.

    ``rel_error[name][t]`` = ||Delta_EP + grad_BPTT|| / ||grad_BPTT|| and
    ``sign_agreement[name][t]`` = fraction of entries where sign(Delta_EP) =
    -sign(grad_BPTT), per layer of neurons (``s1 .. sL``) and parameter tensor
    (``W1``, ``b1``, ...) and step t; NaN where BPTT's gradient is still exactly
    zero (the nudge has not reached that layer yet: t < L - l).
    ``ep`` and ``bptt`` hold the updates and gradients themselves, per name and
    step (neurons: batch x units; parameters: their shape); ``counts`` the
    entries each sign agreement counted.
    """

    beta: float
    variant: str
    T: int
    K: int
    rel_error: dict[str, np.ndarray]
    sign_agreement: dict[str, np.ndarray]
    ep: dict[str, list[np.ndarray]]
    bptt: dict[str, list[np.ndarray]]
    counts: dict[str, list[int]]

    def worst(self, kind: str | None = None) -> float:
        """Largest relative error over every reached cell (``kind``: "s" neurons, "W", "b", None all)."""
        vals = [v for n, v in self.rel_error.items() if kind is None or n[0] == kind]
        return float(np.nanmax(np.concatenate(vals)))

    def sign_agreement_of(self, kind: str) -> float:
        """Fraction of entries with agreeing signs over every reached cell of that kind, entries weighted equally."""
        agree = total = 0.0
        for n, v in self.sign_agreement.items():
            if n[0] != kind:
                continue
            for t, frac in enumerate(v):
                if np.isfinite(frac):
                    count = self.counts[n][t]
                    agree += frac * count
                    total += count
        return agree / total if total else float("nan")

    def update_sign_agreement(self, kind: str = "W", floor: float = GDUSettings.sign_floor) -> float:
        """Sign agreement of the update made over the K nudged steps (the sum of the per-step
        updates) with minus BPTT's gradient truncated to those K steps (the sum of its per-step
        gradients), entries of every tensor of that kind pooled; entries where that gradient is
        at most ``floor`` of its tensor's largest are left out. The paper's measure: its reference
        code compares the cumulative EP update with the cumulative BPTT gradient at the last step."""
        agree = total = 0
        for n in (n for n in self.ep if n[0] == kind):
            e, g = np.sum(self.ep[n], axis=0), -np.sum(self.bptt[n], axis=0)
            keep = np.abs(g) > floor * np.abs(g).max()
            agree += int(np.sum(np.sign(e[keep]) == np.sign(g[keep])))
            total += int(keep.sum())
        return agree / total if total else float("nan")


def ep_updates(
    substrate: Any,
    x: np.ndarray,
    y: np.ndarray,
    beta: float,
    K: int,
    variant: str = "centered",
    T: int | None = None,
    settings: GDUSettings = GDUSettings(),
) -> tuple[int, list[list[np.ndarray]], list[dict[str, np.ndarray]]]:
    """EqProp's per-step updates through the contract; returns (T, neurons, params).

    T None: the free phase runs until settled to ``settings.free_tol`` and T is
    the number of steps that took (at least K). ``neurons[t][l - 1]`` is
    Delta_s(t) of layer l (batch, n_l); ``params[t]`` Delta_theta(t) per tensor.
    """
    if variant not in SIGNS:
        raise ConfigurationError(f"unknown GDU variant {variant!r}; valid: {', '.join(SIGNS)}")
    beta, K = float(beta), int(K)
    if not (np.isfinite(beta) and beta > 0) or K < 1:
        raise ConfigurationError(f"beta={beta}, K={K}: need beta > 0 and K >= 1 nudged steps")
    cap, tol = substrate.max_sweeps, substrate.tol
    trajectories = []
    try:
        if T is None:
            substrate.clamp(x)
            substrate.nudge(0.0)
            substrate.max_sweeps, substrate.tol = settings.max_free_steps, settings.free_tol
            report = substrate.relax()
            if not report.converged:
                raise RelaxationError(
                    f"the free phase did not settle to {settings.free_tol:g} in {settings.max_free_steps} time steps "
                    f"(last change {report.residual:.2g}); the GDU check needs a settled free phase: "
                    "use smaller weights or a larger cap"
                )
            T = max(report.sweeps, K)
        for sign in SIGNS[variant]:
            substrate.clamp(x)
            substrate.nudge(0.0)
            substrate.max_sweeps, substrate.tol = int(T), 0.0
            substrate.relax()
            states, grads = [substrate.state()], [substrate.energy_gradients()]
            substrate.nudge(sign * beta, y)
            substrate.max_sweeps = 1
            for _ in range(K):
                substrate.relax()
                states.append(substrate.state())
                grads.append(substrate.energy_gradients())
            trajectories.append((sign, states, grads))
    finally:
        substrate.max_sweeps, substrate.tol = cap, tol
        substrate.nudge(0.0)
    n = len(trajectories)
    neurons = [
        [
            sum(sg * (st[t + 1][l] - st[t][l]) for sg, st, _ in trajectories) / (n * beta)
            for l in range(1, len(trajectories[0][1][0]))
        ]
        for t in range(K)
    ]
    params = [
        {
            name: -sum(sg * (gr[t + 1][name] - gr[t][name]) for sg, _, gr in trajectories) / (n * beta)
            for name in trajectories[0][2][0]
        }
        for t in range(K)
    ]
    return int(T), neurons, params


def gdu_check(
    substrate: Any,
    x: np.ndarray,
    y: np.ndarray,
    beta: float = 1e-3,
    K: int = 10,
    variant: str = "centered",
    settings: GDUSettings = GDUSettings(),
) -> GDUReport:
    """Per-step EqProp updates (neurons and parameters) against BPTT's per-step gradients over K steps.

    ``substrate`` is a discrete-time substrate with ``bptt(x, y, T, K)``
    (:class:`~sim_backends.discrete.DiscreteSubstrate`). Parameters are untouched.
    """
    if not callable(getattr(substrate, "bptt", None)):
        raise ConfigurationError("the GDU check needs a discrete-time substrate with a BPTT oracle (backend discrete)")
    T, neurons, params = ep_updates(substrate, x, y, beta, K, variant, settings=settings)
    ref = substrate.bptt(x, y, T, K)
    ep, bp = {}, {}
    for l in range(1, len(neurons[0]) + 1):
        ep[f"s{l}"] = [neurons[t][l - 1] for t in range(K)]
        bp[f"s{l}"] = [ref.neurons[t][l - 1] for t in range(K)]
    for name in params[0]:
        ep[name] = [params[t][name] for t in range(K)]
        bp[name] = [ref.params[t][name] for t in range(K)]
    rel, sign, counts = {}, {}, {}
    for name in ep:
        rel[name], sign[name], counts[name] = np.full(K, np.nan), np.full(K, np.nan), [0] * K
        for t in range(K):
            e, g = ep[name][t], bp[name][t]
            norm = np.linalg.norm(g)
            if norm == 0.0:
                continue
            rel[name][t] = np.linalg.norm(e + g) / norm
            keep = np.abs(g) > settings.sign_floor * np.abs(g).max()
            sign[name][t] = float(np.mean(np.sign(e[keep]) == -np.sign(g[keep])))
            counts[name][t] = int(keep.sum())
    return GDUReport(
        beta=float(beta), variant=variant, T=T, K=K, rel_error=rel, sign_agreement=sign, ep=ep, bptt=bp, counts=counts
    )


def plot_gdu(report: GDUReport, path: str, entries: int = 5, seed: int = 0) -> str:
    """PNG in the style of the paper's figures: per layer, a few neurons (of the first sample) and
    weights over the K steps, EqProp's update solid and minus BPTT's gradient dashed in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    rows: list[list[str]] = [sorted(n for n in report.ep if n[0] == "s"), sorted(n for n in report.ep if n[0] == "W")]
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 5.6), squeeze=False)
    t = np.arange(report.K)
    for r, names in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(names):
                ax.axis("off")
                continue
            name = names[c]
            ep = np.stack([a[0] if r == 0 else a for a in report.ep[name]]).reshape(report.K, -1)
            bp = np.stack([a[0] if r == 0 else a for a in report.bptt[name]]).reshape(report.K, -1)
            live = np.flatnonzero(np.abs(bp).max(axis=0) > 0)
            pick = rng.choice(live, min(entries, live.size), replace=False) if live.size else np.zeros(0, dtype=int)
            for k, j in enumerate(pick):
                ax.plot(t, -bp[:, j], "--", color=f"C{k}", lw=2.6, alpha=0.55)
                ax.plot(t, ep[:, j], "-", color=f"C{k}", lw=1.0)
            ax.set_title(f"{'neurons ' if r == 0 else ''}{name}", fontsize=10)
            ax.set_xlabel("t (nudged step)")
            ax.grid(alpha=0.3)
    axes[0][0].plot([], [], "k-", label=r"$\Delta^{EP}$")
    axes[0][0].plot([], [], "k--", label=r"$-\nabla^{BPTT}$")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"EqProp updates vs BPTT gradients ({report.variant}, beta={report.beta:g}, T={report.T}, K={report.K})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table_rows(report: GDUReport, what: str = "rel_error") -> list[tuple[str, list[str]]]:
    """(name, one cell per step) for a table of ``rel_error`` (as 1.2e-03) or ``sign_agreement``
    (as a percentage); "·" where BPTT's gradient is still zero. Neurons first, then parameters."""
    values = getattr(report, what)
    names = sorted(n for n in values if n[0] == "s") + [n for n in values if n[0] != "s"]
    out = []
    fmt: Callable[[float], str] = (lambda v: f"{v:.1e}") if what == "rel_error" else (lambda v: f"{100 * v:.1f}%")
    for name in names:
        out.append((name, ["·" if not np.isfinite(v) else fmt(v) for v in values[name]]))
    return out
