"""Coloured nonlinear block Gauss-Seidel for a netlist circuit: the fast relaxation of every sample.

The free potentials ``z`` (one per group of nodes tied by voltage sources) are coloured once per
circuit (netlist_colour), so that no element joins two groups of one colour. Given the others, each
group of a colour class then minimises the co-content F alone, on a line: its KCL equation

    H_ii v + r_i + sum_k s_k i_k(s_k v + o_k) = 0,    L_i <= v <= U_i

with ``r_i`` the current from the resistors and nudging to the other groups and sources, ``i_k`` the
exponential diodes (SPICE's diode, netlist_kkt.exp_terms) and ``L_i, U_i`` the ideal diodes to other
groups and to held nodes. Resistors alone give the closed form ``clip(-r_i / H_ii, L_i, U_i)``; with
exponential diodes a safeguarded Newton iteration solves it, inside the bracket that the resistors
give (F'' >= H_ii, so the root lies within |F'(v)| / H_ii of any v). A sweep visits the classes in
turn, every group of a class and every sample at once (one dense or sparse product for the
neighbour sums). On a
layered circuit the classes are the alternating layers: the layered solver's block coordinate descent.

F never rises, and every iterate satisfies every ideal diode. Sweeps stall where two free groups are
joined by a conducting ideal diode (each end is held at the other's bound) or converge slowly where a
diode conducts far more than its neighbours; netlist_solve's exact solver finishes those samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_backends.netlist_colour import ColourClass, Colouring
from sim_backends.netlist_kkt import Batch, Structure, exp_drops, exp_terms, rows
from sim_backends.netlist_solve import SETTINGS, _tight_scale


@dataclass(frozen=True)
class SweepSettings:
    """Tuning of the coloured sweeps (dimensionless unless stated).

    max_sweeps: sweeps before the exact solver takes the samples not yet settled.
    stall_ratio: a largest potential change per sweep that shrinks by less than this factor (from
      sweep ``min_sweeps`` on) means slow convergence: the exact solver takes over.
    min_sweeps: sweeps before the contraction rate is judged.
    newton_steps: safeguarded Newton iterations per group and sweep at most (exponential diodes).
    newton_rtol: a Newton step below this fraction of (1 V + |v|) ends the iteration on one group.
    """

    max_sweeps: int = 200
    stall_ratio: float = 0.7
    min_sweeps: int = 6
    newton_steps: int = 60
    newton_rtol: float = 1e-15


SWEEPS = SweepSettings()


@dataclass
class SweepResult:
    """After the sweeps: z (B, nz) V, the ideal diodes' working sets W (B, m) and currents mu (B, m) A,
    which samples passed the quick check (``ok``) and their KCL residual relative to its bound of the
    largest branch current (``rel``), the sweeps done, and whether they stalled (slow or stuck)."""

    z: np.ndarray
    W: np.ndarray
    mu: np.ndarray
    ok: np.ndarray
    rel: np.ndarray
    sweeps: int
    stalled: bool


def _bounds(c: ColourClass, bd: np.ndarray, zt: np.ndarray | None, B: int) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of every group of the class, shape (n, B), from its ideal diodes given the other groups.

    zt None: from the diodes to held nodes alone (``c.fixed``), whose bounds do not change in a sweep;
    otherwise from the diodes to other free groups (``~c.fixed``)."""
    n = len(c.nodes)
    lo, hi = np.full((n, B), -np.inf), np.full((n, B), np.inf)
    for fixed, (k, node, a, Ad, upper, u_start, u_nodes, l_start, l_nodes) in c.diodes.items():
        if not len(k) or fixed != (zt is None):
            continue
        lim = bd[:, k].T / a[:, None]  # a v <= bd - rest
        if zt is not None:
            lim = lim - (Ad @ zt - a[:, None] * zt[c.at[node]]) / a[:, None]
        if len(u_nodes):
            hi[u_nodes] = np.minimum.reduceat(lim[upper], u_start, axis=0)
        if len(l_nodes):
            lo[l_nodes] = np.maximum.reduceat(lim[~upper], l_start, axis=0)
    return lo, hi


