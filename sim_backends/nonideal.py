"""An imperfect device: wrap any simulated substrate with read noise, write errors, drift and more.

Each effect has a magnitude (0 or None: absent) and its own seeded random
stream, so switching one effect on never changes the draws of another. With
every magnitude zero the wrapper only delegates, and training through it is
bitwise identical to training the bare substrate.

| effect               | field(s)                          | acts on                                      |
|----------------------|-----------------------------------|----------------------------------------------|
| read noise           | ``read_noise``                    | every measurement: outputs, parameters, energy_gradients, and the holding force native homeostasis measures |
| programming noise    | ``program_noise``                 | every entry ``set_parameters`` changes (not a release) |
| write response       | ``write_nonlinearity``, ``write_asymmetry`` | the size of each change, by sign and value |
| conductance levels   | ``levels``                        | written values snap to the nearest level     |
| drift                | ``drift``, ``drift_decay``        | stored values, once per step (each clamp)    |
| device variability   | ``variability``                   | write gain (programming) and eps (floating), per entry |
| stuck devices        | ``stuck``, ``stuck_at``           | a fixed set of entries never changes         |
| finite settling      | ``settle_sweeps``                 | relaxation stops after this many sweeps      |

What each operation is charged (one line per operation of the contract):

- ``parameters``, ``outputs``, ``energy_gradients``: read noise, once per call.
- ``homeostasis`` (native): the device measures the holding force ``eps dE/dtheta``
  (theta units) and sets the knob from it, so the knob carries read noise of std
  ``read_noise`` per entry, as a reading of that force would.
- ``set_parameters``: a programming write: programming noise, write response,
  levels, stuck entries.
- ``release``: the parameters move under their own physics, not a programming
  write: write response, levels, stuck entries and per-entry eps, but no
  programming noise. A feedback loop's probes are releases.
- ``set_knobs``, ``knobs``, ``clamp``, ``nudge``, ``relax``: exact (knob sources and
  inputs are taken as ideal); ``clamp`` lets one step of drift pass first.

The write response acts on every change of the stored parameters, whether the
controller programs it (``set_parameters``, EqProp) or the parameters float to
it (``release``, Aeqprop): it is the same device either way. Variability scales
the write gain of a programmed change and the compliance eps of a floating one
by the same fixed factor per entry. The emulation of per-entry eps is exact for
releases of at most one parameter update (the default of the Aeqprop protocol)
and first-order for longer ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aeqprop.errors import ConfigurationError
from aeqprop.substrate import (
    AeqpropSubstrate,
    EqPropSubstrate,
    HomeostasisSubstrate,
    RelaxReport,
    Substrate,
)
from sim_backends.hopfield_relax import Acceleration

STREAMS = ("read", "program", "drift", "variability", "stuck")


@runtime_checkable
class SweepBudgeted(Protocol):
    """A substrate whose relaxation stops after a budget of sweeps. Example: ``sub.max_sweeps == 100``."""

    max_sweeps: int


@runtime_checkable
class FloatingTarget(Protocol):
    """A substrate that says where an update would move its floating parameters before the bounds
    clip them (``sim_backends.floating.FloatingParameters``)."""

    def parameters(self) -> dict[str, np.ndarray]: ...
    def knobs(self) -> dict[str, np.ndarray]: ...
    def floating_target(self) -> tuple[dict[str, np.ndarray], RelaxReport | None]: ...


class NonidealConfig(BaseModel):
    """Magnitudes of the device's imperfections; all zero is the ideal device.

    Example: ``NonidealConfig(read_noise=0.01, levels=256, drift=1e-3, seed=3)``.
    Noise magnitudes are standard deviations in the units of the quantity
    (parameters, outputs or dE/dtheta).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    read_noise: float = Field(0.0, ge=0, description="std of Gaussian noise on every read")
    program_noise: float = Field(0.0, ge=0, description="std of Gaussian noise on each entry a write changes")
    write_nonlinearity: float = Field(
        0.0, ge=0, lt=1, description="step gain 1 -/+ n*(theta-mid)/half-range for up/down steps (soft bounds)"
    )
    write_asymmetry: float = Field(0.0, gt=-1, lt=1, description="up steps scaled by 1+a, down steps by 1-a")
    levels: int | None = Field(None, ge=2, description="conductance levels across the bounds; None: continuous")
    drift: float = Field(0.0, ge=0, description="std of the random walk of each entry per step")
    drift_decay: float = Field(0.0, ge=0, lt=1, description="fraction of each value lost toward zero per step")
    variability: float = Field(0.0, ge=0, description="log-std of each entry's fixed write-gain and eps factor")
    stuck: float = Field(0.0, ge=0, le=1, description="fraction of entries stuck")
    stuck_at: Literal["initial", "bounds"] = "bounds"
    settle_sweeps: int | None = Field(None, ge=1, description="relaxation sweep budget; None: the substrate's own")

    @property
    def ideal(self) -> bool:
        return self == NonidealConfig(seed=self.seed, stuck_at=self.stuck_at)


