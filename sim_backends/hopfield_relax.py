"""Relaxation of the layered Hopfield network: exact block coordinate descent, accelerated.

Layers of equal parity do not interact, so a sweep updates the odd layers, then
the even ones, each to its exact clipped minimiser given its neighbours
(ALGORITHMS.md section 4). Each parity class is then an exact function of the
other, so only the smaller class (the *watched* one) is measured: when it stops
moving, the sweep is at a fixed point.

Acceleration (heavy ball on the watched class). Near the equilibrium, once the
units at a box bound stay there, one sweep maps the watched class's error ``e``
to ``M e`` with the eigenvalues of M in ``[0, rho]`` (M is similar to
``C^T C`` for the coupling C between the classes; ``rho < 1`` while F is convex
in the state), so plain sweeps contract by ``rho``: about 0.3 at beta = 0 on
digits, 0.7 at beta = -0.5, where the output self-coupling ``1 + beta`` halves.
Given ``rho``, the heavy-ball step

    s_(k+1) = clip( s_k + alpha (s*_k - s_k) + gamma (s_k - s_(k-1)) ),
    alpha = 4 / (1 + sqrt(1 - rho))^2,  gamma = ((1 - sqrt(1 - rho)) / (1 + sqrt(1 - rho)))^2

(``s*_k`` the plain sweep's target) contracts by ``(1 - sqrt(1 - rho)) / (1 + sqrt(1 - rho))``:
0.29 instead of 0.7 at rho = 0.7. The fixed points are those of the plain
sweep, the other class stays the exact minimiser given the watched one, and the
stopping test is the plain sweep's: a relaxation ends with a plain step whose
largest move is at most ``tol``. A single-sweep call (continual EqProp's) is one
plain step of block coordinate descent; a longer one with an estimate of ``rho``
starts with ``s_(-1) = s_0`` (a first step over-relaxed by alpha). The
acceleration is dropped for the rest of a call if the moves grow twice in a row.

``rho`` is measured, not assumed: the ratio of the plain sweeps' largest moves
(the step is designed for ``margin`` times it). The free phase after a clamp
measures it in its first sweeps; the nudged phases that follow on the same
inputs take it divided by ``1 + beta`` (the output block's self-coupling) and
start accelerated. The second phase of centered nudging starts from the free
equilibrium, nearer than the first phase's (``warm_start``). Everything a call
uses comes from the current clamp, so a run resumed from a checkpoint repeats
it bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from aeqprop.errors import ConfigurationError, RelaxationError
from aeqprop.substrate import RelaxReport
from sim_backends.readout import apply_force, readout_step

try:  # the clip ufunc itself: np.clip's Python wrapper costs about 1 us a call
    from numpy._core.umath import clip as clip_ufunc  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover  (numpy < 2)
    clip_ufunc = np.clip


_largest = np.maximum.reduce


def extent(a: np.ndarray) -> float:
    """``max |a|`` by two reductions, without the temporary ``abs(a)``; NaN if ``a`` holds one."""
    high, low = float(_largest(a, axis=None)), float(np.minimum.reduce(a, axis=None))
    return high if high >= -low else -low  # both reductions carry a NaN; it fails the comparison


@dataclass(frozen=True)
class Acceleration:
    """Heavy-ball acceleration of a relaxation (all numbers dimensionless).

    enabled: accelerate (False: plain block coordinate descent, sweep for sweep).
    warm_start: a nudged phase whose beta is nearer 0 than the nudging the state last settled
        under starts from the free equilibrium on the same inputs (the second phase of centered
        nudging: half the distance). The same equilibrium; False keeps the state continuous from
        phase to phase, as a device's is (finite settling, ``settle_sweeps``, depends on it).
    probe: plain sweeps' move ratios read to estimate the contraction rho, when no estimate
        from the free phase on the same inputs exists (the largest of the last ``probe`` is taken).
    margin: factor on the estimated rho for the step's design (an overestimate slows the fastest
        modes a little, an underestimate leaves the slowest one outside the accelerated range).
    rho_min, rho_max: accelerate only for an estimate of at least rho_min (below, plain sweeps
        are already fast) and at most rho_max with the margin (above, F may not be convex in the
        state, or the estimate is a transient: the plain sweeps read on).
    """

    enabled: bool = True
    warm_start: bool = True
    probe: int = 2
    margin: float = 1.3
    rho_min: float = 0.05
    rho_max: float = 0.95

    def __post_init__(self) -> None:
        if self.probe < 1 or self.margin < 1.0 or not (0.0 <= self.rho_min < self.rho_max < 1.0):
            raise ConfigurationError(f"{self}: need probe >= 1, margin >= 1 and 0 <= rho_min < rho_max < 1")

    @classmethod
    def of(cls, value: Acceleration | Mapping[str, Any] | bool | None) -> Acceleration:
        """Settings from a substrate option: an Acceleration, a dict of its fields (a run
        config's ``acceleration = {enabled = false}``), True / None (the defaults) or False
        (plain block coordinate descent from phase to phase, sweep for sweep)."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False, warm_start=False)
        if isinstance(value, Acceleration):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ConfigurationError(
                    f"acceleration has no setting {', '.join(map(repr, unknown))}; "
                    f"valid: {', '.join(f.name for f in fields(cls))}"
                )
            return cls(**value)
        raise ConfigurationError(f"acceleration={value!r}: give true, false or a table of its settings")

    def coefficients(self, rho: float | None) -> tuple[float, float] | None:
        """(alpha, gamma) of the heavy-ball step for an estimated contraction ``rho``, or None
        (plain sweeps)."""
        if not self.enabled or rho is None or not (self.rho_min <= rho and self.margin * rho <= self.rho_max):
            return None
        root = math.sqrt(1.0 - self.margin * rho)
        return 4.0 / (1.0 + root) ** 2, ((1.0 - root) / (1.0 + root)) ** 2


PLAIN = Acceleration(enabled=False)


@dataclass
class Sweeps:
    """What a relaxation did: sweeps, the last plain-sweep move (residual) and the contraction
    it measured from its plain sweeps (None when it measured none)."""

    sweeps: int
    residual: float
    rho: float | None


#: Computes layer l's plain target (unclipped) into ``out``, from the current state.
Target = Callable[[int, np.ndarray], None]


def block_descent(
    s: list[np.ndarray],
    classes: tuple[list[int], list[int]],
    watched: int,
    bounds: dict[int, tuple[np.ndarray, np.ndarray]],
    target: Target,
    tol: float,
    max_sweeps: int,
    rho: float | None,
    settings: Acceleration,
) -> Sweeps:
    """Sweep the two parity classes (``classes[0]`` then ``classes[1]``) until the watched
    class (index ``watched``) moves by at most ``tol`` in a plain step, or ``max_sweeps``.

    ``s`` is the state ``[x, s_1, ..., s_T]``, its arrays replaced (never written in place) as
    the layers move; ``bounds[l]`` is layer l's box as arrays of the state's dtype; ``rho`` an
    estimate of the plain contraction (None: measure it). Raises nothing: the caller checks
    the residual for non-finite values.
    """
    coef = settings.coefficients(rho)
    measure = settings.enabled and coef is None
    new = {l: np.empty_like(s[l]) for c in classes for l in c}
    diff = {l: np.empty_like(s[l]) for l in classes[watched]}
    size = {l: np.empty_like(s[l]) for l in classes[watched]}
    prev: dict[int, np.ndarray] = {}  # s_(k-1) of the watched layers, while accelerating
    if coef is not None and max_sweeps > 1:  # s_(-1) = s_0: the first step is over-relaxed by alpha
        prev = {l: s[l].copy() for l in classes[watched]}
    ratios: list[float] = []
    estimate: float | None = None
    change = last = math.inf
    growth = 0
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        done = False
        for c, layers in enumerate(classes):
            if c != watched:
                for l in layers:
                    pre = new[l]
                    target(l, pre)
                    clip_ufunc(pre, *bounds[l], out=pre)
                    new[l], s[l] = s[l], pre
                continue
            change = 0.0
            for l in layers:
                pre = new[l]
                target(l, pre)
                clip_ufunc(pre, *bounds[l], out=pre)
                d = np.subtract(pre, s[l], out=diff[l])
                m = float(_largest(np.abs(d, out=size[l]), axis=None))  # NaN if d holds one
                if m > change or m != m:
                    change = m
            step = coef if prev and change > tol else None
            for l in layers:
                if step is None:  # the plain step
                    new[l], s[l] = s[l], new[l]
                    continue
                alpha, gamma = step
                d, p, now = diff[l], prev[l], s[l]
                np.subtract(now, p, out=p)
                p *= gamma
                d *= alpha
                d += now
                d += p
                clip_ufunc(d, *bounds[l], out=d)
                prev[l], s[l], diff[l] = now, d, p
            done = change <= tol
        if not math.isfinite(change):
            break
        if coef is not None and change > last:
            growth += 1
            if growth >= 2:  # the estimate does not hold here: plain sweeps from now on
                coef, measure = None, False
                prev.clear()
        else:
            growth = 0
        if measure and math.isfinite(last) and last > 0.0:
            ratios.append(change / last)
            if len(ratios) >= settings.probe:
                estimate = max(ratios[-settings.probe :])
                coef = settings.coefficients(estimate)
                measure = coef is None  # out of range (transients, or F not convex here): read on
        if coef is not None and not prev and not done:  # s_(k-1), just swapped out, starts the momentum
            for l in classes[watched]:
                prev[l], new[l] = new[l], np.empty_like(s[l])
        last = change
        if done:
            break
    return Sweeps(sweeps=sweeps, residual=change, rho=estimate)


def finish(host: Any, done: Sweeps, beta: float, tol: float) -> RelaxReport:
    """The end of a layered network's relaxation (``host``: the dense or the conv substrate):
    raises on a non-finite state; keeps what the next relaxations on the same inputs start from
    (the free phase's contraction and, once settled, its equilibrium; the nudging the state
    settled under); returns the report."""
    if done.rho is not None and beta == 0.0:
        host._rho = done.rho
    if not math.isfinite(done.residual):
        raise RelaxationError("the state became non-finite during relaxation; check the parameters")
    host._state_beta = beta
    if beta == 0.0 and done.residual <= tol:
        host._free = [a.copy() for a in host._s[1:]]
    report: RelaxReport = host._settled(done.sweeps, done.residual, tol)
    return report


class HopfieldRelaxation:
    """``_relax`` of :class:`~sim_backends.hopfield.HopfieldSubstrate` (a mixin): the layer
    targets of section 4 handed to :func:`block_descent`, and what it keeps between calls."""

    # provided by the host class
    W: list[Any]  # W[l] for l = 1..L (W[0] is None)
    b: list[Any]
    L: int
    T: int
    dtype: np.dtype
    readout: bool
    acceleration: Acceleration
    _s: list[np.ndarray]
    _beta: float
    _y: np.ndarray | None
    _rho: float | None
    _zero: bool
    _free: list[np.ndarray] | None
    _state_beta: float | None
    _classes: tuple[list[int], list[int]]
    _watched: int
    _WT: dict[int, tuple[np.ndarray, np.ndarray]]
    _boxes: dict[np.dtype, dict[int, tuple[np.ndarray, np.ndarray]]]

    if TYPE_CHECKING:

        def _input_drive(self) -> np.ndarray: ...
        def _box(self, l: int) -> tuple[float, float]: ...
        def _settled(self, sweeps: int, residual: float, tol: float) -> RelaxReport: ...

    def _relax(self, tol: float, max_sweeps: int) -> RelaxReport:
        """Settle the state by exact block coordinate descent (odd layers, then even), accelerated
        as :mod:`sim_backends.hopfield_relax` describes."""
        s, W, b, L, T = self._s, self.W, self.b, self.L, self.T
        beta, y = self._beta, self._y
        drive1 = self._input_drive()
        # the output block, (s_(L-1) W_L + b_L + beta y) / (1 + beta), as one product and one sum
        W_out, b_out = W[L], b[L]
        squared = beta != 0.0 and not self.readout
        if squared:
            assert y is not None  # nudge refuses beta != 0 without a target
            W_out, b_out = W[L] / (1.0 + beta), (b[L] + beta * y) / (1.0 + beta)
            if L == 1:
                drive1 = (drive1 + beta * y) / (1.0 + beta)
        WT = self._transposes()
        # with the readout, the top energy layer feels -beta (p - y) W_r^T, taken at its current state
        force = self.readout and beta != 0.0
        alpha = readout_step(beta, W[L]) if force else 1.0
        bounds = self._bounds()
        inner = {l: np.empty_like(s[l]) for l in range(2, T)}  # s_(l+1) W_(l+1)^T of an inner layer
        zero, self._zero = self._zero, False
        free, at = self._free, self._state_beta
        if free is not None and at is not None and beta != 0.0 and abs(beta) < abs(beta - at):
            if self.acceleration.warm_start:  # the free equilibrium is the nearer start (centered nudging)
                s[1:] = [a.copy() for a in free]

        def target(l: int, pre: np.ndarray) -> None:
            """Layer l's exact minimiser given its neighbours, before the box, into ``pre``."""
            nonlocal zero
            if l == 1:
                if zero:  # s_2 = 0: the drive alone
                    np.copyto(pre, drive1)
                    zero = False
                elif T > 1:
                    np.dot(s[2], WT[2], out=pre)
                    pre += drive1
                else:
                    np.copyto(pre, drive1)
            else:
                np.dot(s[l - 1], W_out if l == L else W[l], out=pre)
                pre += b_out if l == L else b[l]
                if l < T:
                    pre += np.dot(s[l + 1], WT[l + 1], out=inner[l])
            if force and l == T:
                assert y is not None  # nudge refuses beta != 0 without a target
                apply_force(pre, s[T], W[L], b[L], WT[L], y, beta, alpha, bounds[T])

        # the contraction measured by this clamp's free phase; the output's self-coupling 1 + beta
        # divides it (exactly with one hidden layer: a sweep maps the outputs' error e to
        # e W_L^T D W_L / (1 + beta), D the hidden units inside their box)
        rho = self._rho
        if rho is not None and squared:
            rho = rho / (1.0 + beta)
        # the readout's force is taken at the current state, not an exact block minimiser: plain sweeps
        settings = PLAIN if force else self.acceleration
        done = block_descent(s, self._classes, self._watched, bounds, target, tol, max_sweeps, rho, settings)
        return finish(self, done, beta, tol)

    def _transposes(self) -> list[Any]:
        """``W_l^T`` (contiguous) for l >= 2, kept while ``W_l`` is the same array (it is replaced on update)."""
        out: list[Any] = [None, None]  # W_l^T at index l
        for l in range(2, self.L + 1):
            w = self.W[l]
            kept = self._WT.get(l)
            if kept is None or kept[0] is not w:
                kept = self._WT[l] = (w, np.ascontiguousarray(w.T))
            out.append(kept[1])
        return out

    def _bounds(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Each energy layer's box as 0-d arrays of the compute dtype (the clip ufunc's fastest form)."""
        kept = self._boxes.get(self.dtype)
        if kept is None:
            kept = self._boxes[self.dtype] = {}
            for l in range(1, self.T + 1):
                lo, hi = self._box(l)
                kept[l] = (np.asarray(lo, self.dtype), np.asarray(hi, self.dtype))
        return kept
