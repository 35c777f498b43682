"""The relaxation of the convolutional Hopfield network (:class:`~sim_backends.conv.ConvHopfieldSubstrate`,
a mixin): each layer's target given its neighbours through the layer maps of
:mod:`sim_backends.conv_ops`, handed to the accelerated block coordinate descent of
:mod:`sim_backends.hopfield_relax`; the input's patches, drive and (max pooling) route
kept per clamp; the work arrays kept per batch size.
"""

from __future__ import annotations

import math

import numpy as np

from aeqprop.substrate import RelaxReport
from sim_backends.conv_ops import Conv, ConvHost, Dense, MaxConv, add_bias
from sim_backends.hopfield_relax import PLAIN, Acceleration, Sweeps, block_descent, finish
from sim_backends.readout import apply_force, readout_step


class ConvRelaxation(ConvHost):
    """``_relax`` of :class:`~sim_backends.conv.ConvHopfieldSubstrate` and the arrays it keeps
    (the host's attributes: :class:`~sim_backends.conv_ops.ConvHost`)."""

    shapes: list[tuple[int, ...]]
    acceleration: Acceleration
    _beta: float
    _classes: tuple[list[int], list[int]]
    _watched: int

    def _buffer(self, name: str, l: int, shape: tuple[int, ...]) -> np.ndarray:
        """A work array kept between sweeps and relaxations (dropped when the batch size changes)."""
        kept = self._buffers.get((name, l))
        if kept is None or kept.shape != shape or kept.dtype != self.dtype:
            kept = self._buffers[(name, l)] = np.empty(shape, dtype=self.dtype)
        return kept

    def _input_patches(self) -> np.ndarray:
        """The patches of x under layer 1 (a conv map), once per clamp."""
        if self._cols is None:
            conv = self.maps[1]
            assert isinstance(conv, Conv)
            self._cols = conv.patches(self._x)
        return self._cols

    def _input_drive(self) -> np.ndarray:
        """``A_1(x) + b_1``, computed once per clamp and change of W_1 or b_1."""
        if self._drive is None:
            conv = self.maps[1]
            assert isinstance(conv, Conv)
            drive = np.empty((self._x.shape[0], *self.shapes[1]), dtype=self.dtype)
            conv.apply(self._input_patches(), conv.pooled(self.W[1]), drive, route=self._routes.get(1))
            self._drive = add_bias(drive, self.b[1])
        return self._drive

    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        """Block coordinate descent, odd layers then even, heavy-ball accelerated
        (:func:`sim_backends.hopfield_relax.block_descent`); stops on a plain sweep whose
        watched layers move by at most tol."""
        s, W, b, L, T, maps = self._s, self.W, self.b, self.L, self.T, self.maps
        beta, y = self._beta, self._y
        B = s[0].shape[0]
        drive = self._input_drive()
        kernels = {l: m.pooled(W[l]) for l, m in maps.items() if isinstance(m, Conv) and 1 < l <= T}
        dense_T = {l: np.ascontiguousarray(W[l].T) for l, m in maps.items() if isinstance(m, Dense) and 1 < l}
        squared = beta != 0.0 and not self.readout
        force = self.readout and beta != 0.0
        if squared:
            assert y is not None  # nudge refuses beta != 0 without a target
            y_scaled = beta * y
        alpha = readout_step(beta, W[L]) if force else 1.0
        bounds = self._bounds()
        free, at = self._free, self._state_beta
        if free is not None and at is not None and beta != 0.0 and abs(beta) < abs(beta - at):
            if self.acceleration.warm_start:  # the free equilibrium is the nearer start (centered nudging)
                s[1:] = [a.copy() for a in free]
        routes = self._routes
        for l, r in routes.items():  # each max-pooling block's argmax at the state the relaxation starts from
            m = maps[l]
            if l > 1 and isinstance(m, MaxConv):
                np.copyto(r, m.route(s[l - 1], W[l]))

        def target(l: int, pre: np.ndarray) -> None:
            """Layer l's exact minimiser given its neighbours, before the box, into ``pre``."""
            m = maps[l]
            if l == 1:
                np.copyto(pre, drive)
            elif isinstance(m, Conv):
                cols = m.patches(s[l - 1], self._buffer("cols", l, (m.rows(B), kernels[l].shape[1])))
                work = self._buffer("work", l, (cols.shape[0], m.out_shape[0]))
                m.apply(cols, kernels[l], pre, work, routes.get(l))
                add_bias(pre, b[l])
            else:
                np.dot(s[l - 1].reshape(B, -1), W[l], out=pre)
                pre += b[l]
                if squared and l == L:
                    pre += y_scaled
                    pre /= 1.0 + beta
            if l < T:
                above = maps[l + 1]
                if isinstance(above, Conv):
                    above.spread(s[l + 1], kernels[l + 1], pre, add=True, route=routes.get(l + 1))
                else:
                    flat = pre.reshape(B, -1)
                    flat += np.dot(s[l + 1], dense_T[l + 1], out=self._buffer("back", l, flat.shape))
            if force and l == T:
                assert y is not None
                apply_force(pre.reshape(B, -1), s[T].reshape(B, -1), W[L], b[L], dense_T[L], y, beta, alpha, bounds[T])

        # the free phase's contraction; the output's self-coupling 1 + beta divides it (squared cost).
        # Under the readout's force (taken at the current state, not an exact block minimiser) the
        # heavy ball still has the plain sweep's fixed points, and block_descent drops it if the moves
        # grow: accelerated too (the nudged phases then take fewer sweeps, tests/sim_backends/test_conv.py).
        # Where the top layer needs the safe step (alpha < 1), the heavy ball's extrapolation can undo
        # its descent and cycle: such a relaxation gets half the cap accelerated and the rest in plain
        # sweeps, which descend (the conv default on digits: 2 to 3 nudged phases in 30 epochs cut
        # off at 1000 sweeps with the heavy ball throughout, none so).
        rho = self._rho
        if rho is not None and squared:
            rho = rho / (1.0 + beta)
        settings = self.acceleration
        first = max(1, max_sweeps // 2) if alpha < 1.0 and settings.enabled else max_sweeps
        done = block_descent(s, self._classes, self._watched, bounds, target, tol, first, rho, settings)
        if done.residual > tol and first < max_sweeps and math.isfinite(done.residual):
            rest = block_descent(s, self._classes, self._watched, bounds, target, tol, max_sweeps - first, None, PLAIN)
            done = Sweeps(done.sweeps + rest.sweeps, rest.residual, done.rho)
        return finish(self, done, beta, tol)

    def _bounds(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Each energy layer's box as 0-d arrays of the compute dtype."""
        out = {}
        for l in range(1, self.T + 1):
            lo, hi = self._box(l)
            out[l] = (np.asarray(lo, self.dtype), np.asarray(hi, self.dtype))
        return out
