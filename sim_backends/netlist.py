"""Any resistor-diode circuit read from a netlist (sim_backends.netlist_parse), as a substrate.

Voltage sources tie nodes into groups whose potentials differ by the source
values; each group not tied to ground has one free potential ``z``. The DC
operating point minimises the co-content over ``z``::

    F = sum_R 1/2 g (V_a - V_b)^2 + sum_exp-diodes int_0^V_d i(v) dv + beta/2 ||o - y||^2

with SPICE's diode current i (netlist_kkt.exp_terms), subject to ``V_anode <= V_cathode``
at every ideal diode. The whole batch relaxes at once by coloured block Gauss-Seidel
(netlist_sweep); samples whose sweeps stall are finished by the exact solver (netlist_solve:
damped Newton steps, a primal-dual active set for the conducting diodes, one sparse
factorisation of the block-diagonal batch per iteration). Every sample is checked (KCL,
ideal-diode complementarity) before it counts as converged.
The parameter tensor ``g`` is the conductances (S) of the resistors marked ``train``,
in file order; dE/dg = 1/2 (V_a - V_b)^2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.floating import FloatingParameters, per_tensor, within_bounds
from sim_backends.netlist_colour import Colouring
from sim_backends.netlist_kkt import Batch, DriveMap, Structure, batch, exp_terms, rows
from sim_backends.netlist_parse import Circuit, parse, read_netlist
from sim_backends.netlist_solve import SETTINGS, Check, Solution, check, feasible_start, solve
from sim_backends.netlist_sweep import SWEEPS, sweep

if TYPE_CHECKING:
    from sim_backends.resistive import ResistiveSubstrate


def incidence(nodes: np.ndarray, n: int) -> sp.csr_matrix:
    """Sparse (branches, nodes) matrix with +1 at each branch's first node and -1 at its second."""
    m = len(nodes)
    rows = np.r_[np.arange(m), np.arange(m)]
    return sp.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (rows, np.r_[nodes[:, 0], nodes[:, 1]])), shape=(m, n))


