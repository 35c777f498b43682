"""Discrete-time layered network in the prototypical setting (Ernoult et al. 2019).

The state moves in time steps, all layers at once, by the gradient of a
primitive function Phi, clipped to each layer's box (the hard-sigmoid
activation; hidden units in [0, 1], outputs in [-1, 2])::

    s(t+1) = clip( dPhi/ds(x, s(t), theta) )
    Phi(x, s, theta) = sum_l s_(l-1)^T W_l s_l + sum_l b_l^T s_l        (s_0 = x clamped)

so layer l steps to ``clip(s_(l-1) W_l + s_(l+1) W_(l+1)^T + b_l)``. Nudging
with strength beta subtracts ``beta dC/ds`` with ``C = 1/2 ||o - y||^2``, taken
at the output's new value (semi-implicit)::

    o(t+1) = clip( dPhi/do(s(t)) - beta (o(t+1) - y) ) = clip( (a + beta y) / (1 + beta) ),   a = s_(L-1) W_L + b_L

To first order in beta this is the explicit step ``a - beta (o(t) - y)`` of
the paper (they differ by ``beta (a - o(t))``, zero at a fixed point), so the
per-step GDU property is the same; unlike the explicit step it leaves the
output without a self-coupling, which makes the synchronous steps oscillate
once beta plus the network's coupling passes 1.

A fixed point is ``s = clip(dPhi/ds)``: the equilibrium of the layered Hopfield
energy ``E = 1/2 ||s||^2 - Phi`` with the same boxes (nudged too:
``o = (a + beta y) / (1 + beta)`` inside the box). E is therefore the energy of
this substrate, ``dE/dtheta = -dPhi/dtheta`` its local measurement, and
EqProp, continual EqProp and Aeqprop run on it unchanged. Layers of equal
parity do not interact, so the synchronous step is two interleaved chains of
exact block coordinate descent on E.

The oracle (``loss``, ``true_gradient``) is the loss after T free time steps
from s = 0 and its gradient by backpropagation through time
(:mod:`sim_backends.discrete_bptt`), not implicit differentiation: it is the
gradient of what the network actually computes in T steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport, check_array
from sim_backends import discrete_bptt
from sim_backends.hopfield import HopfieldSubstrate


class DiscreteSubstrate(HopfieldSubstrate):
    """A batched, float64 discrete-time layered network (prototypical setting).

    Example: ``DiscreteSubstrate((64, 256, 10), seed=0)``. Options as
    :class:`~sim_backends.hopfield.HopfieldSubstrate`, where a "sweep" is one
    time step of the whole network, and:

    T:
        Time steps of the free phase the oracle differentiates through
        (``loss``, ``true_gradient``) [default: ``max_sweeps``].

    ``max_sweeps`` defaults to 200 time steps: each step moves every layer
    once, but each of the two interleaved chains advances by half a sweep, so
    a relaxation takes two to four times the Hopfield network's sweeps. If E
    has several minima the two chains may settle in different ones: the state
    then alternates between two values, and ``relax`` reports it unconverged.
    """

    description = "discrete-time layered network, s(t+1) = clip(dPhi/ds) (Ernoult et al. 2019); BPTT oracle"

    def __init__(self, layers: Sequence[int] = (64, 256, 10), T: int | None = None, **options):
        options.setdefault("max_sweeps", 200)
        if options.get("cost", "squared") != "squared":
            raise ConfigurationError(
                "the discrete-time network has the squared cost only (its BPTT oracle); remove cost"
            )
        super().__init__(layers, **options)
        if T is not None and int(T) < 1:
            raise ConfigurationError(f"T={T}: the oracle's free phase needs at least 1 time step")
        self.free_steps = None if T is None else int(T)
        self.info = replace(self.info, description=f"discrete-time layered network {'-'.join(map(str, self.layers))}")

    def _step(self, s: list[np.ndarray], drive1: np.ndarray) -> list[np.ndarray]:
        """One time step of every layer from the state ``s`` (s[0] = x): the new layers 1..L."""
        W, b, L = self.W, self.b, self.L
        new = [s[0]]
        for l in range(1, L + 1):
            a = drive1.copy() if l == 1 else s[l - 1] @ W[l] + b[l]
            if l < L:
                a += s[l + 1] @ W[l + 1].T
            elif self._beta != 0.0:
                a += self._beta * self._y
                a /= 1.0 + self._beta
            lo, hi = self._box(l)
            new.append(np.minimum(np.maximum(a, lo), hi))
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
        boxes = [None] + [self._box(l) for l in range(1, self.L + 1)]
        return discrete_bptt.bptt(self.W, self.b, boxes, x, y, self._oracle_steps(T), K)

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
