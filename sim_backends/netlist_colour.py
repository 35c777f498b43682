"""Greedy colouring of a netlist circuit's free groups, and the index arrays of each colour class.

The free potentials ``z`` (one per group of nodes tied by voltage sources) are coloured once per
circuit so that no element (resistor, exponential or ideal diode) joins two groups of one colour:
given the other colours, the groups of one colour are independent (netlist_sweep). The sweep's
layout puts each colour's groups in consecutive rows; a class's coupling to the others is kept as a
dense block where it is at least a tenth full (the weights between two layers), else sparse.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sim_backends.netlist_kkt import Structure, kept, same


def greedy_colouring(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Colour of each of n vertices such that no edge (a, b) joins two of one colour (largest degree first)."""
    keep = a != b
    a, b = a[keep], b[keep]
    adj = sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    colour = -np.ones(n, dtype=int)
    for i in np.argsort(-np.diff(adj.indptr), kind="stable"):
        used = set(colour[adj.indices[adj.indptr[i] : adj.indptr[i + 1]]].tolist())
        c = 0
        while c in used:
            c += 1
        colour[i] = c
    return colour


class ColourClass:
    """One colour's groups and the index arrays that couple them to the rest of the circuit."""

    def __init__(self, st: Structure, nodes: np.ndarray, pos: np.ndarray):
        """nodes: the groups of this colour; pos: each group's row in the sweep's layout, in which the
        groups of one colour are consecutive (``self.rows``, a slice)."""
        nz = st.nz
        self.nodes = nodes
        self.at = pos[nodes]  # rows of these groups in the sweep's layout
        self.rows = slice(int(self.at[0]), int(self.at[-1]) + 1)
        local = -np.ones(nz + 1, dtype=int)
        local[nodes] = np.arange(len(nodes))
        self.local = local
        # the Hessian pattern's off-diagonal entries in these rows (positions into the pattern values)
        sel = np.flatnonzero((local[st.pr] >= 0) & ~st.pdiag)
        order = np.lexsort((st.pc[sel], local[st.pr[sel]]))
        self.hpos = sel[order]
        self.hcols = pos[st.pc[self.hpos]].astype(np.int32)
        self.hptr = np.r_[0, np.cumsum(np.bincount(local[st.pr[self.hpos]], minlength=len(nodes)))].astype(np.int32)
        diag = np.flatnonzero(st.pdiag & (local[st.pr] >= 0))
        self.dpos = diag[np.argsort(local[st.pr[diag]])]
        # ideal diodes: A_k z <= bd_k with coefficient a = A_k[i] at a group i of this class; those to
        # held nodes (st.bound) give bounds fixed for a batch, the others bounds that move in a sweep
        A = sp.coo_matrix(st.Ad)
        on = local[A.col] >= 0
        self.diodes: dict[bool, tuple] = {}
        for fixed in (True, False):
            sel = on & (st.bound[A.row] == fixed)
            k, node, a = A.row[sel], local[A.col[sel]], A.data[sel]
            order = np.lexsort((k, node))
            k, node, a = k[order], node[order], a[order]
            upper = a > 0
            Ad = sp.csr_matrix(st.Ad[k][:, np.argsort(pos[:nz])])
            self.diodes[fixed] = (k, node, a, Ad, upper, *_segments(node[upper]), *_segments(node[~upper]))
        self.bounded = any(len(self.diodes[f][0]) for f in (True, False))
        # exponential diodes: drop = s v + (the rest)
        X = sp.coo_matrix(st.Ax)
        on = local[X.col] >= 0
        self.x_k, self.x_node, self.x_s = X.row[on], local[X.col[on]], X.data[on]
        self.Ax = sp.csr_matrix(st.Ax[self.x_k][:, np.argsort(pos[:nz])])
        self.x_par = st.x_par[self.x_k]
        self.nl = np.unique(self.x_node)  # groups with exponential diodes (local positions)
        nl_pos = -np.ones(len(nodes), dtype=int)
        nl_pos[self.nl] = np.arange(len(self.nl))
        self.nl_pos = nl_pos
        # sums the diodes' terms per nonlinear group: S1 with signs (currents), S2 without (conductances)
        shape = (len(self.nl), len(self.x_k))
        self.S1 = sp.csr_matrix((self.x_s, (nl_pos[self.x_node], np.arange(len(self.x_k)))), shape=shape)
        self.S2 = abs(self.S1)

    def hoff(self, hv: np.ndarray, nz: int) -> tuple[sp.csr_matrix | np.ndarray, slice | np.ndarray]:
        """Off-diagonal rows of this class in the base Hessian with pattern values hv, and the rows of
        the layout they multiply: a dense block where it is at least a tenth full (a layer's weights)."""
        M = sp.csr_matrix((hv[self.hpos], self.hcols, self.hptr), shape=(len(self.nodes), nz))
        used = np.unique(self.hcols)
        if not len(used) or len(used) * len(self.nodes) > 10 * len(self.hpos):
            return M, slice(None)
        cols: slice | np.ndarray = used
        if used[-1] - used[0] + 1 == len(used):
            cols = slice(int(used[0]), int(used[-1]) + 1)
        return np.ascontiguousarray(M[:, used].toarray()), cols


