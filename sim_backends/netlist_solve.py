"""DC operating point of a netlist circuit for a whole batch, and its check.

Damped Newton steps on the co-content F (exponential diodes make it non-quadratic; without them one
step is exact). Each step solves the quadratic model subject to the ideal diodes, ``A z <= bd``, by a
primal-dual active set (Hintermueller, Ito & Kunisch 2003): the working set of every sample is updated
from its multipliers and violations together, and all samples' KKT systems are solved by one sparse LU
(netlist_kkt.Structure.kkt). A sample whose working set has not settled after ``pdas_max`` iterations is
finished by the exact primal active-set method (Nocedal & Wright, algorithm 16.3), from a feasible point.

Newton's iterates stay feasible (each model solution is, and a damped step lies between two feasible
points), and the working set comes from a fresh solve at every Newton step; nothing of a damped step's
working set is kept. A relaxation counts as converged only after :func:`check` has found Kirchhoff's
current law within ``kcl_rtol`` of the largest branch current at every free node and every ideal
diode's complementarity (no forward drop, no reverse current, current only at zero drop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aeqprop.errors import RelaxationError
from sim_backends.netlist_kkt import (
    Batch,
    Structure,
    _find,
    energy,
    exp_drops,
    exp_terms,
    gradient,
    rows,
)


@dataclass(frozen=True)
class SolverSettings:
    """Tuning of the netlist solver (dimensionless unless stated).

    pdas_max: primal-dual active-set iterations per Newton step before the exact fallback.
    armijo: sufficient decrease of F required of a damped Newton step.
    full_step_rtol: a Newton step below this fraction of (1 V + largest |z|) is taken whole.
    kcl_rtol: converged means every free node's KCL imbalance within this fraction of the largest
      branch current (resistor, diode or nudging) of its sample.
    tight_rtol: an ideal diode's drop counts as zero within this fraction of (1 V + largest |V|).
    curvature_cap: in the Newton model an exponential diode's conductance is capped at this multiple
      of the largest resistor conductance: far forward (a start at which sources forward-bias a
      diode by volts, 1e18 S) the exact Hessian is too ill-conditioned to factorise, and any positive
      definite model gives a descent direction for the line search. Near a solution no diode conducts
      1e6 times more than the stiffest resistor, so the steps are exact Newton steps there.
    junction_step: a Newton step moves no exponential diode's drop by more than this many N VT
      (SPICE limits junction voltages per iteration for the same reason: e^u overshoots).
    """

    pdas_max: int = 40
    armijo: float = 1e-4
    full_step_rtol: float = 1e-6
    kcl_rtol: float = 1e-9
    tight_rtol: float = 1e-12
    curvature_cap: float = 1e6
    junction_step: float = 40.0


SETTINGS = SolverSettings()


@dataclass
class Solution:
    """z (B, nz) V, working sets W (B, m) bool, ideal-diode currents mu (B, m) A, model solves per
    sample, last Newton step (B,) V."""

    z: np.ndarray
    W: np.ndarray
    mu: np.ndarray
    iterations: np.ndarray | None = None
    step: np.ndarray | None = None


def independent(st: Structure, W: np.ndarray) -> np.ndarray:
    """Drop conducting diodes that close a loop of conducting diodes (dependent KKT rows), per sample."""
    if st.diode_forest:
        return W
    W = W.copy()
    for b in range(W.shape[0]):
        parent = list(range(st.nz + 1))
        for k in np.flatnonzero(W[b]):
            a, c = _find(parent, st.ga[k]), _find(parent, st.gc[k])
            if a == c:
                W[b, k] = False
            else:
                parent[a] = c
    return W


def feasible(st: Structure, bd: np.ndarray) -> np.ndarray:
    """Free potentials satisfying every ideal diode of one sample (Bellman-Ford on z_a - z_c <= bd)."""
    dist = np.zeros(st.nz + 1)
    for _ in range(st.nz + 2):
        cand = dist[st.gc] + bd
        if np.all(dist[st.ga] <= cand + 1e-15):
            return dist[:-1] - dist[-1]
        np.minimum.at(dist, st.ga, cand)
    raise RelaxationError(
        "the ideal diodes form a loop that the sources forward-bias (infinite current); "
        "check the diode directions against the source values"
    )


def feasible_start(st: Structure, bt: Batch, z: np.ndarray) -> np.ndarray:
    """A copy of z (B, nz) in which every sample that violates an ideal diode starts from a feasible point."""
    z = np.where(np.isfinite(z), z, 0.0)
    if st.m:
        bad = np.any(rows(st.Ad, z) - bt.bd > _tight_scale(z, bt.bd)[:, None], axis=1)
        for b in np.flatnonzero(bad):
            z[b] = feasible(st, bt.bd[b])
    return z


def _tight_scale(z: np.ndarray, bd: np.ndarray) -> np.ndarray:
    return SETTINGS.tight_rtol * (
        1.0 + np.maximum(np.max(np.abs(z), axis=1, initial=0.0), np.max(np.abs(bd), axis=1, initial=0.0))
    )


def primal_active_set(
    st: Structure, hv: np.ndarray, grad: np.ndarray, slack: np.ndarray, W: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One sample: min 1/2 p^T H p + grad^T p subject to A p <= slack (slack >= 0: p = 0 is feasible).

    After a full step that no diode blocks, the point minimises F on its face by construction and the
    next solve only supplies the multipliers: no test of a step against round-off (which an
    ill-conditioned circuit, a strongly conducting diode, can sit above). Returns (p, W, mu, iterations);
    after max_iter iterations the feasible point reached, which the caller's check refuses by name.
    """
    A = st.Ad
    p, W = np.zeros(st.nz), independent(st, W[None, :] & ~st.held[None, :])[0]
    on_face = False
    for it in range(1, max_iter + 1):
        dp, mu = st.kkt(hv[None, :], W[None, :], -(grad + st.matrix(hv) @ p)[None, :], np.zeros((1, st.m)))
        dp, mu = dp[0], np.where(W, mu[0], 0.0)
        if on_face or np.max(np.abs(dp), initial=0.0) <= 1e-15 * (1.0 + np.max(np.abs(p), initial=0.0)):
            neg = W & (mu < 0)
            if not np.any(neg):
                return p, W, mu, it
            W[int(np.argmin(np.where(W, mu, np.inf)))] = False
            on_face = False
            continue
        Ap, room = A @ dp, slack - A @ p
        cand = np.flatnonzero(~W & (Ap > 0) & ~st.held)
        ratios = np.maximum(room[cand], 0.0) / Ap[cand]
        if len(cand) and ratios.min() < 1.0:
            j = int(np.argmin(ratios))
            p = p + ratios[j] * dp
            W[cand[j]] = True
            on_face = False
        else:
            p = p + dp
            on_face = True
    return p, W, np.where(W, mu, 0.0), max_iter  # unsettled: a feasible point, which the check refuses


