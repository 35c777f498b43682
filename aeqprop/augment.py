"""Training-time augmentation of image minibatches (flattened rows of a (C, H, W) image).

``flip``: each image mirrored left-right with probability 1/2 (Fashion-MNIST's and CIFAR's
classes do not change under it). The draws come from the generator passed in, so a run that
saves that generator's state resumes to the same bits.
"""

from __future__ import annotations

import numpy as np

from aeqprop.errors import ConfigurationError

KINDS = ("none", "flip")


def check(kind: str, shape: tuple[int, ...] | None) -> None:
    """One line for an augmentation the data cannot take, before any step."""
    if kind not in KINDS:
        raise ConfigurationError(f"augment = {kind!r}: must be one of {', '.join(KINDS)}")
    if kind != "none" and (shape is None or len(shape) != 3):
        raise ConfigurationError(f"augment = {kind!r} needs image data (C, H, W); this dataset has no image shape")


def generator(seed: int) -> np.random.Generator:
    """The flips' own generator for a run of ``seed`` (apart from the one that shuffles the data)."""
    return np.random.default_rng([seed, 1])


def flip_half(x: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A copy of the rows ``x`` (B, C H W) with each image mirrored left-right with probability 1/2."""
    c, h, w = shape
    mirror = rng.random(len(x)) < 0.5
    out = np.array(x, copy=True)
    if mirror.any():
        img = out.reshape(len(x), c, h, w)
        img[mirror] = img[mirror][..., ::-1]
    return out


def apply(kind: str, x: np.ndarray, shape: tuple[int, ...] | None, rng: np.random.Generator) -> np.ndarray:
    """The minibatch ``x`` as augmentation ``kind`` makes it (``x`` itself for "none")."""
    if kind == "none":
        return x
    check(kind, shape)
    assert shape is not None
    return flip_half(x, shape, rng)
