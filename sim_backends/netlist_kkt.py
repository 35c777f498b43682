"""Batched linear algebra of a netlist circuit: the co-content F, its gradient and Hessian in the
free potentials ``z`` for every sample at once, and the KKT systems of the conducting ideal diodes
solved for the whole batch by one sparse LU factorisation of a block-diagonal matrix.

Every sample's Hessian has the same sparsity pattern (the resistors, exponential diodes and nudging
conductances in z); only its values differ (the exponential diodes' conductances). The pattern and
the linear maps from branch conductances to its values are built once per circuit; a batch's system
is assembled from index arrays without a Python loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import SuperLU, splu

from aeqprop.errors import RelaxationError


@dataclass(frozen=True)
class DiodeModel:
    """Exponential (Shockley) diodes: ``i = IS (exp(V_d / (N VT)) - 1)``.

    u_max: beyond ``V_d = u_max N VT`` the exponential continues as its second-order Taylor
    expansion (convex, finite). SPICE has no such limit; at 400 it lies past any current a
    float64 circuit carries (IS e^400 > 1e150 A for any IS > 1e-24 A), so it only keeps the
    line search finite far from the solution.
    """

    u_max: float = 400.0


DIODE = DiodeModel()

# the samples a function works on: all of a batch, or some by index
Selector = slice | np.ndarray
_ALL = slice(None)


def exp_terms(vd: np.ndarray, par: np.ndarray, order: int) -> np.ndarray:
    """Co-content in W (0), current in A (1) or conductance in S (2) of exponential diodes at drops vd (V).

    SPICE's diode (Berkeley SPICE3, as ngspice): ``i = IS (e^u - 1)`` with ``u = V_d / (N VT)`` for
    u >= -3, and below it ``i = -IS (1 + (3 / (e u))^3)``, which meets the exponential with its slope
    at u = -3 and tends to -IS. Both are increasing, so the co-content stays convex.
    """
    i_s, nvt = par[:, 0], par[:, 1]
    u = vd / nvt
    t = np.maximum(u - DIODE.u_max, 0.0)
    e = np.exp(np.clip(u, -3.0, DIODE.u_max))
    rev = u < -3.0
    ur = np.minimum(u, -3.0)
    c3 = np.exp(-3.0)
    if order == 0:
        fwd = nvt * (e * (1 + t + t * t / 2) - u)
        return i_s * np.where(rev, nvt * (-ur + 13.5 * c3 / ur**2 - 0.5 * c3), fwd)
    if order == 1:
        return i_s * np.where(rev, -(1 + 27.0 * c3 / ur**3), e * (1 + t) - 1)
    return i_s / nvt * np.where(rev, 81.0 * c3 / ur**4, e)


def _pair_map(A: sp.csr_matrix, key: np.ndarray, n: int) -> sp.csr_matrix:
    """Sparse M with ``M @ w`` = the values of ``A^T diag(w) A`` at the pattern positions ``key``."""
    A = sp.coo_matrix(A)
    rows, cols, vals = A.row, A.col, A.data
    order = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    i, j = _pairs_by_row(rows)
    pos = np.searchsorted(key, cols[i] * n + cols[j])
    return sp.csr_matrix((vals[i] * vals[j], (pos, rows[i])), shape=(len(key), A.shape[0]))


def _pairs_by_row(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) of entries sharing a row, rows sorted (a branch row holds at most two entries)."""
    a, b = np.arange(len(rows) - 1), np.arange(1, len(rows))
    m = rows[a] == rows[b]
    idx = np.arange(len(rows))
    return np.concatenate([idx, a[m], b[m]]), np.concatenate([idx, b[m], a[m]])


def rows(M: sp.spmatrix, X: np.ndarray) -> np.ndarray:
    """``M`` applied to every row of X, ``(M @ X^T)^T``, with X^T laid out for the sparse kernel."""
    return (M @ np.ascontiguousarray(X.T)).T


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


