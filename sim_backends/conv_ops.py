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
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Conv:
    """Valid correlation (kernel k, C_in -> C_out channels), then p x p average pooling."""

    def __init__(self, in_shape: tuple[int, int, int], channels: int, kernel: int, pool: int):
        c, h, w = in_shape
        self.in_shape, self.k, self.p = tuple(in_shape), int(kernel), int(pool)
        ho, wo = h - self.k + 1, w - self.k + 1
        self.conv_shape = (int(channels), ho, wo)
        self.out_shape = (int(channels), ho // self.p, wo // self.p)
        self.weight_shape = (int(channels), c, self.k, self.k)
        self.valid = ho >= 1 and wo >= 1 and ho % self.p == 0 and wo % self.p == 0

    def fan(self) -> tuple[int, int]:
        c_out, c_in, k, _ = self.weight_shape
        return c_in * k * k, c_out * k * k // (self.p * self.p)

    def _patches(self, a: np.ndarray) -> np.ndarray:
        """(B, Ho, Wo, C_in k k): every k x k window of ``a`` (B, C_in, H, W), as a matrix row."""
        win = sliding_window_view(a, (self.k, self.k), axis=(2, 3))  # (B, C, Ho, Wo, k, k)
        return win.transpose(0, 2, 3, 1, 4, 5).reshape(a.shape[0], *self.conv_shape[1:], -1)

    def _pool(self, z: np.ndarray) -> np.ndarray:
        if self.p == 1:
            return z
        b, c, h, w = z.shape
        return z.reshape(b, c, h // self.p, self.p, w // self.p, self.p).mean(axis=(3, 5))

    def _unpool(self, g: np.ndarray) -> np.ndarray:
        """The adjoint of the average pooling: each value spread over its block, divided by p^2."""
        if self.p == 1:
            return g
        return np.repeat(np.repeat(g, self.p, axis=2), self.p, axis=3) * (1.0 / (self.p * self.p))

    def forward(self, a: np.ndarray, K: np.ndarray) -> np.ndarray:
        z = self._patches(a) @ K.reshape(K.shape[0], -1).T  # (B, Ho, Wo, C_out)
        return self._pool(z.transpose(0, 3, 1, 2))

    def adjoint(self, c: np.ndarray, K: np.ndarray) -> np.ndarray:
        """A^T c: the unpooled c spread back through K ("col2im": one product, then k^2 shifted adds)."""
        g = self._unpool(c)  # (B, C_out, Ho, Wo)
        b, (c_out, c_in, k, _) = g.shape[0], K.shape
        ho, wo = self.conv_shape[1:]
        cols = (g.transpose(0, 2, 3, 1).reshape(-1, c_out) @ K.reshape(c_out, -1)).reshape(b, ho, wo, c_in, k, k)
        out = np.zeros((b, *self.in_shape[1:], c_in), dtype=cols.dtype)
        for u in range(k):
            for v in range(k):
                out[:, u : u + ho, v : v + wo, :] += cols[:, :, :, :, u, v]
        return out.transpose(0, 3, 1, 2)

    def gradient(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """d(c . A(a))/dK, summed over the batch: shape (C_out, C_in, k, k)."""
        g = self._unpool(c)  # (B, C_out, Ho, Wo)
        rows = self._patches(a).reshape(-1, self.weight_shape[1] * self.k * self.k)
        cols = g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1])
        return (cols.T @ rows).reshape(self.weight_shape)


class Dense:
    """A matrix on the flattened layer below."""

    def __init__(self, in_shape: tuple[int, ...], n_out: int):
        self.in_shape = tuple(in_shape)
        n_in = int(np.prod(in_shape))
        self.out_shape = (int(n_out),)
        self.weight_shape = (n_in, int(n_out))
        self.valid = True

    def fan(self) -> tuple[int, int]:
        return self.weight_shape

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
