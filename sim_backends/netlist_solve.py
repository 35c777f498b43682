"""DC operating point of a netlist circuit, one sample: primal active set on a sparse KKT system,
inside damped Newton steps when exponential diodes are present (Nocedal & Wright, algorithm 16.3)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from aeqprop.errors import RelaxationError


def _kkt(H: sp.csc_matrix, AW: sp.csr_matrix, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve [[H, AW^T], [AW, 0]] [p; mu] = [rhs; 0] by a sparse LU factorisation."""
    n, k = H.shape[0], AW.shape[0]
    K = sp.bmat([[H, AW.T], [AW, None]], format="csc") if k else H
    try:
        sol = splu(sp.csc_matrix(K)).solve(np.r_[rhs, np.zeros(k)])
    except RuntimeError:
        raise RelaxationError(
            "the circuit's equations are singular: part of it floats (a trainable conductance at 0 S?) "
            "or conducting diodes fix one potential twice; raise that conductance or check the diodes"
        ) from None
    return sol[:n], sol[n:]


def kkt_solve(H: sp.csc_matrix, AW: sp.csr_matrix, rhs: np.ndarray) -> np.ndarray:
    """The z part of the KKT solve: the response of the free potentials with the working set held."""
    return _kkt(H, AW, rhs)[0]


def _groups(sub, nodes: np.ndarray) -> np.ndarray:
    g = sub.group[nodes]
    return np.where(g < 0, sub.nz, g)  # index nz: the ground group, potential 0


def _feasible(sub, b: int, bvec: np.ndarray) -> np.ndarray:
    """Free potentials satisfying every ideal diode, by Bellman-Ford on the difference constraints."""
    ga, gc = _groups(sub, sub.d_nodes[:, 0]), _groups(sub, sub.d_nodes[:, 1])
    dist = np.zeros(sub.nz + 1)
    for _ in range(sub.nz + 2):
        cand = dist[gc] + bvec  # z_a <= z_c + bvec
        if np.all(dist[ga] <= cand + 1e-15):
            return dist[:-1] - dist[-1]
        np.minimum.at(dist, ga, cand)
    raise RelaxationError(
        "the ideal diodes form a loop that the sources forward-bias (infinite current); "
        "check the diode directions against the source values"
    )


def _independent(sub, W: list[int]) -> list[int]:
    """Drop conducting diodes that close a loop of conducting diodes (their rows would be dependent)."""
    parent = list(range(sub.nz + 1))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ga, gc, keep = _groups(sub, sub.d_nodes[:, 0]), _groups(sub, sub.d_nodes[:, 1]), []
    for k in W:
        a, c = find(ga[k]), find(gc[k])
        if a != c:
            parent[a] = c
            keep.append(k)
    return keep


def active_set(H, grad0, A, bvec, z0, W, max_iter):
    """min 1/2 p^T H p + grad0^T p subject to A (z0 + p) <= bvec, from a feasible z0; returns (z, W, iterations)."""
    z, W = z0.copy(), list(W)
    scale = 1.0 + float(np.max(np.abs(z0), initial=0.0))
    for it in range(1, max_iter + 1):
        g = grad0 + H @ (z - z0)
        p, mu = _kkt(H, A[W], -g)
        if np.max(np.abs(p), initial=0.0) <= 1e-13 * scale:
            if not W or np.min(mu) >= -1e-13 * (1.0 + np.max(np.abs(mu))):
                return z, W, it
            W.pop(int(np.argmin(mu)))
            continue
        Ap, slack = A @ p, bvec - A @ z
        alpha, block = 1.0, None
        for i in np.flatnonzero(Ap > 1e-15 * scale):
            if i not in W and slack[i] / Ap[i] < alpha:
                alpha, block = max(slack[i] / Ap[i], 0.0), int(i)
        z = z + alpha * p
        if block is not None:
            W.append(block)
    raise RelaxationError(f"the diode active set did not settle in {max_iter} iterations; raise max_sweeps")


def solve_sample(sub, b: int, g: np.ndarray, tol: float, max_iter: int):
    """Operating point of sample b: (z, conducting diodes, iterations, last Newton step in V)."""
    off = sub._off[b]
    A = sub.Ad
    bvec = off[sub.d_nodes[:, 1]] - off[sub.d_nodes[:, 0]]  # V_a - V_c <= 0  <=>  A z <= bvec
    if len(bvec):
        fixed = np.asarray(abs(A).sum(axis=1)).ravel() == 0
        if np.any(fixed & (bvec < -1e-12)):
            k = int(np.flatnonzero(fixed & (bvec < -1e-12))[0])
            raise RelaxationError(f"diode {sub.d_names[k]} is forward-biased by sources alone; reverse it or add a resistor")
    z = sub._z[b].copy()
    if len(bvec) and np.any(A @ z > bvec + 1e-12):
        z = _feasible(sub, b, bvec)
    W = sub._work[b] or []
    W = _independent(sub, [k for k in W if abs((A @ z)[k] - bvec[k]) <= 1e-12 * (1 + abs(bvec[k]))])
    its, step = 0, 0.0
    for _ in range(max_iter):
        H, grad = sub._model(b, z, g, sub._beta)
        znew, W, n = active_set(H, grad, A, bvec, z, W, max_iter) if len(bvec) else (z - _kkt(H, A[[]], grad)[0], [], 1)
        its += n
        d = znew - z
        if not len(sub.x_nodes):
            return znew, W, its, 0.0
        t, f0, slope = 1.0, sub._F(b, z, g), float(grad @ d)
        if np.max(np.abs(d), initial=0.0) > 1e-6 * (1.0 + np.max(np.abs(z), initial=0.0)):
            while sub._F(b, z + t * d, g) > f0 + 1e-4 * t * slope and t > 1e-12:
                t *= 0.5  # damped far from the solution; near it F is flat to rounding and full steps converge
        z = z + t * d
        step = float(np.max(np.abs(t * d), initial=0.0))
        if step <= tol or (t < 1e-12):
            return z, W, its, step
    return z, W, its, step


def diode_currents(sub, g: np.ndarray):
    """Per sample: KCL imbalance per free group, ideal-diode currents and drops, largest branch current."""
    B, V = sub._x.shape[0], sub._V()
    res, cur = np.zeros((B, sub.nz)), np.zeros((B, len(sub.d_nodes)))
    big = 0.0
    for b in range(B):
        H, grad = sub._model(b, sub._z[b], g, sub._beta)
        W = sub._work[b] or []
        if W:
            AWt = sub.Ad[W].T.toarray()
            mu = np.linalg.lstsq(AWt, -grad, rcond=None)[0]
            cur[b, W] = mu
            grad = grad + AWt @ mu
        res[b] = grad
        dv = V[b, sub.r_nodes[:, 0]] - V[b, sub.r_nodes[:, 1]]
        big = max(big, float(np.max(np.abs(g * dv), initial=0.0)), float(np.max(np.abs(cur[b]), initial=0.0)))
        if len(sub.x_nodes):
            big = max(big, float(np.max(np.abs(sub._exp(V[b, sub.x_nodes[:, 0]] - V[b, sub.x_nodes[:, 1]], 1)))))
    drops = V[:, sub.d_nodes[:, 0]] - V[:, sub.d_nodes[:, 1]]
    return res, cur, drops, big