class Structure:
    """The circuit's matrices in z: ``Ar`` resistors, ``Ad`` ideal diodes, ``Ax`` exponential diodes,
    ``Ao`` outputs (rows ``e_a - e_b`` mapped through the groups), and the shared Hessian pattern."""

    def __init__(
        self,
        nz: int,
        Ar: sp.spmatrix,
        Ad: sp.spmatrix,
        Ax: sp.spmatrix,
        Ao: sp.spmatrix,
        x_par: np.ndarray,
        ga: np.ndarray,
        gc: np.ndarray,
        inc: sp.spmatrix | np.ndarray,
        P: sp.spmatrix,
    ) -> None:
        self.nz, self.m = nz, Ad.shape[0]
        self.inc, self.abs_inc, self.P = (
            sp.csr_matrix(inc),
            abs(sp.csr_matrix(inc)),
            sp.csr_matrix(P),
        )  # resistors x nodes
        self.ga, self.gc = ga, gc  # free group of each ideal diode's anode and cathode; nz: held by sources
        parent = list(range(nz + 1))
        self.diode_forest = True  # no loop of ideal diodes: no working set has dependent rows
        for a, c in zip(ga, gc):
            if a == c:  # both ends held by sources, or in one group: a constant, never conducting
                continue
            ra, rc = _find(parent, int(a)), _find(parent, int(c))
            self.diode_forest &= bool(ra != rc)
            parent[ra] = rc
        self.Ar, self.Ad, self.Ax, self.Ao = (sp.csr_matrix(M) for M in (Ar, Ad, Ax, Ao))
        self.AdT = self.Ad.T.tocsr()
        self.absAr = abs(self.Ar)
        self.x_par = x_par
        pat = (
            abs(self.Ar.T) @ abs(self.Ar)
            + abs(self.Ax.T) @ abs(self.Ax)
            + abs(self.Ao.T) @ abs(self.Ao)
            + sp.identity(nz)
        ).tocoo()
        key = np.unique(pat.row.astype(np.int64) * nz + pat.col)
        self.pr, self.pc, self.key = key // nz, key % nz, key
        self.Mr, self.Mx, self.Mo = (_pair_map(M, key, nz) for M in (self.Ar, self.Ax, self.Ao))
        A = sp.coo_matrix(self.Ad)
        self.a_row, self.a_col, self.a_val = A.row, A.col, A.data
        # a diode whose both ends are held by sources has an empty row: a constant, never in a working set
        self.held = np.asarray(abs(self.Ad).sum(axis=1)).ravel() == 0
        # a diode from a free group to a held node fixes that group's z when it conducts (a bound)
        nnz_row = np.bincount(self.a_row, minlength=self.m)
        self.bound = nnz_row == 1
        self.bcol, self.bval = np.zeros(self.m, dtype=int), np.ones(self.m)
        one = self.bound[self.a_row]
        self.bcol[self.a_row[one]], self.bval[self.a_row[one]] = self.a_col[one], self.a_val[one]
        nnz = len(key)
        self.pdiag = self.pr == self.pc
        self.Prow = sp.csr_matrix((np.ones(nnz), (self.pr, np.arange(nnz))), shape=(nz, nnz))  # sums entries per row
        self.ip = self._ordering()
        self._base_key: tuple[np.ndarray, float] | None = None
        self._base: sp.csc_matrix | None = None
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _ordering(self) -> np.ndarray:
        """Position of each z in a fill-reducing order of the Hessian, found once per circuit: the
        block-diagonal batch matrix is then factorised in that order without pivoting (it is SPD)."""
        if not self.nz:
            return np.zeros(0, dtype=int)
        H = sp.csc_matrix((np.where(self.pdiag, len(self.pr), -1.0), (self.pr, self.pc)), shape=(self.nz, self.nz))
        lu = splu(H, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        best, fill = np.arange(self.nz), np.inf
        for cand in (np.arange(self.nz), lu.perm_c, np.argsort(lu.perm_c)):
            P = H[np.argsort(cand)][:, np.argsort(cand)]  # variable i at position cand[i]
            f = splu(sp.csc_matrix(P), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
            if f.L.nnz + f.U.nnz < fill:
                best, fill = np.asarray(cand), f.L.nnz + f.U.nnz
        return best

    def hessian_times(self, hvals: np.ndarray, x: np.ndarray) -> np.ndarray:
        """H_b x_b for every sample, from pattern values (B or 1, nnz) and x (B, nz)."""
        return rows(self.Prow, hvals * x[:, self.pc])

    def _kkt_bounds(
        self, hvals: np.ndarray, W: np.ndarray, top: np.ndarray, bot: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The KKT solve when every conducting diode is a bound: its group's step is fixed, the
        rest is an SPD system (one Cholesky-like LU of the block-diagonal batch, fixed order)."""
        B, nz = top.shape
        fixed, pfix = np.zeros((B, nz), bool), np.zeros((B, nz))
        b, k = np.nonzero(W)
        j = self.bcol[k]
        fixed[b, j] = True
        pfix[b, j] = bot[b, k] / self.bval[k]
        hvals = np.broadcast_to(hvals, (B, len(self.pr)))
        rhs = np.where(fixed, pfix, top - self.hessian_times(hvals, pfix))
        vals = np.where(fixed[:, self.pr] | fixed[:, self.pc], 0.0, hvals) + (self.pdiag[None, :] & fixed[:, self.pr])
        order, indices, indptr = self._block_csc(B)
        K = sp.csc_matrix((vals[:, order].ravel(), indices, indptr), shape=(B * nz, B * nz))
        sol = self._lu(K, "NATURAL", symmetric=True).solve(
            np.take_along_axis(rhs, np.broadcast_to(np.argsort(self.ip), (B, nz)), 1).ravel()
        )
        p = sol.reshape(B, nz)[:, self.ip]
        mu = np.zeros((B, self.m))
        mu[b, k] = (top[b, j] - self.hessian_times(hvals, p)[b, j]) / self.bval[k]
        return p, mu

    @staticmethod
    def _lu(K: sp.csc_matrix, permc: str, symmetric: bool = False) -> SuperLU:
        try:
            if symmetric:
                return splu(K, permc_spec=permc, diag_pivot_thresh=0.0, options={"SymmetricMode": True})
            return splu(K, permc_spec=permc)
        except RuntimeError:
            raise RelaxationError(
                "the circuit's equations are singular: part of it floats (a trainable conductance at 0 S?) "
                "or conducting diodes fix one potential twice; raise that conductance or check the diodes"
            ) from None

    def hessian_values(self, g: np.ndarray, beta: float, cx: np.ndarray | None) -> np.ndarray:
        """Pattern values of every sample's Hessian (B, nnz); cx: exponential-diode conductances (B, nx) S."""
        base = self.Mr @ g + (beta * self.Mo @ np.ones(self.Mo.shape[1]) if beta else 0.0)
        if cx is None or not cx.shape[1]:
            return base[None, :]
        return base[None, :] + rows(self.Mx, cx)

    def base_hessian(self, g: np.ndarray, beta: float) -> sp.csc_matrix:
        """The Hessian of the resistors and nudging alone (shared by all samples), kept for the last
        (g, beta) asked for: a relaxation and its check use the same one."""
        key = self._base_key
        if key is None or key[1] != beta or not same(key[0], g):
            self._base_key = (kept(g), beta)
            self._base = self.matrix(self.hessian_values(g, beta, None)[0])
        assert self._base is not None
        return self._base

    def _block_csc(self, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSC structure of B Hessian blocks on the diagonal, in the fill-reducing order: (order of the
        pattern entries, row indices, column pointers); kept per batch size."""
        if B not in self._blocks:
            r, c = self.ip[self.pr], self.ip[self.pc]
            order = np.lexsort((r, c))
            counts = np.bincount(c, minlength=self.nz)
            nnz = len(r)
            indices = (r[order][None, :] + (np.arange(B) * self.nz)[:, None]).ravel()
            ptr1 = np.cumsum(np.r_[0, counts])[:-1]
            indptr = np.r_[(ptr1[None, :] + (np.arange(B) * nnz)[:, None]).ravel(), B * nnz]
            if len(self._blocks) > 8:
                self._blocks.clear()
            self._blocks[B] = (order, indices.astype(np.int32), indptr.astype(np.int32))
        return self._blocks[B]

    def matrix(self, vals: np.ndarray) -> sp.csc_matrix:
        """One sample's Hessian from its pattern values."""
        return sp.csc_matrix((vals, (self.pr, self.pc)), shape=(self.nz, self.nz))

    def kkt(self, hvals: np.ndarray, W: np.ndarray, top: np.ndarray, bot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Solve, per sample b, ``[[H_b, A_W^T], [A_W, 0]] [p; mu] = [top_b; bot_b on W]`` with
        ``mu_k = 0`` off the working set W (bool, (B, m)); one LU of the block-diagonal matrix.
        Returns (p (B, nz), mu (B, m))."""
        B, nz, m = top.shape[0], self.nz, self.m
        if not np.any(W & ~self.bound[None, :]):
            return self._kkt_bounds(hvals, W, top, bot)
        S = nz + m
        hvals = np.broadcast_to(hvals, (B, len(self.pr)))
        off = np.arange(B, dtype=np.int64) * S
        rows = [(off[:, None] + self.pr[None, :]).ravel()]
        cols = [(off[:, None] + self.pc[None, :]).ravel()]
        vals = [hvals.ravel()]
        if m:
            b, e = np.nonzero(W[:, self.a_row])
            r, c = off[b] + nz + self.a_row[e], off[b] + self.a_col[e]
            rows += [r, c]
            cols += [c, r]
            vals += [self.a_val[e], self.a_val[e]]
            bi, ki = np.nonzero(~W)
            rows.append(off[bi] + nz + ki)
            cols.append(off[bi] + nz + ki)
            vals.append(np.ones(len(bi)))
        K = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(B * S, B * S))
        rhs = np.concatenate([top, np.where(W, bot, 0.0)], axis=1).ravel() if m else top.ravel()
        sol = self._lu(K, "COLAMD").solve(rhs).reshape(B, S)
        return sol[:, :nz], sol[:, nz:]


@dataclass
class Batch:
    """One batch's fixed data: source offsets of every branch and of the outputs, the nudging."""

    dx: np.ndarray  # (B, n_x) the same for exponential diodes
    bd: np.ndarray  # (B, m) ideal diodes: A z <= bd  <=>  V_anode <= V_cathode
    c: np.ndarray  # (B, nz) linear term of F in z
    beta: float
    off: np.ndarray  # (B, nodes) V = P z + off


def batch(
    st: Structure,
    off: np.ndarray,
    drive: np.ndarray,
    x_nodes: np.ndarray,
    d_nodes: np.ndarray,
    out: np.ndarray,
    beta: float,
    y: np.ndarray | None,
) -> Batch:
    """The fixed data of a batch with node offsets ``off`` (B, nodes), V = P z + off, and the resistors'
    drive ``Ar^T diag(g) inc off`` (B, nz) A (DriveMap)."""
    c = drive
    if beta:
        c = c + beta * rows(st.Ao.T, off[:, out] - y)
    return Batch(
        off[:, x_nodes[:, 0]] - off[:, x_nodes[:, 1]],
        off[:, d_nodes[:, 1]] - off[:, d_nodes[:, 0]],
        np.asarray(c),
        float(beta),
        off,
    )


def exp_drops(st: Structure, bt: Batch, z: np.ndarray, sel: Selector = _ALL) -> np.ndarray:
    return rows(st.Ax, z) + bt.dx[sel]


def gradient(st: Structure, bt: Batch, hbase: sp.csr_matrix, z: np.ndarray, sel: Selector = _ALL) -> np.ndarray:
    """dF/dz (B, nz) in A: KCL imbalance of each free group (resistors, nudging, exponential diodes)."""
    grad = rows(hbase, z) + bt.c[sel]
    if st.Ax.shape[0]:
        grad = grad + rows(st.Ax.T, exp_terms(exp_drops(st, bt, z, sel), st.x_par, 1))
    return grad


def energy(st: Structure, bt: Batch, hbase: sp.csr_matrix, z: np.ndarray, sel: Selector = _ALL) -> np.ndarray:
    """F per sample, up to a constant per sample, in W (half the dissipated power)."""
    f = 0.5 * np.sum(z * rows(hbase, z), axis=1) + np.sum(bt.c[sel] * z, axis=1)
    if st.Ax.shape[0]:
        f = f + np.sum(exp_terms(exp_drops(st, bt, z, sel), st.x_par, 0), axis=1)
    return f


def same(kept: np.ndarray, g: np.ndarray) -> bool:
    """Whether g equals a kept array: by identity for a read-only one (NetlistSubstrate._conductances)."""
    return kept is g or np.array_equal(kept, g)


def kept(g: np.ndarray) -> np.ndarray:
    """g itself when it is read-only, else a copy: what :func:`same` compares against later."""
    return g if not g.flags.writeable else g.copy()


class DriveMap:
    """The linear term of F in z, ``c = Ar^T diag(g) inc off`` with node offsets ``off = const + gain x``,
    as ``c = Q(g) [1; x]``: Q is linear in g, assembled by one sparse product per conductance vector and
    applied to a batch by one dense product (the input drive, computed once per clamp and phase)."""

    def __init__(self, st: Structure, const: np.ndarray, gain: np.ndarray):
        Gm = sp.csr_matrix(np.c_[const, gain])  # (nodes, 1 + n_inputs): off = Gm [1; x]
        IG = sp.csr_matrix(st.inc @ Gm)  # (resistors, 1 + n_inputs)
        Ar = sp.csr_matrix(st.Ar)
        self.ncol = IG.shape[1]
        ca, cb = np.diff(Ar.indptr), np.diff(IG.indptr)
        per = ca * cb  # entries of the outer product of row r of Ar and row r of IG
        r = np.repeat(np.arange(Ar.shape[0]), per)
        t = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
        ia = Ar.indptr[r] + t // np.maximum(cb[r], 1)
        ib = IG.indptr[r] + t % np.maximum(cb[r], 1)
        key = Ar.indices[ia].astype(np.int64) * self.ncol + IG.indices[ib]
        self.key, pos = np.unique(key, return_inverse=True)
        self.T = sp.csr_matrix((Ar.data[ia] * IG.data[ib], (pos, r)), shape=(len(self.key), Ar.shape[0]))
        self.shape = (st.nz, self.ncol)
        self._g: np.ndarray | None = None
        self._Q = np.zeros(self.shape)

    def Q(self, g: np.ndarray) -> np.ndarray:
        """(nz, 1 + n_inputs) with c = Q [1; x], in S; kept for the last g."""
        if self._g is None or not same(self._g, g):
            Q = np.zeros(self.shape)
            Q.flat[self.key] = self.T @ g
            self._Q, self._g = Q, kept(g)
        return self._Q

    def c(self, g: np.ndarray, x: np.ndarray) -> np.ndarray:
        """c (B, nz) in A for inputs x (B, n_inputs)."""
        Q = self.Q(g)
        return Q[:, 0][None, :] + x @ Q[:, 1:].T
