"""Discrete-time layered network in the prototypical setting (Ernoult et al. 2019).

The state moves in time steps, all layers at once, by the gradient of a
primitive function Phi passed through each layer's activation rho::

    s(t+1) = rho( dPhi/ds(x, s(t), theta) )
    Phi(x, s, theta) = sum_l s_(l-1)^T W_l s_l + sum_l b_l^T s_l        (s_0 = x clamped)

so layer l steps to ``rho_l(s_(l-1) W_l + s_(l+1) W_(l+1)^T + b_l)``
(:mod:`sim_backends.activations`). ``activation`` picks the rho:

- ``"smooth"`` (default): hidden units ``rho(a) = 1 / (1 + exp(-4 (a - 1/2)))`` in
  (0, 1), the smooth hard sigmoid of the paper's prototypical setting; output units
  soft-clipped to (-1, 2) (the clip with its kinks rounded over 1/4, slope within
  2 % of 1 across the targets' range [0, 1]). Every unit responds smoothly to a
  nudge, so the centered per-step error against BPTT is O(beta^2) on every unit.
- ``"clip"``: the boxes of the Hopfield network (hidden units clipped to [0, 1],
  outputs to [-1, 2]). A unit whose pre-activation lies within the nudge of a
  bound crosses the clip's kink: its response is not linear in beta, and the
  per-step error there shrinks only as the number of such units does.

Nudging with strength beta subtracts ``beta dC/ds`` with ``C = 1/2 ||o - y||^2``,
taken at the output's new value (semi-implicit)::

    o(t+1) = rho_L(z),   z = dPhi/do(s(t)) - beta (rho_L(z) - y)

the exact minimiser of ``G_L(o) - o a + beta C`` given the other layers
(``a = s_(L-1) W_L + b_L``); for the clip ``clip((a + beta y) / (1 + beta))``, for the
soft clip a few safeguarded Newton steps on z
(:func:`sim_backends.activations.nudged_output`).

To first order in beta this is the explicit step ``rho_L(a - beta (o(t) - y))``
of the paper (they differ at O(beta^2) near a fixed point), so the per-step GDU
property is the same; unlike the explicit step it leaves the output without a
self-coupling, which makes the synchronous steps oscillate once beta plus the
network's coupling passes 1. (Measured: at beta 0.1 the explicit step errs no
less against BPTT.)

A fixed point is ``s = rho(dPhi/ds)``: a stationary point of the energy
``E = sum_l sum_i G_l(s_li) - Phi`` with ``G_l' = rho_l^(-1)`` (nudged: of
``E + beta C``). For the logistic units ``G(s) = s/2 + (s ln s + (1 - s) ln(1 - s)) / 4``
(Hopfield 1984's continuous network), for the soft clip ``1/2 s^2`` plus two
dilogarithm barriers (:class:`~sim_backends.activations.SoftClip`), for clipped units
``1/2 s^2`` in the box. With ``"clip"``, E is the layered Hopfield energy and the fixed
points are its equilibria; with ``"smooth"`` they are not the Hopfield network's.
G does not depend on theta, so ``dE/dtheta = -dPhi/dtheta`` is the local
measurement in both settings, and EqProp, continual EqProp and
Aeqprop run on it unchanged. Each G is convex and layers of equal parity do not
interact, so each layer's step is the exact minimiser of E given its neighbours
and the synchronous step is two interleaved chains of exact block coordinate
descent on E.

The oracle (``loss``, ``true_gradient``) is the loss after T free time steps
from s = 0 and its gradient by backpropagation through time
(:mod:`sim_backends.discrete_bptt`), not implicit differentiation: it is the
gradient of what the network actually computes in T steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, check_array
from sim_backends import discrete_bptt
from sim_backends.activations import Activation, Box, Linear, Logistic, SoftClip, nudged_output
from sim_backends.hopfield import HIDDEN_BOX, OUTPUT_BOX, HopfieldSubstrate

#: activation name -> (hidden units, output units)
ACTIVATIONS: dict[str, tuple[Activation, Activation]] = {
    "smooth": (Logistic(), SoftClip(*OUTPUT_BOX)),
    "clip": (Box(*HIDDEN_BOX), Box(*OUTPUT_BOX)),
}


class DiscreteSubstrate(HopfieldSubstrate):
    """A batched, float64 discrete-time layered network (prototypical setting).

    Example: ``DiscreteSubstrate((64, 256, 10), seed=0)``. Options as
    :class:`~sim_backends.hopfield.HopfieldSubstrate`, where a "sweep" is one
    time step of the whole network, and:

    activation:
        ``"smooth"`` (logistic hidden units in (0, 1), outputs soft-clipped to
        (-1, 2)) or ``"clip"`` (the Hopfield network's boxes) [default: smooth].
    T:
        Time steps of the free phase the oracle differentiates through
        (``loss``, ``true_gradient``) [default: ``max_sweeps``].

    ``max_sweeps`` defaults to 200 time steps: each step moves every layer
    once, but each of the two interleaved chains advances by half a sweep, so
    a relaxation takes two to four times the Hopfield network's sweeps. If E
    has several minima the two chains may settle in different ones: the state
    then alternates between two values, and ``relax`` reports it unconverged.
    """

    description = "discrete-time layered network, s(t+1) = rho(dPhi/ds) (Ernoult et al. 2019); BPTT oracle"

    def __init__(
        self, layers: Sequence[int] = (64, 256, 10), T: int | None = None, activation: str = "smooth", **options: Any
    ) -> None:
        options.setdefault("max_sweeps", 200)
        if options.get("cost", "squared") != "squared":
            raise ConfigurationError(
                "the discrete-time network has the squared cost only (its BPTT oracle); remove cost"
            )
        if activation not in ACTIVATIONS:
            raise ConfigurationError(f"activation={activation!r}: valid: {', '.join(ACTIVATIONS)}")
        super().__init__(layers, **options)
        if T is not None and int(T) < 1:
            raise ConfigurationError(f"T={T}: the oracle's free phase needs at least 1 time step")
        self.free_steps = None if T is None else int(T)
        self.activation = activation
        hidden, output = ACTIVATIONS[activation]
        self.rho: list[Activation] = [Linear()] + [hidden] * (self.L - 1) + [output]  # rho[0]: the clamped input
        self.info = replace(
            self.info,
            description=f"discrete-time layered network {'-'.join(map(str, self.layers))}, {activation} units",
        )

    def _step(self, s: list[np.ndarray], drive1: np.ndarray) -> list[np.ndarray]:
        """One time step of every layer from the state ``s`` (s[0] = x): the new layers 1..L."""
        W, b, L = self.W, self.b, self.L
        new = [s[0]]
        for l in range(1, L + 1):
            a = drive1.copy() if l == 1 else s[l - 1] @ W[l] + b[l]
            if l < L:
                a += s[l + 1] @ W[l + 1].T
                new.append(self.rho[l](a))
            elif self._beta != 0.0:
                assert self._y is not None  # nudge() refuses beta != 0 without a target
                new.append(nudged_output(self.rho[l], a, self._beta, self._y))
            else:
                new.append(self.rho[l](a))
        return new

    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        """Take time steps until no unit moves by more than ``tol`` in one, or ``max_sweeps`` steps."""
        drive1 = self._x @ self.W[1] + self.b[1]  # the clamped input's drive, once per relaxation
        change, steps = np.inf, 0
        s = self._s
        while steps < max_sweeps:
            steps += 1
            new = self._step(s, drive1)
            change = max(float(np.max(np.abs(new[l] - s[l]))) for l in range(1, self.L + 1))
            s = new
            if not np.isfinite(change):
                raise RelaxationError("the state became non-finite during the time steps; check the parameters")
            if change <= tol:
                break
        self._s = s
        return self._settled(steps, change, tol)

    def energy(self) -> float:
        """F = E + beta C at the current state, batch mean: ``E = sum G(s) - Phi`` (module docstring)."""
        s, W, b = self._s, self.W, self.b
        e = 0.0
        for l in range(1, self.L + 1):
            e += float(np.sum(self.rho[l].self_energy(s[l])) - np.sum((s[l - 1] @ W[l]) * s[l]) - np.sum(s[l] @ b[l]))
        if self._beta != 0.0:
            assert self._y is not None
            e += self._beta * 0.5 * float(np.sum((s[self.L] - self._y) ** 2))
        return e / s[0].shape[0]

    # -- oracle (simulation only): backpropagation through time -------------------
    def _oracle_steps(self, T: int | None) -> int:
        T = (self.free_steps or self.max_sweeps) if T is None else int(T)
        if T < 1:
            raise ConfigurationError(f"T={T}: the oracle's free phase needs at least 1 time step")
        return T

    def bptt(self, x: np.ndarray, y: np.ndarray, T: int | None = None, K: int = 0) -> discrete_bptt.BPTTResult:
        """Loss after T free steps from s = 0, its gradient through time, and per-step gradients
        at each of the last K steps (see :func:`sim_backends.discrete_bptt.bptt`)."""
        x = check_array("x", x, (None, self.info.n_inputs))
        y = check_array("y", y, (x.shape[0], self.info.n_outputs))
        W = [np.zeros((0, 0))] + [np.asarray(w, dtype=np.float64) for w in self.W[1:]]
        b = [np.zeros(0)] + [np.asarray(v, dtype=np.float64) for v in self.b[1:]]
        return discrete_bptt.bptt(W, b, self.rho, x, y, self._oracle_steps(T), K)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """L = mean_batch 1/2 ||o_T - y||^2 after T free time steps from s = 0 (leaves the state there)."""
        self.clamp(x)
        self.nudge(0.0)
        self._relax(0.0, self._oracle_steps(None))
        y = check_array("y", y, (self._x.shape[0], self.info.n_outputs))
        return float(0.5 * np.sum((self._s[self.L] - y) ** 2) / y.shape[0])

    def true_gradient(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """dL/dtheta by backpropagation through the T free time steps. Leaves the substrate
        clamped to x, settled after those T steps."""
        self.loss(x, y)
        return self.bptt(x, y).gradient
