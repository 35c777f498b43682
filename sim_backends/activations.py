"""Elementwise state nonlinearities of the discrete-time network, each with its energy term.

A layer steps to ``s = rho(a)`` from its pre-activation ``a = dPhi/ds``. Each
``rho`` is the exact minimiser of ``G(s) - s a`` for a convex self-energy G
(``G' = rho^(-1)``), so the fixed points of ``s = rho(dPhi/ds)`` are the
stationary points of ``E = sum G(s) - Phi`` (Hopfield 1984's continuous
network). The per-step GDU property needs only ``rho'``: BPTT carries
``dL/da = rho'(a) dL/ds`` back through a step, and a small nudge moves the
state forward by the same ``rho'(a)`` times its input.

- :class:`Logistic` (the discrete-time network's default hidden units):
  ``rho(a) = lo + (hi - lo) / (1 + exp(-gain (a - center)))``, smooth everywhere, in (lo, hi).
- :class:`SoftClip` (its outputs): the clip to [lo, hi] with the kinks rounded, smooth
  everywhere, slope 1 well inside the box.
- :class:`Linear`: ``rho(a) = a``, ``G = 1/2 s^2``.
- :class:`Box`: the hard sigmoid ``clip(a, lo, hi)``, ``G = 1/2 s^2`` inside the box.
  Its derivative jumps at the two bounds (a kink), where a nudge of size beta
  moves a unit's ``a`` across a bound and the response is no longer linear in
  beta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from aeqprop.errors import ConfigurationError


class Activation(Protocol):
    """``s = rho(a)``, elementwise. Example: ``Logistic()(np.array([0.5]))`` is ``array([0.5])``."""

    def __call__(self, a: np.ndarray) -> np.ndarray: ...

    def derivative(self, a: np.ndarray) -> np.ndarray:
        """``rho'(a)``, elementwise (the clip's: 1 strictly inside the box, 0 outside)."""
        ...

    def self_energy(self, s: np.ndarray) -> np.ndarray:
        """``G(s)``, elementwise, with ``G' = rho^(-1)`` (up to a constant)."""
        ...


@dataclass(frozen=True)
class Logistic:
    """``rho(a) = lo + (hi - lo) / (1 + exp(-gain (a - center)))``, a smooth bound to (lo, hi).

    With the defaults, Ernoult et al. 2019's ``sigm``: ``1 / (1 + exp(-4 (a - 1/2)))``.
    lo, hi: the bounds the unit approaches (dimensionless, like the state); gain: slope
    factor, 1 / (unit of a), the slope at the center being ``gain (hi - lo) / 4``
    (1 with the defaults, the slope of the hard sigmoid clip(a, 0, 1) it smooths);
    center: the a at which the unit sits midway.
    """

    lo: float = 0.0
    hi: float = 1.0
    gain: float = 4.0
    center: float = 0.5

    def __call__(self, a: np.ndarray) -> np.ndarray:
        # 1/(1 + exp(-z)) = (1 + tanh(z / 2)) / 2, without overflow at large |z|
        z = np.subtract(a, self.center)
        z *= 0.5 * self.gain
        np.tanh(z, out=z)
        z += 1.0
        z *= 0.5 * (self.hi - self.lo)
        z += self.lo
        return z

    def derivative(self, a: np.ndarray) -> np.ndarray:
        # gain (hi - lo) e^(-|z|) / (1 + e^(-|z|))^2: no cancellation where the unit is near a bound
        e = np.exp(-np.abs(self.gain * (np.asarray(a) - self.center)))
        return (self.gain * (self.hi - self.lo)) * e / (1.0 + e) ** 2

    def self_energy(self, s: np.ndarray) -> np.ndarray:
        # G(s) = center s + ((s - lo) ln(s - lo) + (hi - s) ln(hi - s)) / gain, with 0 ln 0 = 0
        s = np.asarray(s, dtype=np.float64)
        if np.any((s < self.lo) | (s > self.hi)):
            raise ConfigurationError(
                f"a logistic unit's state must lie in [{self.lo:g}, {self.hi:g}]; the state given has one outside"
            )
        ent = np.zeros_like(s)
        for p in (s - self.lo, self.hi - s):
            inside = p > 0
            ent[inside] += p[inside] * np.log(p[inside])
        return self.center * s + ent / self.gain

    def max_slope(self) -> float:
        """The largest ``rho'``, at the center."""
        return self.gain * (self.hi - self.lo) / 4.0


@dataclass(frozen=True)
class Linear:
    """``rho(a) = a``: an unbounded unit with self-energy 1/2 s^2."""

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return np.array(a)

    def derivative(self, a: np.ndarray) -> np.ndarray:
        return np.ones_like(a)

    def self_energy(self, s: np.ndarray) -> np.ndarray:
        return 0.5 * np.square(s)