class NetlistSubstrate(FloatingParameters):
    """A batched resistor-diode circuit from a netlist file (``netlist=PATH``) or text (``text=...``).

    ``layers`` from the CLI is checked against the circuit's inputs and outputs
    when given. Conductances stay within [g_min, g_max] S: a small g_min (a
    leakage, 1 nS by default) keeps a node whose trainable resistors all close
    down from floating, which would leave its potential undefined; ``tol`` (V) stops the sweeps
    once the change they predict to remain is below it, and the exact solver's Newton steps;
    ``max_sweeps`` bounds the sweeps and the active-set and Newton iterations.
    """

    def __init__(
        self,
        netlist: str | Path | None = None,
        text: str | None = None,
        layers: Sequence[int] | None = None,
        eps: float | Mapping[str, float] = 0.1,
        g_max: float = 1.0,
        g_min: float = 1e-9,
        tol: float = 1e-12,
        max_sweeps: int = 200,
        seed: int = 0,
        max_batch: int | None = 1024,
        joint_rtol: float = 1e-6,
        max_joint_updates: int = 500,
    ):
        if (netlist is None) == (text is None):
            raise ConfigurationError("give the circuit as netlist=PATH or as text=..., exactly one")
        if netlist is not None:
            path = Path(netlist)
            if not path.is_file():
                raise ConfigurationError(f"netlist file {path} does not exist; pass --netlist PATH")
            text, source, base = read_netlist(path), path.name, path.parent
        else:
            source, base = "<netlist>", Path(".")
        assert text is not None
        c: Circuit = parse(text, source, base)
        self.circuit = c
        trainable = [e for e in c.of("R") if e.trainable]
        if not trainable:
            raise ConfigurationError(f"{source}: no resistor is marked 'train'; mark the trainable ones")
        if layers is not None and (int(layers[0]), int(layers[-1])) != (c.n_inputs, len(c.outputs)):
            raise ConfigurationError(
                f"layers {tuple(layers)} do not match {source}: {c.n_inputs} inputs and {len(c.outputs)} outputs"
            )
        if max(e.value for e in trainable) > g_max:
            raise ConfigurationError(f"{source}: a trainable conductance exceeds g_max={g_max} S; raise g_max")
        if not 0.0 <= g_min < g_max:
            raise ConfigurationError(f"g_min={g_min}, g_max={g_max}: need 0 <= g_min < g_max (S)")
        self.g_min, self.g_max, self.tol, self.max_sweeps = float(g_min), float(g_max), float(tol), int(max_sweeps)
        self.joint_rtol, self.max_joint_updates = float(joint_rtol), int(max_joint_updates)
        self.info = SubstrateInfo(
            n_inputs=c.n_inputs,
            n_outputs=len(c.outputs),
            parameter_shapes={"g": (len(trainable),)},
            parameter_bounds={"g": (self.g_min, self.g_max)},
            max_batch=max_batch,
            capabilities=frozenset({"eqprop", "aeqprop", "homeostasis", "oracle"}),
            description=f"resistor-diode circuit {source}: {len(c.nodes)} nodes, {len(trainable)} trainable resistors",
        )
        self.eps = per_tensor("eps", eps, ["g"])
        self._build(c)
        self.theta = {"g": np.array([e.value for e in trainable])}
        self._u = self.parameters()
        self._beta: float = 0.0
        self._y: np.ndarray | None = None
        self.total_sweeps = 0
        self.clamp(np.zeros((1, c.n_inputs)))

    # -- structure --------------------------------------------------------------
    def _build(self, c: Circuit) -> None:
        idx = {n: i for i, n in enumerate(c.nodes)}
        n = len(c.nodes)
        adj: dict[int, list] = {i: [] for i in range(n)}
        for e in c.of("V"):
            a, b = idx[e.nodes[0]], idx[e.nodes[1]]
            adj[a].append((b, e, -1.0))
            adj[b].append((a, e, 1.0))
        group = -np.ones(n, dtype=int)
        self.const, self.gain = np.zeros(n), np.zeros((n, c.n_inputs))  # V = z[group] + const + gain @ x
        n_free = 0
        for root in range(n):
            if group[root] != -1:
                continue
            gid = -2 if root == 0 else n_free  # -2: tied to ground
            n_free += root != 0
            stack, group[root] = [root], gid
            while stack:
                i = stack.pop()
                for j, e, sign in adj[i]:  # V_j = V_i + sign * (V+ - V-) of the source
                    if group[j] == -1:
                        group[j] = gid
                        self.const[j] = self.const[i] + sign * e.value
                        self.gain[j] = self.gain[i]
                        if e.input is not None:
                            self.gain[j, e.input] += sign * e.gain
                        stack.append(j)
        self.nz, self.group = n_free, group
        self._gain = sp.csr_matrix(self.gain)  # sparse: a dense product this small pays BLAS threading
        P = np.zeros((n, n_free))
        P[np.flatnonzero(group >= 0), group[group >= 0]] = 1.0
        self.P = sp.csr_matrix(P)
        res = c.of("R")
        self.r_nodes = np.array([[idx[e.nodes[0]], idx[e.nodes[1]]] for e in res], dtype=int).reshape(-1, 2)
        self.r_fixed = np.array([e.value for e in res])
        self.r_train = np.array([i for i, e in enumerate(res) if e.trainable], dtype=int)
        ideal = [e for e in c.of("D") if not e.diode]
        expd = [e for e in c.of("D") if e.diode]
        self.d_names = [e.name for e in ideal]
        self.d_nodes = np.array([[idx[e.nodes[0]], idx[e.nodes[1]]] for e in ideal], dtype=int).reshape(-1, 2)
        self.x_nodes = np.array([[idx[e.nodes[0]], idx[e.nodes[1]]] for e in expd], dtype=int).reshape(-1, 2)
        self.x_par = np.array([[e.diode["IS"], e.diode["N"] * e.diode["VT"]] for e in expd]).reshape(-1, 2)
        self.out = np.array([idx[o] for o in c.outputs], dtype=int)
        if np.any(group[self.out] < 0):
            raise ConfigurationError(f"{c.source}: an output node is held by sources tied to ground; read another node")

        def inc(nodes: np.ndarray) -> sp.csr_matrix:
            return incidence(nodes, n) @ self.P  # rows (e_a - e_b)^T P, in z

        self.Ar, self.Ad, self.Ax = inc(self.r_nodes), inc(self.d_nodes), inc(self.x_nodes)
        self.Ao = self.P[self.out]

        def gr(col: int) -> np.ndarray:
            return np.where(group[self.d_nodes[:, col]] < 0, n_free, group[self.d_nodes[:, col]])

        self.st = Structure(
            n_free, self.Ar, self.Ad, self.Ax, self.Ao, self.x_par, gr(0), gr(1), incidence(self.r_nodes, n), self.P
        )
        self.colouring, self.drive = Colouring(self.st), DriveMap(self.st, self.const, self.gain)
        self._g: tuple[np.ndarray, np.ndarray] | None = None
        self._batch0: tuple[tuple[np.ndarray, np.ndarray], Batch] | None = None
        self._top = np.zeros(0, dtype=int)  # resistors that carried the largest currents at the last full check

    def _conductances(self) -> np.ndarray:
        """Every resistor's conductance in S, read-only, the same array until theta["g"] is replaced (the
        solver's caches of g-dependent matrices test it by identity first)."""
        if self._g is None or self._g[0] is not self.theta["g"]:
            g = self.r_fixed.copy()
            g[self.r_train] = self.theta["g"]
            g.flags.writeable = False
            self._g = (self.theta["g"], g)
        return self._g[1]

    # -- state ------------------------------------------------------------------
    def clamp(self, x: np.ndarray) -> None:
        """Set the input sources, shape (batch, n_inputs); the state restarts from 0 V free potentials."""
        x = check_array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._x = x
        self._off = self.const[None, :] + rows(self._gain, x)  # (B, nodes): V = P z + off
        self._z = np.zeros((x.shape[0], self.nz))
        self._W = np.zeros((x.shape[0], len(self.d_nodes)), bool)  # conducting ideal diodes
        self._mu = np.zeros((x.shape[0], len(self.d_nodes)))
        if self._y is not None and self._y.shape[0] != x.shape[0]:
            self._beta, self._y = 0.0, None
        self._stale = True

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """A conductance beta (S) from each output node to a source at y (V); beta = 0 removes it."""
        beta = float(beta)
        if not np.isfinite(beta) or (beta != 0.0 and y is None):
            raise ConfigurationError(f"beta={beta}: must be finite, and beta != 0 needs a target y")
        if y is not None:
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        self._beta, self._y = beta, y
        self._stale = True

    def node_voltages(self) -> dict[str, np.ndarray]:
        """Every node's potential in V, shape (batch,) each."""
        self._settle()
        V = self._V()
        return {name: V[:, i] for i, name in enumerate(self.circuit.nodes)}

    def _V(self, z: np.ndarray | None = None) -> np.ndarray:
        return rows(self.P, self._z if z is None else z) + self._off

    def _batch(self, g: np.ndarray, beta: float) -> Batch:
        """The batch's fixed data; the part without nudging is kept for the clamp and g it was made for."""
        key = (self._off, g)
        if self._batch0 is None or any(a is not b for a, b in zip(self._batch0[0], key)):
            drive = self.drive.c(g, self._x)
            self._batch0 = (key, batch(self.st, self._off, drive, self.x_nodes, self.d_nodes, self.out, 0.0, None))
        b0 = self._batch0[1]
        if not beta:
            return b0
        c = b0.c + beta * rows(self.Ao.T, self._off[:, self.out] - self._y)
        return Batch(b0.dx, b0.bd, c, float(beta), b0.off)

    def _relax(self, tol: float, max_sweeps: int, exact: bool = False) -> RelaxReport:
        """Settle every sample by coloured sweeps (netlist_sweep); samples whose sweeps stall, or all of
        them when ``exact``, are finished by the exact solver (netlist_solve). Every sample is checked
        (KCL, diodes) before the report says converged."""
        g = self._conductances()
        bt = self._batch(g, self._beta)
        if len(self.d_nodes) and np.any(self.st.held[None, :] & (bt.bd < -1e-12)):
            k = int(np.flatnonzero(np.any(self.st.held[None, :] & (bt.bd < -1e-12), axis=0))[0])
            raise RelaxationError(
                f"diode {self.d_names[k]} is forward-biased by sources alone; reverse it or add a resistor"
            )
        z = feasible_start(self.st, bt, self._z)
        W, mu = self._W.copy(), self._mu.copy()
        B, sweeps, worst = z.shape[0], 0, 0.0
        todo = np.arange(B)
        if all(np.all(m[2] > 0) for m in self.colouring.matrices(g, bt.beta)):
            if not len(self._top):
                self._top = check(self.st, bt, g, Solution(z, W, mu, None, None)).top
            cap = replace(SWEEPS, max_sweeps=min(SWEEPS.max_sweeps, max_sweeps))
            sw = sweep(self.colouring, bt, g, z, tol, self._top, self.r_nodes, cap)
            z, W, mu, ok, rel, sweeps = sw.z, sw.W, sw.mu, sw.ok, sw.rel, sw.sweeps
            if not np.all(ok):  # the quick check's bound of the largest current may be low: the full check
                full = check(self.st, bt, g, Solution(z, W, mu, None, None))
                self._top = self._more_top(full.top)
                rel = np.where(ok, rel, np.max(np.abs(full.residual), axis=1, initial=0.0) / full.largest)
                ok |= full.ok
            worst = float(np.max(rel[ok], initial=0.0))
            todo = np.flatnonzero(~ok)
        if exact:
            todo = np.arange(B)
        if len(todo):
            part = Batch(bt.dx[todo], bt.bd[todo], bt.c[todo], bt.beta, bt.off[todo])
            sol = solve(self.st, part, g, z[todo], self._W[todo], tol, max_sweeps)
            z[todo], W[todo], mu[todo] = sol.z, sol.W, sol.mu
            chk = check(self.st, part, g, sol)
            assert sol.step is not None and sol.iterations is not None
            self._top = self._more_top(chk.top)
            if not np.all(chk.ok):
                self._z, self._W, self._mu, self._stale = z, W, mu, True
                self._refuse(chk, bool(np.all(sol.step <= tol)), max_sweeps)
            sweeps += int(sol.iterations.max(initial=0))
            worst = max(worst, chk.worst)
        self._z, self._W, self._mu = z, W, mu
        self.total_sweeps += sweeps
        self._stale = False
        return RelaxReport(sweeps=sweeps, residual=worst, converged=True)

    def _more_top(self, top: np.ndarray) -> np.ndarray:
        """The resistors whose currents bound the largest branch current from below in the quick check:
        those of earlier full checks and ``top``, up to a few per sample (then ``top`` alone)."""
        both = np.union1d(self._top, top)
        return both if len(both) <= 4 * max(self._x.shape[0], 16) else top

    def _refuse(self, chk: Check, newton_done: bool, max_sweeps: int) -> None:
        node = (
            self.circuit.nodes[int(np.flatnonzero(self.group == chk.worst_group)[0])] if chk.worst_group >= 0 else "?"
        )
        raise RelaxationError(
            f"the operating point fails its check{'' if newton_done else f' after {max_sweeps} Newton steps'}: "
            f"KCL at node {node!r} is off by {chk.worst:.1e} of the largest branch current (limit "
            f"{SETTINGS.kcl_rtol:g}) or an ideal diode conducts backwards; "
            + ("raise max_sweeps" if not newton_done else "check the circuit's values (a conductance ratio near 1e16?)")
        )

    def outputs(self) -> np.ndarray:
        """Output node potentials in V, shape (batch, n_outputs)."""
        self._settle()
        return self._V()[:, self.out]

    def currents(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(KCL imbalance per free group in A, ideal-diode currents anode->cathode in A,
        ideal-diode drops V_a - V_c in V, largest branch current in A), per sample."""
        self._settle()
        g = self._conductances()
        chk = check(self.st, self._batch(g, self._beta), g, Solution(self._z, self._W, self._mu, None, None))
        return chk.residual, chk.currents, chk.drops, chk.largest

    # -- parameters -------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """Conductances of the trainable resistors in S (copies), tensor ``g`` in file order."""
        return {"g": self.theta["g"].copy()}

    def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]:
        if set(theta) - {"g"}:
            raise ConfigurationError(f"unknown parameter(s) {sorted(set(theta) - {'g'})}; valid: ['g']")
        if "g" not in theta:
            return {}
        self.theta["g"], clipped = within_bounds(
            "g", theta["g"], self.info.parameter_shapes["g"], self.info.parameter_bounds["g"], copy
        )
        self._stale = True
        return {"g": clipped}

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program the trainable conductances in S; values outside [g_min, g_max] are clipped."""
        return self._assign(theta)

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dg = 1/2 (V_a - V_b)^2 per trainable resistor, in V^2, batch mean."""
        self._settle()
        V = self._V()
        nodes = self.r_nodes[self.r_train]
        return {"g": 0.5 * np.mean((V[:, nodes[:, 0]] - V[:, nodes[:, 1]]) ** 2, axis=0)}

    # -- oracle -------------------------------------------------------------------
    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """L = mean_batch 1/2 ||o - y||^2 at the free operating point."""
        self.clamp(x)
        self.nudge(0.0)
        self._relax(min(self.tol, 1e-13), max(self.max_sweeps, 1000), exact=True)
        y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        return float(0.5 * np.sum((self.outputs() - y) ** 2) / y.shape[0])

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """dL/dg by implicit differentiation: solve the KKT system of the conducting diodes for
        ``lambda`` with right-hand side dC/dz, then ``dL/dg_r = -(V_a - V_b)(lambda_a - lambda_b)``."""
        self.loss(x, y)
        g, V = self._conductances(), self._V()
        bt = self._batch(g, 0.0)
        cx = exp_terms(rows(self.Ax, self._z) + bt.dx, self.x_par, 2) if len(self.x_nodes) else None
        rhs = rows(self.Ao.T, V[:, self.out] - y)
        lam, _ = self.st.kkt(self.st.hessian_values(g, 0.0, cx), self._W, np.asarray(rhs), np.zeros_like(self._mu))
        nodes = self.r_nodes[self.r_train]
        dv = V[:, nodes[:, 0]] - V[:, nodes[:, 1]]
        return {"g": -np.sum(dv * rows(self.Ar[self.r_train], lam), axis=0) / V.shape[0]}

    def close(self) -> None:
        """Nothing to switch off in simulation; removes nudging."""
        self._beta, self._y = 0.0, None


def layered_netlist(sub: ResistiveSubstrate) -> str:
    """The netlist of a :class:`sim_backends.resistive.ResistiveSubstrate`, every conductance trainable.

    Nodes: ``ip<k>``/``in<k>`` the input sources, ``h<l>_<j>`` hidden, ``o<j>`` outputs,
    ``rp``/``rn`` the bias rails. A conductance at 0 S is left out.
    """
    th, L = sub.parameters(), sub.L
    lines = [f"* layered resistive network {'-'.join(map(str, sub.layers))}"]
    n_in = sub.layers[0]
    lines += [f"Vp{k} ip{k} 0 {sub.gain!r}*x{k}" for k in range(n_in)]
    lines += [f"Vn{k} in{k} 0 {-sub.gain!r}*x{k}" for k in range(n_in)]
    lines += [f"Vrp rp 0 {sub.v_bias!r}", f"Vrn rn 0 {-sub.v_bias!r}"]

    def name(l: int, j: int) -> str:
        if l == 0:
            return f"ip{j}" if j < n_in else f"in{j - n_in}"
        return f"o{j}" if l == L else f"h{l}_{j}"

    for l in range(1, L + 1):
        W, b = th[f"W{l}"], th[f"b{l}"]
        for i, j in zip(*np.nonzero(W)):
            lines.append(f"R{l}_{i}_{j} {name(l - 1, int(i))} {name(l, int(j))} {float(1.0 / W[i, j])!r} train")
        for r, rail in enumerate(("rp", "rn")):
            for j in np.flatnonzero(b[r]):
                lines.append(f"Rb{l}_{r}_{j} {rail} {name(l, int(j))} {float(1.0 / b[r, j])!r} train")
        if l < L:
            half = (sub.sizes[l] + 1) // 2
            lines += [
                f"D{l}_{j} 0 {name(l, j)}" if j < half else f"D{l}_{j} {name(l, j)} 0" for j in range(sub.sizes[l])
            ]
    lines.append(".output " + " ".join(name(L, j) for j in range(sub.sizes[L])))
    return "\n".join(lines) + "\n"