def _line_solve(
    c: ColourClass,
    h: np.ndarray,
    r: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    v: np.ndarray,
    dx: np.ndarray,
    zt: np.ndarray,
    settings: SweepSettings,
) -> np.ndarray:
    """Minimise F on the line for the class's groups with exponential diodes (rows c.nl of the (n, B)
    arrays): the root of F' in [lo, hi], or the bound F' points past. Returns the new potentials (V)."""
    nl = c.nl
    h, r, lo, hi = h[nl, None], r[nl], lo[nl], hi[nl]
    w = np.clip(v[nl], lo, hi)
    xp = c.nl_pos[c.x_node]
    s = c.x_s[:, None]
    rest = c.Ax @ zt + dx[:, c.x_k].T - s * zt[c.at[c.x_node]]
    par = c.x_par

    def f1(w: np.ndarray) -> np.ndarray:  # F' on the line, A
        return h * w + r + c.S1 @ exp_terms((s * w[xp] + rest).T, par, 1).T

    def f2(w: np.ndarray) -> np.ndarray:  # F'' on the line, S
        return h + c.S2 @ exp_terms((s * w[xp] + rest).T, par, 2).T

    # a bound that F' points past is the answer (F is convex on the line)
    fin_hi, fin_lo = np.isfinite(hi), np.isfinite(lo)
    at_hi = fin_hi & (f1(np.where(fin_hi, hi, w)) <= 0)
    at_lo = fin_lo & (f1(np.where(fin_lo, lo, w)) >= 0) & ~at_hi
    a = f1(w)
    # F'' >= h: the root lies within |F'(w)| / h of w
    b_lo = np.where(a < 0, w, np.maximum(lo, w - a / h))
    b_hi = np.where(a < 0, np.minimum(hi, w - a / h), w)
    b_lo = np.where(at_hi, hi, np.where(at_lo, lo, b_lo))
    b_hi = np.where(at_hi, hi, np.where(at_lo, lo, b_hi))
    w = np.clip(w, b_lo, b_hi)
    rising = a < 0  # F falls from the start towards the root: so does it along the bracket's near end
    active = np.ones(w.shape, bool)
    step_old = b_hi - b_lo
    for _ in range(settings.newton_steps):
        a = f1(w)
        b_lo = np.where(a < 0, w, b_lo)
        b_hi = np.where(a > 0, w, b_hi)
        d2 = f2(w)
        # Newton where it lands inside the bracket and halves the step at least (Numerical Recipes'
        # rtsafe); else bisection, which an exponential far from its root outpaces (one N VT per step)
        newton = (((w - b_hi) * d2 - a < 0) != ((w - b_lo) * d2 - a < 0)) & (np.abs(2 * a) <= np.abs(step_old * d2))
        step_old = np.where(newton, a / d2, 0.5 * (b_hi - b_lo))
        wn = np.where(newton, w - a / d2, 0.5 * (b_lo + b_hi))
        wn = np.where(active & (a != 0), wn, w)
        active &= np.abs(wn - w) > settings.newton_rtol * (1.0 + np.abs(w))
        w = wn
        if not np.any(active):
            break
    # unfinished: the bracket's end on the start's side, where F is below its start value (F convex)
    w = np.where(active, np.where(rising, b_lo, b_hi), w)
    return w


def sweep_once(
    col: Colouring, bt: Batch, ct: np.ndarray, fixed: list, mats: list, zt: np.ndarray, settings: SweepSettings
) -> np.ndarray:
    """One sweep over the colour classes, in place on zt (nz, B) in the colouring's layout, with the
    classes' matrices ``mats`` (Colouring.matrices); returns the largest change per sample (V)."""
    B = zt.shape[1]
    change = np.zeros(B)
    for i, (c, (Hoff, cols, h, ninv)) in enumerate(zip(col.classes, mats)):
        old = zt[c.rows]
        r = Hoff @ zt[cols]
        r += ct[c.rows]
        lo, hi = fixed[i]
        if len(c.diodes[False][0]):
            lo2, hi2 = _bounds(c, bt.bd, zt, B)
            lo, hi = np.maximum(lo, lo2), np.minimum(hi, hi2)
        v = r * ninv  # -r / H_ii
        if c.bounded:
            np.minimum(np.maximum(v, lo, out=v), hi, out=v)
        if len(c.nl):
            v[c.nl] = _line_solve(c, h, r, lo, hi, old, bt.dx, zt, settings)
        r = np.subtract(v, old, out=r)
        np.maximum(change, np.abs(r, out=r).max(axis=0, initial=0.0), out=change)
        zt[c.rows] = v
    return change


def sweep(
    col: Colouring,
    bt: Batch,
    g: np.ndarray,
    z: np.ndarray,
    tol: float,
    top: np.ndarray,
    r_nodes: np.ndarray,
    settings: SweepSettings = SWEEPS,
) -> SweepResult:
    """Sweep from z (B, nz), feasible, until every sample passes :func:`quick_check` (with the resistors
    ``top``, node pairs ``r_nodes``), or stop when the sweeps stall.

    The check is made once the change predicted to remain, ``d q / (1 - q)`` for the last change d
    and its contraction q, is at most tol (V) everywhere; after a failed check, once the changes have
    shrunk by the factor the residual still had to shrink (the residual scales with them)."""
    zt = np.ascontiguousarray(z.T[col.perm])  # the sweep's layout: a colour's groups consecutive
    ct = np.ascontiguousarray(bt.c.T[col.perm])
    B = z.shape[0]
    if col.fixed_bounds is None or col.fixed_bounds[0] is not bt.bd:  # kept per batch (clamp)
        col.fixed_bounds = (bt.bd, [_bounds(c, bt.bd, None, B) for c in col.classes])
    fixed = col.fixed_bounds[1]
    mats = col.matrices(g, bt.beta)

    def result(n: int, stalled: bool) -> SweepResult:
        zs = zt[col.back].T
        return SweepResult(zs, *quick_check(col, bt, ct, mats, g, zs, zt, top, r_nodes), n, stalled)

    prev, due = -1.0, -1.0  # the last largest change (V); the change at which to check again
    for n in range(1, settings.max_sweeps + 1):
        d = sweep_once(col, bt, ct, fixed, mats, zt, settings)
        dm = float(d.max(initial=0.0))
        if not np.isfinite(dm):
            zt[~np.isfinite(zt)] = 0.0
            return result(n, True)
        q = 0.0 if dm == 0.0 else 0.999 if prev <= 0.0 else min(dm / prev, 0.999)
        prev = dm
        if dm * q / (1.0 - q) <= tol and (due < 0.0 or dm <= due):
            res = result(n, False)
            if np.all(res.ok):
                return res
            if float(d[~res.ok].max()) == 0.0:
                res.stalled = True  # a fixed point that is not a solution
                return res
            due = dm * min(SETTINGS.kcl_rtol / max(float(res.rel[~res.ok].max()), 1e-300), 1.0)
        if n >= settings.min_sweeps and q > settings.stall_ratio and dm > tol:
            return result(n, True)
    return result(settings.max_sweeps, True)