def make_config(config: NonidealConfig | Mapping[str, Any] | None = None, **fields: Any) -> NonidealConfig:
    """A NonidealConfig from a model, a dict (run config) or keywords; errors in one line."""
    if isinstance(config, NonidealConfig):
        return config.model_copy(update=fields) if fields else config
    try:
        return NonidealConfig.model_validate({**dict(config or {}), **fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "nonideal"
        raise ConfigurationError(f"nonideal.{where}: {err['msg']}") from None


class NonidealSubstrate:
    """A simulated substrate behind an imperfect device model.

    Example: ``NonidealSubstrate(HopfieldSubstrate((64, 64, 10)), read_noise=0.01, levels=256)``.
    Exposes the wrapped substrate's ``info`` and methods; the oracle and any
    other attribute (checks, plots) pass through to the true model unaltered.
    """

    def __init__(
        self, substrate: Substrate, config: NonidealConfig | Mapping[str, Any] | None = None, **fields: Any
    ) -> None:
        self.inner = substrate
        # the wrapped substrate's capabilities, narrowed once: each is None where it lacks that Protocol
        self._eqprop = substrate if isinstance(substrate, EqPropSubstrate) else None
        self._aeqprop = substrate if isinstance(substrate, AeqpropSubstrate) else None
        self._homeostasis = substrate if isinstance(substrate, HomeostasisSubstrate) else None
        self.config = cfg = make_config(config, **fields)
        self.info = substrate.info
        seeds = np.random.SeedSequence(cfg.seed).spawn(len(STREAMS))
        self.rng = {name: np.random.default_rng(s) for name, s in zip(STREAMS, seeds)}
        shapes, bounds = self.info.parameter_shapes, self.info.parameter_bounds
        self.factor: dict[str, np.ndarray] | None = None
        if cfg.variability > 0:
            g = self.rng["variability"]
            self.factor = {n: np.exp(cfg.variability * g.standard_normal(shapes[n])) for n in shapes}
        # per tensor, the mask of stuck entries and the values they are stuck at (both None: none stuck)
        self.stuck_mask: dict[str, np.ndarray] | None = None
        self.stuck_value: dict[str, np.ndarray] | None = None
        if cfg.stuck > 0:
            g, theta = self.rng["stuck"], substrate.parameters()
            self.stuck_mask = {n: g.random(shapes[n]) < cfg.stuck for n in shapes}
            if cfg.stuck_at == "initial":
                self.stuck_value = {n: theta[n].copy() for n in shapes}
            else:
                self.stuck_value = {n: np.where(g.random(shapes[n]) < 0.5, *bounds[n]) for n in shapes}
        if cfg.settle_sweeps is not None:
            if not isinstance(substrate, SweepBudgeted):
                raise ConfigurationError(
                    f"settle_sweeps needs a substrate with a sweep budget (max_sweeps); {type(substrate).__name__} has none"
                )
            substrate.max_sweeps = min(int(substrate.max_sweeps), cfg.settle_sweeps)
            if hasattr(substrate, "acceleration"):  # a device settles by its own physics: plain sweeps, from
                # where the state is, so a budget of sweeps means the same on every substrate
                substrate.acceleration = Acceleration.of(False)
        self._writes = self.factor is not None or any(
            (cfg.program_noise, cfg.write_nonlinearity, cfg.write_asymmetry, cfg.levels, cfg.stuck)
        )
        if cfg.levels or cfg.stuck:  # the device starts on its grid, with its stuck entries
            theta = substrate.parameters()
            self._programmable().set_parameters({n: self._snap(n, theta[n]) for n in theta})

    def _programmable(self) -> EqPropSubstrate:
        """The wrapped substrate as capability "eqprop" (it programs theta)."""
        if self._eqprop is None:
            raise AttributeError(f"the wrapped {type(self.inner).__name__} has no set_parameters / energy_gradients")
        return self._eqprop

    def _knobbed(self) -> AeqpropSubstrate:
        """The wrapped substrate as capability "aeqprop" (knobs and release)."""
        if self._aeqprop is None:
            raise AttributeError(f"the wrapped {type(self.inner).__name__} has no knobs / set_knobs / release")
        return self._aeqprop

    @property
    def max_sweeps(self) -> int:
        """The wrapped substrate's sweep budget: a protocol that sets it (continual EqProp's
        one-sweep phases) sets it on the device, not on this wrapper."""
        if not isinstance(self.inner, SweepBudgeted):
            raise AttributeError("max_sweeps")
        return self.inner.max_sweeps

    @max_sweeps.setter
    def max_sweeps(self, value: int) -> None:
        if not isinstance(self.inner, SweepBudgeted):
            raise AttributeError(f"the wrapped {type(self.inner).__name__} has no sweep budget (max_sweeps)")
        self.inner.max_sweeps = value

    def __getattr__(self, name: str) -> Any:
        """Anything else (the oracle, checks, plots) passes through to the wrapped substrate."""
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    # -- the device model -----------------------------------------------------
    def _noisy(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self.config.read_noise
        if s == 0:
            return values
        g = self.rng["read"]
        return {n: v + s * g.standard_normal(v.shape) for n, v in values.items()}

    def _snap(self, name: str, value: np.ndarray) -> np.ndarray:
        """Clip to the bounds, round to the nearest level, restore stuck entries."""
        lo, hi = self.info.parameter_bounds[name]
        value = np.clip(value, lo, hi)
        if self.config.levels:
            step = (hi - lo) / (self.config.levels - 1)
            value = lo + np.round((value - lo) / step) * step
        if self.stuck_mask is not None and self.stuck_value is not None:
            value = np.where(self.stuck_mask[name], self.stuck_value[name], value)
        return value

    def _response(self, name: str, before: np.ndarray, delta: np.ndarray, gain: bool, noise: bool = True) -> np.ndarray:
        """The change the device makes when asked for ``delta`` from ``before``."""
        cfg = self.config
        if gain and self.factor is not None:
            delta = delta * self.factor[name]
        if cfg.write_nonlinearity or cfg.write_asymmetry:
            lo, hi = self.info.parameter_bounds[name]
            pos = (before - 0.5 * (lo + hi)) / (0.5 * (hi - lo))  # -1 at the low bound, +1 at the high
            n, a = cfg.write_nonlinearity, cfg.write_asymmetry
            delta = np.where(delta > 0, delta * (1 + a) * (1 - n * pos), delta * (1 - a) * (1 + n * pos))
        if cfg.program_noise and noise:
            error = cfg.program_noise * self.rng["program"].standard_normal(delta.shape)
            delta = delta + np.where(delta != 0, error, 0.0)
        return delta

    def _write(
        self, before: Mapping[str, np.ndarray], wanted: Mapping[str, np.ndarray], gain: bool, noise: bool = True
    ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for n, w in wanted.items():
            if n not in before:
                out[n] = w  # the wrapped substrate names the error
                continue
            w = np.asarray(w, dtype=np.float64)
            if w.shape != before[n].shape or not np.all(np.isfinite(w)):
                out[n] = w
                continue
            out[n] = self._snap(n, before[n] + self._response(n, before[n], w - before[n], gain, noise))
        return out

    def _drift(self) -> None:
        cfg = self.config
        if cfg.drift == 0 and cfg.drift_decay == 0:
            return
        theta, g = self.inner.parameters(), self.rng["drift"]
        new: dict[str, np.ndarray] = {}
        for n, v in theta.items():
            v = v * (1.0 - cfg.drift_decay) + cfg.drift * g.standard_normal(v.shape)
            lo, hi = self.info.parameter_bounds[n]
            v = np.clip(v, lo, hi)
            if self.stuck_mask is not None and self.stuck_value is not None:
                v = np.where(self.stuck_mask[n], self.stuck_value[n], v)
            new[n] = v
        self._programmable().set_parameters(new)

    # -- the contract ---------------------------------------------------------
    def clamp(self, x: np.ndarray) -> None:
        """Set the inputs; one step of time passes, so the parameters drift first."""
        self._drift()
        self.inner.clamp(x)

    def nudge(self, beta: float, y: np.ndarray | None = None) -> None:
        self.inner.nudge(beta, y)

    def relax(self) -> RelaxReport:
        return self.inner.relax()

    def outputs(self) -> np.ndarray:
        return self._noisy({"o": self.inner.outputs()})["o"]

    def parameters(self) -> dict[str, np.ndarray]:
        return self._noisy(self.inner.parameters())

    def energy_gradients(self) -> dict[str, np.ndarray]:
        return self._noisy(self._programmable().energy_gradients())

    def set_parameters(self, theta: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Program theta through the device's write response, noise, levels and stuck entries;
        the wrapped substrate's count of clipped entries per tensor."""
        if not self._writes:
            return self._programmable().set_parameters(theta)
        return self._programmable().set_parameters(self._write(self.inner.parameters(), theta, gain=True))

    def knobs(self) -> dict[str, np.ndarray]:
        return self._knobbed().knobs()

    def set_knobs(self, u: dict[str, np.ndarray]) -> None:
        self._knobbed().set_knobs(u)

    def homeostasis(self) -> None:
        """Native homeostasis holds theta against each entry's own compliance, from a noisy
        measurement of the holding force: knob ``u = theta + eps dE/dtheta + read noise``."""
        if self._homeostasis is None:
            raise AttributeError(f"the wrapped {type(self.inner).__name__} has no homeostasis")
        inner = self._homeostasis
        inner.homeostasis()
        if self.factor is not None or self.config.read_noise:
            theta, u = inner.parameters(), inner.knobs()
            force = {n: u[n] - theta[n] for n in u}
            if self.factor is not None:
                force = {n: self.factor[n] * force[n] for n in u}
            force = self._noisy(force)
            inner.set_knobs({n: theta[n] + force[n] for n in u})

    def release(self, duration: float | None = None) -> RelaxReport:
        """Let theta float; the move goes through the device (eps per entry, write effects)."""
        inner = self._knobbed()
        if not self._writes:
            return inner.release(duration)
        if self.factor is not None and duration is not None and isinstance(inner, FloatingTarget):
            return self._release_per_entry(inner, float(duration))
        before = inner.parameters()
        report = inner.release(duration)
        after = inner.parameters()
        if self.factor is not None:
            u = inner.knobs()
            d = 1.0 if duration is None or duration >= 1 else float(duration)
            for n in after:
                if d == 0:
                    continue
                target = before[n] + (after[n] - before[n]) / d  # u - eps dE/dtheta
                after[n] = before[n] + d * (u[n] - self.factor[n] * (u[n] - target) - before[n])
        self._programmable().set_parameters(self._write(before, after, gain=False, noise=False))
        return report

    def _release_per_entry(self, inner: FloatingTarget, duration: float) -> RelaxReport:
        """A release of ``duration`` updates under each entry's own compliance ``f eps``: each whole
        update moves theta to ``u - f eps dE/dtheta(s)`` (a fraction, that part of the way), then
        through the device's write effects and bounds. Taken from the wrapped substrate's unclipped
        target: inferred from its clipped move instead, an entry the knob pulled past a bound read as
        one pushed back, and f > 1 sent it the wrong way."""
        if not (duration >= 0 and np.isfinite(duration)):
            raise ConfigurationError(f"release duration {duration}: must be a finite number >= 0")
        factor = self.factor
        assert factor is not None  # the caller checked
        t0 = time.perf_counter()
        report = RelaxReport(sweeps=0, residual=0.0, converged=True)
        remaining = duration
        while remaining > 1e-12:
            frac = min(1.0, remaining)
            before = inner.parameters()
            target, settled = inner.floating_target()
            if settled is not None:
                report = report + settled
            u = inner.knobs()
            wanted = {n: before[n] + frac * (u[n] - factor[n] * (u[n] - target[n]) - before[n]) for n in before}
            self._programmable().set_parameters(self._write(before, wanted, gain=False, noise=False))
            remaining -= frac
        report.seconds = time.perf_counter() - t0
        return report

    def close(self) -> None:
        self.inner.close()

    # -- checkpoints ----------------------------------------------------------
    def device_state(self) -> dict[str, Any]:
        """The true device state, read without side effects (no read noise, no draw from any stream):
        ``{"parameters": theta, "knobs": u or None, "random": bit-generator state per stream}``.

        A checkpoint saves this, so checkpointing never changes a run's result.
        """
        knobs = self._knobbed().knobs() if "aeqprop" in self.info.capabilities else None
        return {
            "parameters": {n: np.array(v, copy=True) for n, v in self.inner.parameters().items()},
            "knobs": None if knobs is None else {n: np.array(v, copy=True) for n, v in knobs.items()},
            "random": {name: g.bit_generator.state for name, g in self.rng.items()},
        }

    def restore_device_state(self, state: Mapping[str, Any]) -> None:
        """Put back a :meth:`device_state` exactly: values go straight to the device (no write response,
        noise or levels applied again); the streams are restored when ``state`` holds them."""
        self._programmable().set_parameters(state["parameters"])
        if state.get("knobs") is not None:
            self._knobbed().set_knobs(state["knobs"])
        for name, value in (state.get("random") or {}).items():
            self.rng[name].bit_generator.state = value