def model_step(
    st: Structure, hv: np.ndarray, grad: np.ndarray, slack: np.ndarray, W: np.ndarray, tight: np.ndarray, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimise the quadratic model of every sample subject to the ideal diodes, A p <= slack.

    Returns (p, W, mu, iterations per sample)."""
    B = grad.shape[0]
    p, mu, n = np.zeros_like(grad), np.zeros((B, st.m)), np.zeros(B, dtype=int)
    if not st.m:
        p, _ = st.kkt(hv, np.zeros((B, 0), bool), -grad, np.zeros((B, 0)))
        return p, W, mu, n + 1
    W = W & ~st.held[None, :]
    pend = np.arange(B)
    for _ in range(min(SETTINGS.pdas_max, max_iter)):
        Wp = independent(st, W[pend])
        pp, mm = st.kkt(hv if hv.shape[0] == 1 else hv[pend], Wp, -grad[pend], slack[pend])
        n[pend] += 1
        viol = rows(st.Ad, pp) - slack[pend] > tight[pend, None]
        Wn = (Wp & (mm > 0)) | (~Wp & viol & ~st.held[None, :])
        same = np.all(Wn == Wp, axis=1)
        fin = pend[same]
        p[fin], mu[fin], W[fin] = pp[same], np.where(Wp, mm, 0.0)[same], Wp[same]
        W[pend[~same]] = Wn[~same]
        pend = pend[~same]
        if not len(pend):
            return p, W, mu, n
    for b in pend:  # the working set cycles: the exact method, from the feasible p = 0
        tight_now = np.abs(slack[b]) <= tight[b]
        p[b], W[b], mu[b], k = primal_active_set(
            st, hv[0 if hv.shape[0] == 1 else b], grad[b], np.maximum(slack[b], 0.0), tight_now, max_iter
        )
        n[b] += k
    return p, W, mu, n


def solve(st: Structure, bt: Batch, g: np.ndarray, z: np.ndarray, W: np.ndarray, tol: float, max_iter: int) -> Solution:
    """Operating point of every sample from z (any), working-set guess W."""
    B = z.shape[0]
    z = feasible_start(st, bt, z)
    hbase = st.base_hessian(g, bt.beta)
    W = np.zeros((B, st.m), bool) if W is None else W.copy()
    mu = np.zeros((B, st.m))
    its, step, prev = np.zeros(B, dtype=int), np.full(B, np.inf), np.full(B, np.inf)
    nonlinear = st.Ax.shape[0] > 0
    act = np.arange(B)
    for _ in range(max_iter):
        za = z[act]
        cx = None
        if nonlinear:
            cap = SETTINGS.curvature_cap * max(float(np.max(g, initial=0.0)), abs(bt.beta), 1e-300)
            cx = np.minimum(exp_terms(exp_drops(st, bt, za, act), st.x_par, 2), cap)
        hv = st.hessian_values(g, bt.beta, cx)
        grad = gradient(st, bt, hbase, za, act)
        slack = bt.bd[act] - rows(st.Ad, za)
        tight = _tight_scale(za, bt.bd[act])
        d, Wa, mua, n = model_step(st, hv, grad, slack, W[act] & (np.abs(slack) <= tight[:, None]), tight, max_iter)
        its[act] += n
        t = np.ones(len(act))
        if nonlinear:
            jump = np.max(np.abs(rows(st.Ax, d)) / st.x_par[:, 1], axis=1, initial=0.0)
            t = np.minimum(1.0, SETTINGS.junction_step / np.maximum(jump, 1e-300))
            f0, slope = energy(st, bt, hbase, za, act), np.sum(grad * d, axis=1)
            big = np.max(np.abs(d), axis=1) > SETTINGS.full_step_rtol * (1.0 + np.max(np.abs(za), axis=1))
            todo = np.flatnonzero(big)
            while len(todo):
                ft = energy(st, bt, hbase, za[todo] + t[todo, None] * d[todo], act[todo])
                fail = ~(ft <= f0[todo] + SETTINGS.armijo * t[todo] * slope[todo])
                todo = todo[fail]
                t[todo] *= 0.5
                todo = todo[t[todo] > 1e-12]
        z[act] = za + t[:, None] * d
        W[act], mu[act] = Wa, mua
        s = np.max(np.abs(t[:, None] * d), axis=1, initial=0.0)
        step[act] = s
        full = t == 1.0
        # stop: converged, linear (one exact step), or full steps no longer shrinking (round-off floor)
        local = s <= SETTINGS.full_step_rtol * (1.0 + np.max(np.abs(za), axis=1))
        stop = ~np.full(len(act), nonlinear) | (s <= tol) | (full & local & (s >= prev[act]))
        prev[act] = np.where(full, s, np.inf)
        act = act[~stop]
        if not len(act):
            break
    if not np.all(np.isfinite(z)):
        raise RelaxationError("the node voltages became non-finite; check the conductances and beta")
    return Solution(z, W, mu, its, np.where(nonlinear, step, 0.0))


@dataclass
class Check:
    """Kirchhoff's law and the diodes at a solution, per sample: KCL imbalance per free group (A),
    ideal-diode currents anode -> cathode (A) and drops V_a - V_c (V), largest branch current (A), and
    whether all hold (``ok``), with the worst imbalance relative to the largest branch current (round-off
    floor included) and the group of the worst excess over the floor."""

    residual: np.ndarray
    currents: np.ndarray
    drops: np.ndarray
    largest: np.ndarray
    ok: np.ndarray
    worst: float
    worst_group: int
    top: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


def check(st: Structure, bt: Batch, g: np.ndarray, sol: Solution) -> Check:
    """The check of a solution. A node's imbalance passes within ``kcl_rtol`` of its sample's largest
    branch current, or within the round-off floor of its own sum (1e-13 of the sum of the magnitudes
    of its terms, g |V| per resistor end) where that is larger: big conductances between nearly equal
    potentials carry little current but round like their terms."""
    hbase = st.base_hessian(g, bt.beta)
    z, W = sol.z, sol.W
    mu = np.where(W, sol.mu, 0.0)
    res = gradient(st, bt, hbase, z) + rows(st.AdT, mu)
    V = rows(st.P, z) + bt.off
    cur = np.abs(g[:, None] * (st.inc @ np.ascontiguousarray(V.T)))
    largest = np.max(cur, axis=0, initial=0.0)
    top = np.unique(np.argmax(cur, axis=0)) if cur.shape[0] else np.zeros(0, dtype=int)
    largest = np.maximum(largest, np.max(np.abs(mu), axis=1, initial=0.0))
    if st.Ax.shape[0]:
        largest = np.maximum(largest, np.max(np.abs(exp_terms(exp_drops(st, bt, z), st.x_par, 1)), axis=1))
    largest = np.maximum(largest, 1e-300)
    drops = rows(st.Ad, z) - bt.bd
    tight = _tight_scale(z, bt.bd)[:, None]
    excess = np.abs(res)
    if np.any(np.max(excess, axis=1, initial=0.0) > SETTINGS.kcl_rtol * largest):  # the floor, where it matters
        floor = 1e-13 * (st.absAr.T @ (g[:, None] * (st.abs_inc @ np.ascontiguousarray(np.abs(V).T)))).T
        excess = np.maximum(excess - floor, 0.0)
    ok = (
        (np.max(excess, axis=1, initial=0.0) <= SETTINGS.kcl_rtol * largest)
        & np.all(drops <= tight, axis=1)
        & np.all(mu >= -SETTINGS.kcl_rtol * largest[:, None], axis=1)
        & np.all(~W | (np.abs(drops) <= tight), axis=1)
    )
    rel = np.max(np.abs(res), axis=1, initial=0.0) / largest
    b = int(np.argmax(np.max(excess, axis=1, initial=0.0) / largest)) if len(rel) else 0
    worst_group = int(np.argmax(excess[b])) if st.nz else -1
    return Check(res, mu, drops, largest, ok, float(rel.max(initial=0.0)), worst_group, top)