@dataclass(frozen=True)
class Box:
    """``rho(a) = clip(a, lo, hi)``, the hard sigmoid; lo, hi: the unit's bounds (dimensionless)."""

    lo: float
    hi: float

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(a, self.lo), self.hi)

    def derivative(self, a: np.ndarray) -> np.ndarray:
        return ((a > self.lo) & (a < self.hi)).astype(np.result_type(a, np.float32))

    def self_energy(self, s: np.ndarray) -> np.ndarray:
        return 0.5 * np.square(s)


@dataclass(frozen=True)
class SoftClip:
    """``rho(a) = lo + (softplus(k (a - lo)) - softplus(k (a - hi))) / k``: the clip to [lo, hi] with
    its two kinks rounded, smooth everywhere, in (lo, hi).

    lo, hi: the bounds the unit approaches (dimensionless, like the state); sharpness k:
    1 / (unit of a), the kinks are rounded over about 1/k. The slope
    ``sigma(k (a - lo)) - sigma(k (a - hi))`` is within 2 % of 1 from 1/k inside either bound
    for the default k = 4 and the box [-1, 2] (so across the targets' range [0, 1]).
    Self-energy ``G(s) = s^2/2 + (Li2(e^(-k (s - lo))) + Li2(e^(-k (hi - s)))) / k^2``
    (Li2: the dilogarithm).
    """

    lo: float
    hi: float
    sharpness: float = 4.0

    def __call__(self, a: np.ndarray) -> np.ndarray:
        k = self.sharpness
        out = np.logaddexp(0.0, k * (np.asarray(a) - self.lo))
        out -= np.logaddexp(0.0, k * (np.asarray(a) - self.hi))
        out /= k
        out += self.lo
        return out

    def derivative(self, a: np.ndarray) -> np.ndarray:
        # sigma(k (a - lo)) - sigma(k (a - hi)), as tanh halves (no overflow)
        half = 0.5 * self.sharpness
        a = np.asarray(a)
        return 0.5 * (np.tanh(half * (a - self.lo)) - np.tanh(half * (a - self.hi)))

    def self_energy(self, s: np.ndarray) -> np.ndarray:
        from scipy.special import spence  # Li2(z) = spence(1 - z); only energy checks need it

        s = np.asarray(s, dtype=np.float64)
        if np.any((s <= self.lo) | (s >= self.hi)):
            raise ConfigurationError(
                f"a soft-clipped unit's state must lie in ({self.lo:g}, {self.hi:g}); the state given has one outside"
            )
        k = self.sharpness
        li2 = spence(-np.expm1(-k * (s - self.lo))) + spence(-np.expm1(-k * (self.hi - s)))
        return 0.5 * s**2 + li2 / k**2

    def max_slope(self) -> float:
        """The largest ``rho'``, midway between the bounds."""
        return float(np.tanh(0.25 * self.sharpness * (self.hi - self.lo)))


def nudged_output(
    rho: Activation, a: np.ndarray, beta: float, y: np.ndarray, tol: float = 1e-13, max_steps: int = 100
) -> np.ndarray:
    """The output's step under nudging, taken at its new value: ``argmin_o G(o) - o a + beta/2 ||o - y||^2``.

    That is ``o = rho(z)`` with ``z = a - beta (o - y)``: ``rho((a + beta y) / (1 + beta))`` for units
    with G = 1/2 s^2 (Linear, Box); for a Logistic or SoftClip unit the root of ``z + beta rho(z) = a + beta y``,
    increasing in z while ``beta > -1 / max rho'``, by Newton steps kept inside the bracket the bounds
    of rho give (bisection where a step leaves it): at most ``max_steps`` steps, until z moves by no
    more than ``tol`` (dimensionless) times ``1 + max |z|`` (2 to 4 steps from the linear guess).
    """
    if isinstance(rho, (Linear, Box)):
        out = a + beta * y
        out /= 1.0 + beta
        return rho(out)
    if not isinstance(rho, (Logistic, SoftClip)):
        raise ConfigurationError(
            f"{type(rho).__name__} output units have no nudged step; use Linear, Box, Logistic or SoftClip"
        )
    if beta * rho.max_slope() <= -1.0:
        raise ConfigurationError(
            f"beta={beta}: the outputs' nudged step has no unique solution for beta <= "
            f"{-1.0 / rho.max_slope():g}; use a larger beta"
        )
    rhs = a + beta * y
    tol = max(tol, 4.0 * float(np.finfo(np.result_type(rhs, np.float32)).eps))  # float32: its own rounding
    lo, hi = rhs - beta * rho.hi, rhs - beta * rho.lo  # z = rhs - beta rho(z), rho in (lo, hi)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    z = np.clip(rhs / (1.0 + beta * rho.max_slope()), lo, hi)
    for _ in range(max_steps):
        f = z + beta * rho(z) - rhs
        lo = np.where(f < 0, z, lo)
        hi = np.where(f > 0, z, hi)
        step = f / (1.0 + beta * rho.derivative(z))
        new = z - step
        outside = (new <= lo) | (new >= hi)
        new = np.where(outside, 0.5 * (lo + hi), new)
        done = float(np.max(np.abs(new - z))) <= tol * (1.0 + float(np.max(np.abs(z))))
        z = new
        if done:
            break
    return rho(z)
