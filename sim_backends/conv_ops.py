"""The linear maps between the layers of a convolutional Hopfield network, with their adjoints.

Each layer map ``A`` takes the layer below to the pre-activation of the layer
above; the energy couples the two as ``-s_above . A(s_below)``. Given the
coupling, three operations are needed: ``forward(a)`` (the drive from below),
``adjoint(c)`` (the drive from above, A^T c), and ``gradient(a, c)``: the
derivative of ``c . A(a)`` with respect to the map's weights (batch sum).

- :class:`Conv`: "valid" 2-D correlation with a kernel K (C_out, C_in, k, k),
  then average pooling over p x p blocks (Ernoult et al. 2019, Laborieux et al.
  2021 use max pooling; the average keeps the energy bilinear, so each layer's
  exact minimiser stays a clipped closed form).
- :class:`Dense`: a matrix W (n_in, n_out) on the flattened layer below.

Speed. A k x k correlation followed by p x p average pooling is one correlation
with stride p and the *pooled kernel* ``Q = K * box_p / p^2`` (the full
convolution of K with a p x p box), of side ``q = k + p - 1``: it skips the
pooled-away outputs, p^2 k^2 / q^2 times fewer products (2.8x for k = 5,
p = 2). The patches ("im2col") are one strided copy into a (rows, q q C_in)
matrix, the adjoint ("col2im") one product then ceil(q / p)^2 shifted adds
of p x p blocks, and
``dE/dK`` is ``dE/dQ`` summed back over the p x p shifts. The hot path
(:class:`~sim_backends.conv.ConvHopfieldSubstrate`'s relaxation) builds Q once
per relaxation (:meth:`Conv.pooled`) and writes into buffers it keeps;
``forward`` / ``adjoint`` / ``gradient`` with K are the same maps for checks
and the oracle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Conv:
    """Valid correlation (kernel k, C_in -> C_out channels), then p x p average pooling."""

    def __init__(self, in_shape: tuple[int, int, int], channels: int, kernel: int, pool: int) -> None:
        c, h, w = in_shape
        self.in_shape: tuple[int, int, int] = (int(c), int(h), int(w))
        self.k, self.p = int(kernel), int(pool)
        self.q = self.k + self.p - 1  # side of the pooled kernel
        ho, wo = h - self.k + 1, w - self.k + 1
        self.conv_shape = (int(channels), ho, wo)
        self.out_shape: tuple[int, ...] = (int(channels), ho // self.p, wo // self.p)
        self.weight_shape: tuple[int, ...] = (int(channels), int(c), self.k, self.k)
        self.valid = ho >= 1 and wo >= 1 and ho % self.p == 0 and wo % self.p == 0

    def fan(self) -> tuple[int, int]:
        c_out, c_in, k, _ = self.weight_shape
        return c_in * k * k, c_out * k * k // (self.p * self.p)

    # -- the pooled kernel ------------------------------------------------------
    def pooled(self, K: np.ndarray) -> np.ndarray:
        """Q as a (C_out, q q C_in) matrix (rows ordered (u, v, channel)): the kernel of the
        stride-p correlation equal to the k x k correlation then p x p average pooling."""
        c_out, c_in, k, _ = K.shape
        q, p = self.q, self.p
        Q = np.zeros((c_out, q, q, c_in), dtype=K.dtype)
        Kt = K.transpose(0, 2, 3, 1) * (1.0 / (p * p))
        for i in range(p):
            for j in range(p):
                Q[:, i : i + k, j : j + k, :] += Kt
        return Q.reshape(c_out, -1)

    def unpooled(self, G: np.ndarray) -> np.ndarray:
        """The derivative with respect to K of a function of Q, from its derivative ``G`` with
        respect to Q (a (C_out, q q C_in) matrix): the adjoint of :meth:`pooled`."""
        c_out, c_in, k, _ = self.weight_shape
        q, p = self.q, self.p
        Gq = G.reshape(c_out, q, q, c_in)
        out = np.zeros((c_out, k, k, c_in), dtype=G.dtype)
        for i in range(p):
            for j in range(p):
                out += Gq[:, i : i + k, j : j + k, :]
        out *= 1.0 / (p * p)
        return out.transpose(0, 3, 1, 2).copy()

    # -- the hot path: patches, products, shifted adds --------------------------
    def patches(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(B Ho Wo, q q C_in): the q x q window of ``a`` (B, C_in, H, W) under each pooled output,
        as a matrix row ordered (u, v, channel), written into ``out`` if given."""
        b = a.shape[0]
        ho, wo = self.out_shape[1:]
        win = sliding_window_view(a, (self.q, self.q), axis=(2, 3))[:, :, :: self.p, :: self.p]
        if out is None:
            out = np.empty((b * ho * wo, self.q * self.q * a.shape[1]), dtype=a.dtype)
        np.copyto(out.reshape(b, ho, wo, self.q, self.q, a.shape[1]), win.transpose(0, 2, 3, 4, 5, 1))
        return out

    def apply(
        self,
        cols: np.ndarray,
        Q: np.ndarray,
        out: np.ndarray,
        work: np.ndarray | None = None,
        route: np.ndarray | None = None,
    ) -> None:
        """``out`` (B, C_out, Ho, Wo) <- the layer map of the patches ``cols`` with the pooled kernel Q
        (``route``: for max pooling, the argmax is written there)."""
        b = out.shape[0]
        c_out, ho, wo = self.out_shape
        z = np.dot(cols, Q.T, out=work)  # (B Ho Wo, C_out)
        np.copyto(out, z.reshape(b, ho, wo, c_out).transpose(0, 3, 1, 2))

    def spread(
        self, c: np.ndarray, Q: np.ndarray, out: np.ndarray, add: bool = False, route: np.ndarray | None = None
    ) -> None:
        """``out`` (B, C_in, H, W) <- A^T c (``add``: +=): the product of c with Q, then its windows
        added back at their places, m^2 shifted adds of p x p blocks (m = ceil(q / p))."""
        b, (c_in, h, w) = c.shape[0], self.in_shape
        ho, wo = self.out_shape[1:]
        q, p = self.q, self.p
        m = -(-q // p)
        rows = np.ascontiguousarray(c.transpose(0, 2, 3, 1)).reshape(-1, c.shape[1])
        cols = (rows @ Q).reshape(b, ho, wo, q, q, c_in)
        if m * p != q:  # pad the windows to whole p x p blocks
            padded = np.zeros((b, ho, wo, m * p, m * p, c_in), dtype=cols.dtype)
            padded[:, :, :, :q, :q, :] = cols
            cols = padded
        blocks = cols.reshape(b, ho, wo, m, p, m, p, c_in)
        acc = np.zeros((b, ho + m - 1, p, wo + m - 1, p, c_in), dtype=out.dtype)
        for i in range(m):
            for j in range(m):
                acc[:, i : i + ho, :, j : j + wo, :, :] += blocks[:, :, :, i, :, j, :, :].transpose(0, 1, 3, 2, 4, 5)
        full = acc.reshape(b, p * (ho + m - 1), p * (wo + m - 1), c_in)[:, :h, :w, :].transpose(0, 3, 1, 2)
        if add:
            out += full
        else:
            np.copyto(out, full)

    def gradient_from(self, cols: np.ndarray, c: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        """d(c . A(a))/dK, batch sum, from the patches ``cols`` of a: shape (C_out, C_in, k, k)."""
        rows = np.ascontiguousarray(c.transpose(0, 2, 3, 1)).reshape(-1, c.shape[1])
        return self.unpooled(rows.T @ cols)

    # -- the same maps from K (checks and the oracle) ---------------------------
    def rows(self, batch: int) -> int:
        """Rows of :meth:`patches` for a batch: one per pooled output."""
        return batch * self.out_shape[1] * self.out_shape[2]

    def route(self, a: np.ndarray, K: np.ndarray) -> np.ndarray | None:
        """The pooling's routing at ``a`` (None: average pooling routes nothing)."""
        return None

    def forward(self, a: np.ndarray, K: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((a.shape[0], *self.out_shape), dtype=np.result_type(a, K))
        self.apply(self.patches(a.astype(out.dtype, copy=False)), self.pooled(K.astype(out.dtype, copy=False)), out)
        return out

    def adjoint(self, c: np.ndarray, K: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        """A^T c: the correlation's adjoint with the pooled kernel ("col2im")."""
        out = np.empty((c.shape[0], *self.in_shape), dtype=np.result_type(c, K))
        self.spread(c, self.pooled(K.astype(out.dtype, copy=False)), out)
        return out

    def gradient(self, a: np.ndarray, c: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        """d(c . A(a))/dK, summed over the batch: shape (C_out, C_in, k, k)."""
        return self.gradient_from(self.patches(a), c)


class MaxConv(Conv):
    """Valid correlation (kernel k, C_in -> C_out channels), then p x p max pooling (Ernoult et al.
    2019, Laborieux et al. 2021).

    The map is piecewise linear: given its *route* (which of the p x p conv outputs is the
    largest in each pooling block, an index in [0, p^2) per pooled output) it is the
    correlation followed by the selection of the routed entries, and ``adjoint`` and
    ``gradient`` are those of that linear map (the gradient routes through the argmax). The
    patches are the k x k windows at stride 1 (no pooled kernel: the max does not commute with
    the correlation), Q is K as a (C_out, k k C_in) matrix. Ties go to the first entry.
    """

    def __init__(self, in_shape: tuple[int, int, int], channels: int, kernel: int, pool: int) -> None:
        super().__init__(in_shape, channels, kernel, pool)
        self.q = self.k  # the window of a patch: the kernel itself

    def pooled(self, K: np.ndarray) -> np.ndarray:
        """K as a (C_out, k k C_in) matrix, rows ordered (u, v, channel)."""
        return K.transpose(0, 2, 3, 1).reshape(K.shape[0], -1)

    def unpooled(self, G: np.ndarray) -> np.ndarray:
        c_out, c_in, k, _ = self.weight_shape
        return G.reshape(c_out, k, k, c_in).transpose(0, 3, 1, 2).copy()

    def rows(self, batch: int) -> int:
        return batch * self.conv_shape[1] * self.conv_shape[2]

    def patches(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(B Hc Wc, k k C_in): the k x k window of ``a`` under each conv output (before the pooling)."""
        b, k = a.shape[0], self.k
        hc, wc = self.conv_shape[1:]
        win = sliding_window_view(a, (k, k), axis=(2, 3))
        if out is None:
            out = np.empty((b * hc * wc, k * k * a.shape[1]), dtype=a.dtype)
        np.copyto(out.reshape(b, hc, wc, k, k, a.shape[1]), win.transpose(0, 2, 3, 4, 5, 1))
        return out

    def _blocks(self, z: np.ndarray, b: int) -> np.ndarray:
        """The conv outputs (B Hc Wc, C_out) as (B, C_out, Ho, Wo, p p): each pooling block's entries."""
        c_out, ho, wo = self.out_shape
        p = self.p
        return z.reshape(b, ho, p, wo, p, c_out).transpose(0, 5, 1, 3, 2, 4).reshape(b, c_out, ho, wo, p * p)

    def apply(
        self,
        cols: np.ndarray,
        Q: np.ndarray,
        out: np.ndarray,
        work: np.ndarray | None = None,
        route: np.ndarray | None = None,
    ) -> None:
        """``out`` <- the max over each p x p block of the correlation; its argmax into ``route``."""
        blocks = self._blocks(np.dot(cols, Q.T, out=work), out.shape[0])
        arg = blocks.argmax(axis=-1)
        if route is not None:
            np.copyto(route, arg)
        np.copyto(out, np.take_along_axis(blocks, arg[..., None], axis=-1)[..., 0])

    def _unpool(self, c: np.ndarray, route: np.ndarray) -> np.ndarray:
        """c (B, C_out, Ho, Wo) put at its routed place in each block, zeros elsewhere: (B Hc Wc, C_out)."""
        b, (c_out, ho, wo), p = c.shape[0], self.out_shape, self.p
        grid = np.zeros((b, c_out, ho, wo, p * p), dtype=c.dtype)
        np.put_along_axis(grid, route[..., None], c[..., None], axis=-1)
        return grid.reshape(b, c_out, ho, wo, p, p).transpose(0, 2, 4, 3, 5, 1).reshape(-1, c_out)

    def spread(
        self, c: np.ndarray, Q: np.ndarray, out: np.ndarray, add: bool = False, route: np.ndarray | None = None
    ) -> None:
        """``out`` (B, C_in, H, W) <- A^T c (``add``: +=): c unpooled along the route, its product
        with Q, the windows added back at their places (k^2 shifted adds)."""
        if route is None:
            raise ValueError("max pooling's adjoint needs the route (the argmax of each block)")
        b, (c_in, h, w), k = c.shape[0], self.in_shape, self.k
        hc, wc = self.conv_shape[1:]
        cols = (self._unpool(c, route) @ Q).reshape(b, hc, wc, k, k, c_in)
        acc = np.zeros((b, h, w, c_in), dtype=out.dtype)
        for u in range(k):
            for v in range(k):
                acc[:, u : u + hc, v : v + wc, :] += cols[:, :, :, u, v, :]
        full = acc.transpose(0, 3, 1, 2)
        if add:
            out += full
        else:
            np.copyto(out, full)

    def gradient_from(self, cols: np.ndarray, c: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        if route is None:
            raise ValueError("max pooling's gradient needs the route (the argmax of each block)")
        return self.unpooled(self._unpool(c, route).T @ cols)

    def route(self, a: np.ndarray, K: np.ndarray) -> np.ndarray:
        """The argmax of each pooling block of the correlation of ``a``: (B, C_out, Ho, Wo) integers."""
        dtype = np.result_type(a, K)
        cols = self.patches(a.astype(dtype, copy=False))
        return self._blocks(cols @ self.pooled(K.astype(dtype, copy=False)).T, a.shape[0]).argmax(axis=-1)

    def forward(self, a: np.ndarray, K: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        """The max-pooled correlation; with ``route``, the routed entries instead (the linear map
        the route defines: the oracle's, at an equilibrium's route)."""
        dtype = np.result_type(a, K)
        cols = self.patches(a.astype(dtype, copy=False))
        blocks = self._blocks(cols @ self.pooled(K.astype(dtype, copy=False)).T, a.shape[0])
        arg = blocks.argmax(axis=-1) if route is None else route
        return np.take_along_axis(blocks, arg[..., None], axis=-1)[..., 0]

    def adjoint(self, c: np.ndarray, K: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((c.shape[0], *self.in_shape), dtype=np.result_type(c, K))
        self.spread(c, self.pooled(K.astype(out.dtype, copy=False)), out, route=route)
        return out

    def gradient(self, a: np.ndarray, c: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        return self.gradient_from(self.patches(a), c, route)


POOLINGS = {"average": Conv, "max": MaxConv}


def conv_map(in_shape: tuple[int, int, int], channels: int, kernel: int, pool: int, pooling: str) -> Conv:
    """The conv map of a layer: a k x k correlation, then ``pooling`` ("average" or "max") over p x p."""
    return POOLINGS[pooling](in_shape, channels, kernel, pool)


class Dense:
    """A matrix on the flattened layer below."""

    def __init__(self, in_shape: tuple[int, ...], n_out: int) -> None:
        self.in_shape = tuple(in_shape)
        n_in = int(np.prod(in_shape))
        self.out_shape: tuple[int, ...] = (int(n_out),)
        self.weight_shape: tuple[int, ...] = (n_in, int(n_out))
        self.valid = True

    def fan(self) -> tuple[int, int]:
        return self.weight_shape[0], self.weight_shape[1]

    def route(self, a: np.ndarray, W: np.ndarray) -> np.ndarray | None:
        return None

    def forward(self, a: np.ndarray, W: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        return a.reshape(a.shape[0], -1) @ W

    def adjoint(self, c: np.ndarray, W: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        return (c @ W.T).reshape(c.shape[0], *self.in_shape)

    def gradient(self, a: np.ndarray, c: np.ndarray, route: np.ndarray | None = None) -> np.ndarray:
        return a.reshape(a.shape[0], -1).T @ c


def bias_shape(out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """One bias per channel of a conv layer, per unit of a dense one."""
    return out_shape[:1]


def add_bias(z: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z + b, b broadcast over the spatial axes of a conv layer (in place)."""
    z += b.reshape(b.shape + (1,) * (z.ndim - 2))
    return z


def bias_gradient(c: np.ndarray) -> np.ndarray:
    """d(c . b)/db summed over the batch (and the spatial axes)."""
    return c.sum(axis=tuple(i for i in range(c.ndim) if i != 1))


class ConvHost:
    """What the conv substrate's mixins (:class:`~sim_backends.conv_relax.ConvRelaxation`,
    :class:`~sim_backends.conv_oracle.ConvOracle`) read of their host class,
    :class:`~sim_backends.conv.ConvHopfieldSubstrate`: annotations only, set by the host."""

    maps: dict[int, Conv | Dense]  # layer map A_l of each layer l = 1..L
    W: list[np.ndarray]  # indexed by layer number
    b: list[np.ndarray]
    L: int  # layers after the input
    T: int  # the top layer of units (L - 1 with a readout)
    readout: bool
    dtype: np.dtype
    _s: list[np.ndarray]  # the state [x, s_1, ..., s_L], each with a leading batch axis
    _x: np.ndarray
    _y: np.ndarray | None
    _drive: np.ndarray | None  # A_1(x) + b_1, per clamp and theta_1
    _cols: np.ndarray | None  # the patches of x under layer 1, per clamp
    _routes: dict[int, np.ndarray]  # the argmax of each max-pooling layer's blocks
    _buffers: dict[tuple[str, int], np.ndarray]  # work arrays of the sweeps, per batch size
    _free: list[np.ndarray] | None  # the free equilibrium on the clamped x, once settled
    _state_beta: float | None  # the nudging the state last settled under
    _rho: float | None  # the plain contraction measured by the free phase

    if TYPE_CHECKING:

        def _box(self, l: int) -> tuple[float, float]: ...
