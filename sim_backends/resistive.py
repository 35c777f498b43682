"""Deep resistive network with ideal diodes (ALGORITHMS.md section 5) as a simulated substrate.

Layers of nodes ``V_0 = (a x, -a x)`` (voltage sources, input gain ``a`` in V),
``V_1 ... V_(L-1)`` hidden, ``V_L = o`` the linear outputs. Conductances (S)
``W_l`` join every node of layer l-1 to every node of layer l; ``b_l[0]`` and
``b_l[1]`` join each node of layer l to the rails at ``+v_bias`` and ``-v_bias``.
The energy is the co-content, half the dissipated power, batch mean::

    E = sum_edges 1/2 g (V_i - V_j)^2        F = E + beta/2 ||o - y||^2

Nudging is a conductance beta from each output to a source at y. In each
hidden layer the first half of the nodes sits behind an ideal diode that holds
``V >= 0``, the second half ``V <= 0``. Layers of equal parity do not touch, so
the exact minimiser of a layer given its neighbours is Kirchhoff's current law
``V_j = sum_i g_ij V_i / sum_i g_ij`` (plus ``beta y`` / ``beta`` at an output)
then the diode clip; alternating odd and even layers is exact block coordinate
descent (Scellier 2024). E is linear in the conductances, so the Aeqprop
parameter block is exact too (sim_backends.floating). The oracle (exact loss, implicit
gradient) is in sim_backends.resistive_oracle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, SubstrateInfo, check_array
from sim_backends.floating import FloatingParameters, per_tensor, within_bounds
from sim_backends.resistive_oracle import NO_LAYER, ResistiveOracle


class ResistiveSubstrate(ResistiveOracle, FloatingParameters):
    """A batched, float64 layered resistor-diode network.

    Parameters
    ----------
    layers:
        Sizes ``(n_inputs, hidden..., n_outputs)``; each input drives two source nodes.
    eps:
        Compliance of each floating conductance's coupling to its knob, in S^2/W
        per unit energy (a float, or per tensor / kind: ``{"W": 0.1, "b": 0.05}``).
    gain, v_bias:
        Input gain ``a`` in V (sources at ``+a x`` and ``-a x``) and rail voltage in V.
        The default gain, 48 V against 1 V rails, is the one that trains on digits
        (benchmarks/resistive.py; at 1 V the rails swamp the inputs).
    g_max, init_g:
        Conductances stay within [0, g_max] S; they start uniform in [0, init_g] S
        (a float, or per tensor / kind like eps).
    tol, max_sweeps:
        A relaxation stops when no node moves by more than ``tol`` V in a sweep,
        or after ``max_sweeps`` sweeps.
    """

    def __init__(
        self,
        layers: Sequence[int] = (64, 256, 10),
        eps: float | Mapping[str, float] = 0.1,
        gain: float = 48.0,
        v_bias: float = 1.0,
        g_max: float = 1.0,
        init_g: float | Mapping[str, float] = 0.1,
        tol: float = 1e-6,
        max_sweeps: int = 200,
        seed: int = 0,
        max_batch: int | None = 4096,
        joint_rtol: float = 1e-6,
        max_joint_updates: int = 500,
    ):
        layers = tuple(int(n) for n in layers)
        if len(layers) < 2 or min(layers) < 1:
            raise ConfigurationError(f"layers={layers}: need at least an input and an output size, all >= 1")
        if not (gain > 0 and v_bias > 0 and g_max > 0):
            raise ConfigurationError("gain, v_bias and g_max must be > 0")
        if not (tol > 0 and max_sweeps >= 1):
            raise ConfigurationError("tol must be > 0 and max_sweeps >= 1")
        self.layers, self.L = layers, len(layers) - 1
        self.gain, self.v_bias, self.g_max = float(gain), float(v_bias), float(g_max)
        self.tol, self.max_sweeps = float(tol), int(max_sweeps)
        self.joint_rtol, self.max_joint_updates = float(joint_rtol), int(max_joint_updates)
        self.sizes = (2 * layers[0],) + layers[1:]
        shapes: dict[str, tuple[int, ...]] = {}
        for l in range(1, self.L + 1):
            shapes[f"W{l}"] = (self.sizes[l - 1], self.sizes[l])
            shapes[f"b{l}"] = (2, self.sizes[l])
        self.info = SubstrateInfo(
            n_inputs=layers[0],
            n_outputs=layers[-1],
            parameter_shapes=shapes,
            parameter_bounds={n: (0.0, self.g_max) for n in shapes},
            max_batch=max_batch,
            capabilities=frozenset({"eqprop", "aeqprop", "homeostasis", "oracle"}),
            description=f"deep resistive network {'-'.join(map(str, layers))} with ideal diodes",
        )
        self.eps = per_tensor("eps", eps, list(shapes))
        rng = np.random.default_rng(seed)
        init = per_tensor("init_g", init_g, list(shapes))
        if max(init.values()) > g_max:
            raise ConfigurationError(f"init_g={init_g} exceeds g_max={g_max}: keep every init_g within (0, g_max]")
        self.theta = {n: rng.uniform(0.0, init[n], s) for n, s in shapes.items()}
        # diode bounds per hidden layer: first half V >= 0, second half V <= 0; sources and outputs unbounded
        self.lo, self.hi = [np.full(self.sizes[0], -np.inf)], [np.full(self.sizes[0], np.inf)]
        for l in range(1, self.L + 1):
            n, half = self.sizes[l], (self.sizes[l] + 1) // 2
            lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
            if l < self.L:
                lo[:half], hi[half:] = 0.0, 0.0
            self.lo.append(lo)
            self.hi.append(hi)
        self._u = self.parameters()
        self._beta = 0.0
        self._y: np.ndarray | None = None
        self._inputs: tuple[np.ndarray, float] | None = None
        self.clamp(np.zeros((1, layers[0])))
        self.total_sweeps = 0

    # -- state ----------------------------------------------------------------
    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs, shape (batch, n_inputs), as sources +a x and -a x; the state restarts from 0 V."""
        x = check_array("x", x, (None, self.info.n_inputs))
        self.info.check_batch(x.shape[0])
        self._x = x
        v0 = self.gain * np.concatenate([x, -x], axis=1)
        self._s = [v0] + [np.zeros((x.shape[0], n)) for n in self.sizes[1:]]
        self._inputs = None
        if self._y is not None and self._y.shape[0] != x.shape[0]:
            self._beta, self._y = 0.0, None
        self._stale = True

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        """A conductance beta (S) from each output to a source at y (V); beta = 0 removes it."""
        beta = float(beta)
        if not np.isfinite(beta):
            raise ConfigurationError(f"beta={beta}: must be finite")
        if beta != 0.0 and y is None:
            raise ConfigurationError("nudge with beta != 0 needs a target y")
        if y is not None:
            y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        self._beta, self._y = beta, y
        self._stale = True

    def _conductance_sums(self) -> list[np.ndarray]:
        """Total conductance at each node of layers 1..L (nudging included), per layer; layer 0 (the
        sources) is an empty placeholder so that indices are layer numbers."""
        th, out = self.theta, [NO_LAYER]
        for l in range(1, self.L + 1):
            d = th[f"W{l}"].sum(axis=0) + th[f"b{l}"].sum(axis=0)
            if l < self.L:
                d = d + th[f"W{l + 1}"].sum(axis=1)
            else:
                d = d + self._beta
            out.append(d)
        return out

    def _drives(self, den: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per layer: the rail current (A) and 1/den (0 at an isolated node); checks beta against the outputs."""
        if np.min(den[self.L]) <= 0.0:
            raise RelaxationError(
                f"nudging beta={self._beta:g} cancels an output's conductance "
                f"(min {np.min(den[self.L] - self._beta):.3g} S); use |beta| below it"
            )
        rail, inv = [NO_LAYER], [NO_LAYER]
        for l in range(1, self.L + 1):
            b = self.theta[f"b{l}"]
            rail.append(self.v_bias * (b[0] - b[1]))
            inv.append(np.divide(1.0, den[l], out=np.zeros_like(den[l]), where=den[l] > 0))
        return rail, inv

    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        """Settle the node voltages by exact block coordinate descent (odd layers, then even)."""
        s, th, L = self._s, self.theta, self.L
        rail, inv = self._drives(self._conductance_sums())
        drive1 = self._input_terms()[0] + rail[1]
        order = list(range(1, L + 1, 2)) + list(range(2, L + 1, 2))
        change, sweeps = np.inf, 0
        while sweeps < max_sweeps:
            sweeps += 1
            change = 0.0
            for l in order:
                num = drive1 if l == 1 else s[l - 1] @ th[f"W{l}"] + rail[l]
                if l < L:
                    num = num + s[l + 1] @ th[f"W{l + 1}"].T
                elif self._y is not None and self._beta != 0.0:
                    num = num + self._beta * self._y
                new = num * inv[l]
                if l < L:
                    new = np.clip(new, self.lo[l], self.hi[l])
                change = max(change, float(np.max(np.abs(new - s[l]))))
                s[l] = new
            if not np.isfinite(change):
                raise RelaxationError("the node voltages became non-finite; check the conductances and beta")
            if change <= tol:
                break
        return self._settled(sweeps, change, tol)

    def outputs(self) -> np.ndarray:
        """Output node voltages in V, shape (batch, n_outputs)."""
        self._settle()
        return self._s[self.L].copy()

    def state(self) -> list[np.ndarray]:
        """The settled node voltages ``[V_0, V_1, ..., V_L]`` in V (copies); V_0 = (a x, -a x)."""
        self._settle()
        return [a.copy() for a in self._s]

    def _input_terms(self) -> tuple[np.ndarray, float]:
        """(current V_0 @ W1 into layer 1 in A, the energy terms that depend on V_0 and rails only, in W).

        Computed once per clamp and per parameter change, so that every phase,
        sweep and energy evaluation reuses the product with the input layer.
        """
        if self._inputs is None:
            th, v0, vb = self.theta, self._s[0], self.v_bias
            const = 0.5 * float(np.mean(v0 * v0, axis=0) @ th["W1"].sum(axis=1))
            const += 0.5 * vb * vb * sum(float(np.sum(th[f"b{l}"])) for l in range(1, self.L + 1))
            self._inputs = inputs = (v0 @ th["W1"], const)
            return inputs
        return self._inputs

    def free_energy(self, v: Sequence[np.ndarray], constant: bool = True) -> tuple[float, list[np.ndarray]]:
        """F = E + beta C in W (batch mean) at node voltages ``v = [V_1, ..., V_L]``, and dF/dV_l per layer.

        Inputs, conductances and nudging are the substrate's own; the diodes are
        not part of F (they are the bounds ``lo``/``hi`` of the minimisation).
        dF/dV_l is (net current out of each node) / batch, in A, so Kirchhoff's
        law at a free node is dF/dV = 0. An external optimiser minimises this
        same function; ``constant=False`` leaves out the terms that do not
        depend on v (the minimiser is unchanged, and an optimiser that compares
        values of F loses no digits to them).
        """
        th, L, B = self.theta, self.L, v[0].shape[0]
        den = self._conductance_sums()
        drive1, const = self._input_terms()
        e, grads = (const if constant else 0.0), []
        for l in range(1, L + 1):
            V = v[l - 1]
            b = th[f"b{l}"]
            num = (drive1 if l == 1 else v[l - 2] @ th[f"W{l}"]) + self.v_bias * (b[0] - b[1])
            own = num if l == 1 else self.v_bias * (b[0] - b[1])  # the V_(l-1) coupling is counted once, in layer l
            if l < L:
                num = num + v[l] @ th[f"W{l + 1}"].T
            elif self._y is not None and self._beta != 0.0:
                num = num + self._beta * self._y
                own = own + self._beta * self._y
                e += 0.5 * self._beta * float(np.sum(self._y * self._y)) / B if constant else 0.0
            if l > 1:
                own = own + v[l - 2] @ th[f"W{l}"]
            e += float(np.sum(0.5 * den[l] * V * V - own * V)) / B
            grads.append((den[l] * V - num) / B)
        return e, grads

    def kkt_residual(self) -> np.ndarray:
        """KKT residual per free node in A, shape (batch, nodes of layers 1..L), at the current state.

        The net resistor current into a node (-batch dF/dV), except that a node
        held at its diode's bound may draw current through the diode in the
        diode's forward direction only; a reverse current counts as residual.
        """
        s, L = self._s, self.L
        B = s[0].shape[0]
        _, grads = self.free_energy(s[1:])
        res = []
        for l in range(1, L + 1):
            inflow = -B * grads[l - 1]
            if l < L:  # a V >= 0 node at 0 V may take inflow < 0 from its diode, a V <= 0 node inflow > 0
                at_lo, at_hi = s[l] <= self.lo[l], s[l] >= self.hi[l]
                inflow = np.where(at_lo, np.maximum(inflow, 0.0), np.where(at_hi, np.minimum(inflow, 0.0), inflow))
            res.append(inflow)
        return np.concatenate(res, axis=1)

    def largest_current(self) -> float:
        """The largest current through any one conductance, in A, over the batch, at the current state."""
        s, th, big = self._s, self.theta, 0.0
        for l in range(1, self.L + 1):
            for b in range(s[0].shape[0]):
                big = max(big, float(np.max(np.abs(s[l - 1][b][:, None] - s[l][b][None, :]) * th[f"W{l}"])))
            for r, v in ((0, self.v_bias), (1, -self.v_bias)):
                big = max(big, float(np.max(np.abs(s[l] - v) * th[f"b{l}"][r])))
        return big

    def currents(self) -> tuple[np.ndarray, float]:
        """(KKT residual per free node in A, largest branch current in A) at the current state."""
        return self.kkt_residual(), self.largest_current()

    def energy(self) -> float:
        """F = E + beta C at the settled state, in W, batch mean."""
        self._settle()
        return self.free_energy(self._s[1:])[0]

    # -- parameters (capability "eqprop") -------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """The conductances in S (copies)."""
        return {n: v.copy() for n, v in self.theta.items()}

    def _assign(self, theta: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, int]:
        clipped = {}
        for name, value in theta.items():
            if name not in self.info.parameter_shapes:
                raise ConfigurationError(f"unknown parameter {name!r}; valid: {sorted(self.info.parameter_shapes)}")
            self.theta[name], clipped[name] = within_bounds(
                name, value, self.info.parameter_shapes[name], (0.0, self.g_max), copy
            )
        self._stale, self._inputs = True, None
        return clipped

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program conductances in S; values outside [0, g_max] are clipped. Returns entries clipped per tensor."""
        return self._assign(theta)

    def energy_gradients(self) -> dict[str, np.ndarray]:
        """dE/dg = 1/2 (V_i - V_j)^2 per conductance, in V^2, batch mean, at the current equilibrium."""
        self._settle()
        s, B, vb = self._s, self._s[0].shape[0], self.v_bias
        out = {}
        for l in range(1, self.L + 1):
            a, c = s[l - 1], s[l]
            sq_a, sq_c = np.mean(a * a, axis=0), np.mean(c * c, axis=0)
            out[f"W{l}"] = 0.5 * (sq_a[:, None] + sq_c[None, :]) - (a.T @ c) / B
            out[f"b{l}"] = 0.5 * np.stack([np.mean((c - vb) ** 2, axis=0), np.mean((c + vb) ** 2, axis=0)])
        return out

    def close(self) -> None:
        """Nothing to switch off in simulation; removes nudging."""
        self._beta, self._y = 0.0, None