def _segments(node: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start of each run of equal (sorted) entries, and the entry of each run."""
    if not len(node):
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    start = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    return start, node[start]


class Colouring:
    """The colour classes of a circuit's free groups (resistors, nudging, both diode kinds as edges)."""

    def __init__(self, st: Structure):
        off = ~st.pdiag
        ideal = (st.ga < st.nz) & (st.gc < st.nz)
        self.colour = greedy_colouring(st.nz, np.r_[st.pr[off], st.ga[ideal]], np.r_[st.pc[off], st.gc[ideal]])
        self.perm = np.argsort(self.colour, kind="stable")  # the sweep's layout: group perm[i] at row i
        self.back = np.argsort(self.perm)  # z = zt[back].T
        pos = np.r_[np.argsort(self.perm), st.nz]
        self.classes = [
            ColourClass(st, np.flatnonzero(self.colour == c), pos) for c in range(self.colour.max(initial=-1) + 1)
        ]
        bound = st.bound & ~st.held
        self.one_bound = bool(np.unique(st.bcol[bound]).size == np.count_nonzero(bound))
        self.st = st
        # nudging adds beta to the diagonal only (each output is one group): its values per class
        nudge = st.Mo @ np.ones(st.Mo.shape[1])
        self._nudge = [nudge[c.dpos] for c in self.classes]
        self._g: np.ndarray | None = None
        self._off: list[tuple[sp.csr_matrix | np.ndarray, slice | np.ndarray, np.ndarray]] = []
        self._beta: float | None = None
        # the bounds from diodes to held nodes, per class, for one batch's offsets (netlist_sweep)
        self.fixed_bounds: tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None = None
        self._mats: list[tuple[sp.csr_matrix | np.ndarray, slice | np.ndarray, np.ndarray, np.ndarray]] = []

    def matrices(
        self, g: np.ndarray, beta: float
    ) -> list[tuple[sp.csr_matrix | np.ndarray, slice | np.ndarray, np.ndarray, np.ndarray]]:
        """Per class: (off-diagonal Hessian rows, the rows of the layout they multiply, diagonal H_ii in S,
        -1 / H_ii) for conductances g (S) and nudging beta (S); kept for the last g and beta."""
        if self._g is None or not same(self._g, g):
            hv = self.st.hessian_values(g, 0.0, None)[0]
            self._off = [(*c.hoff(hv, self.st.nz), hv[c.dpos]) for c in self.classes]
            self._g, self._beta = kept(g), None
        if self._beta != beta:
            self._mats = []
            for (M, cols, d), nudge in zip(self._off, self._nudge):
                h = d + beta * nudge
                self._mats.append((M, cols, h, -1.0 / h[:, None]))
            self._beta = beta
        return self._mats