def multipliers(
    st: Structure, bt: Batch, grad: np.ndarray, z: np.ndarray, one_bound: bool, tight_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Working sets W (B, m) and ideal-diode currents mu (B, m) in A at swept potentials z (B, nz).

    A group held at its bound by a diode to a held node carries, through that diode, the current its
    other branches push (mu_k = -dF/dz_j / A_kj); where several such diodes are tight at one group the
    current goes through one whose direction it fits. Diodes between two free groups get none: if
    one must conduct, the check fails and the exact solver takes the sample."""
    B = z.shape[0]
    W, mu = np.zeros((B, st.m), bool), np.zeros((B, st.m))
    if not st.m:
        return W, mu
    drops = z[:, st.bcol] * st.bval - bt.bd
    tight = np.abs(drops) <= tight_scale
    bound = st.bound & ~st.held
    if one_bound:  # at most one such diode per group (Colouring.one_bound)
        W = tight & bound[None, :]
        return W, np.where(W, -grad[:, st.bcol] / st.bval, 0.0)
    b, k = np.nonzero(tight & st.bound[None, :] & ~st.held[None, :])
    j = st.bcol[k]
    cand = -grad[b, j] / st.bval[k]
    first = np.lexsort((cand < 0, b * st.nz + j))
    key = (b * st.nz + j)[first]
    one = first[np.r_[True, key[1:] != key[:-1]]] if len(key) else first
    W[b[one], k[one]] = True
    mu[b[one], k[one]] = cand[one]
    return W, mu


def quick_check(
    col: Colouring,
    bt: Batch,
    ct: np.ndarray,
    mats: list,
    g: np.ndarray,
    z: np.ndarray,
    zt: np.ndarray,
    top: np.ndarray,
    r_nodes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """netlist_solve.check with a lower bound of the largest branch current: the largest among the
    resistors ``top`` (those that carried the largest current at the last full check), the ideal and
    the exponential diodes. Passing it passes check. z (B, nz) and the same in the sweep's layout zt
    (nz, B). Returns (W, mu, passed per sample, residual per sample relative to the bound)."""
    st = col.st
    gt = np.empty_like(zt)  # dF/dz in the sweep's layout: the classes' blocks, then the diodes
    for c, (Hoff, cols, h, _) in zip(col.classes, mats):
        r = Hoff @ zt[cols]
        r += ct[c.rows]
        r += h[:, None] * zt[c.rows]
        gt[c.rows] = r
    grad = gt[col.back].T
    if st.Ax.shape[0]:
        grad = grad + rows(st.Ax.T, exp_terms(exp_drops(st, bt, z), st.x_par, 1))
    tight = _tight_scale(z, bt.bd)[:, None]
    W, mu = multipliers(st, bt, grad, z, col.one_bound, tight)
    res = grad + rows(st.AdT, mu) if st.m else grad
    largest = np.max(np.abs(mu), axis=1, initial=0.0)
    if len(top):
        V = rows(st.P, z) + bt.off
        nodes = r_nodes[top]
        largest = np.maximum(largest, np.max(g[top] * np.abs(V[:, nodes[:, 0]] - V[:, nodes[:, 1]]), axis=1))
    if st.Ax.shape[0]:
        largest = np.maximum(largest, np.max(np.abs(exp_terms(exp_drops(st, bt, z), st.x_par, 1)), axis=1))
    largest = np.maximum(largest, 1e-300)
    rtol = SETTINGS.kcl_rtol
    rel = np.max(np.abs(res), axis=1, initial=0.0) / largest
    ok = rel <= rtol
    if st.m:
        ok &= np.all(rows(st.Ad, z) - bt.bd <= tight, axis=1) & np.all(mu >= -rtol * largest[:, None], axis=1)
    return W, mu, ok, rel
