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

    def apply(self, cols: np.ndarray, Q: np.ndarray, out: np.ndarray, work: np.ndarray | None = None) -> None:
        """``out`` (B, C_out, Ho, Wo) <- the layer map of the patches ``cols`` with the pooled kernel Q."""
        b = out.shape[0]
        c_out, ho, wo = self.out_shape
        z = np.dot(cols, Q.T, out=work)  # (B Ho Wo, C_out)
        np.copyto(out, z.reshape(b, ho, wo, c_out).transpose(0, 3, 1, 2))

    def spread(self, c: np.ndarray, Q: np.ndarray, out: np.ndarray, add: bool = False) -> None:
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

    def gradient_from(self, cols: np.ndarray, c: np.ndarray) -> np.ndarray:
        """d(c . A(a))/dK, batch sum, from the patches ``cols`` of a: shape (C_out, C_in, k, k)."""
        rows = np.ascontiguousarray(c.transpose(0, 2, 3, 1)).reshape(-1, c.shape[1])
        return self.unpooled(rows.T @ cols)

    # -- the same maps from K (checks and the oracle) ---------------------------
    def forward(self, a: np.ndarray, K: np.ndarray) -> np.ndarray:
        out = np.empty((a.shape[0], *self.out_shape), dtype=np.result_type(a, K))
        self.apply(self.patches(a.astype(out.dtype, copy=False)), self.pooled(K.astype(out.dtype, copy=False)), out)
        return out

    def adjoint(self, c: np.ndarray, K: np.ndarray) -> np.ndarray:
        """A^T c: the correlation's adjoint with the pooled kernel ("col2im")."""
        out = np.empty((c.shape[0], *self.in_shape), dtype=np.result_type(c, K))
        self.spread(c, self.pooled(K.astype(out.dtype, copy=False)), out)
        return out

    def gradient(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """d(c . A(a))/dK, summed over the batch: shape (C_out, C_in, k, k)."""
        return self.gradient_from(self.patches(a), c)


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

    def forward(self, a: np.ndarray, W: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], -1) @ W

    def adjoint(self, c: np.ndarray, W: np.ndarray) -> np.ndarray:
        return (c @ W.T).reshape(c.shape[0], *self.in_shape)

    def gradient(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
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
