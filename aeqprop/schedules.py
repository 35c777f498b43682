"""Schedules of beta and of the learning rate, applied by the trainer to any protocol.

A schedule is a factor of the protocol's own value, a function of the global
step g out of T steps in the run (so a resumed run gets the same values):

| kind        | factor at step g of T                                   | written        |
|-------------|---------------------------------------------------------|----------------|
| constant    | 1                                                       | ``constant``   |
| step        | gamma ** (number of milestones m with g >= m T)         | ``step:0.5,0.75:0.1`` |
| cosine      | end + (1 - end) (1 + cos(pi g / T)) / 2                 | ``cosine:0.1`` |
| exponential | end ** (g / T)                                          | ``exponential:0.01`` |

:class:`ScheduleHook` is the trainer's ``before_step(epoch, step_in_epoch,
global_step, total_steps)``. It sets ``protocol.beta`` to its initial value
times the beta factor, and scales the learning rate:

- a protocol with an ``lr`` (EqProp, continual, coupled, vector-field, oracle
  SGD, user protocols) gets ``lr`` times the factor (per tensor if a dict);
- Aeqprop has no lr: its step is ``eps (beta2 - beta1)`` times the release
  fraction. The hook scales the *release duration* (``protocol.release``),
  which is how a physical device is slowed down without touching its
  compliance; in simulation a release of f <= 1 moves the parameters the
  fraction f of the way, so the learning rate scales exactly by the factor
  when the initial release is <= 1. A release to joint equilibrium
  ("equilibrium") cannot be shortened and is refused with an lr schedule.

An ``eps`` schedule (simulation) scales the substrate's compliance ``eps``
per tensor instead: the Aeqprop learning rate without touching the release.

Aeqprop's step ``eps (beta2 - beta1)`` scales with beta, so a beta schedule
alone also shrinks its learning rate. ``hold_step=True`` divides the compliance
(simulation) by beta's factor, so the step follows the lr and eps schedules
only: a smaller nudge (a better estimate of the gradient) at the same rate.
Example: ``ScheduleHook(p, beta="step:0.5:0.5", lr="cosine", substrate=s,
hold_step=True)`` halves b at mid-run and doubles eps there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from aeqprop.errors import ConfigurationError

DEFAULT_END = {"constant": 1.0, "step": 1.0, "cosine": 0.0, "exponential": 0.01}


class Schedule(BaseModel):
    """A factor schedule. Example: ``Schedule(kind="cosine", end=0.1)``; ``Schedule.parse("step:0.5:0.1")``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["constant", "step", "cosine", "exponential"] = "constant"
    end: float | None = None  # final factor (cosine >= 0, exponential > 0)
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run where a step schedule multiplies by gamma
    gamma: float = 0.1  # factor per milestone (> 0)

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < m < 1.0 for m in v) or list(v) != sorted(v):
            raise ValueError("milestones must be increasing fractions of the run, strictly between 0 and 1")
        return v

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError("gamma must be a finite number > 0")
        return v

    @model_validator(mode="after")
    def _end(self) -> Schedule:
        end = self.final
        if not math.isfinite(end) or end < 0 or (self.kind == "exponential" and end <= 0):
            raise ValueError(f"end={end}: the final factor must be >= 0 (> 0 for exponential)")
        return self

    @property
    def final(self) -> float:
        return DEFAULT_END[self.kind] if self.end is None else float(self.end)

    def factor(self, step: int, total: int) -> float:
        """The factor at global step ``step`` (0-based) of a run of ``total`` steps."""
        t = min(max(step / max(total, 1), 0.0), 1.0)
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** sum(step >= m * total for m in self.milestones)
        if self.kind == "cosine":
            return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.final**t

    def largest(self) -> float:
        """The largest factor over the run (1 at its start; a step schedule's gamma > 1 compounds)."""
        if self.kind == "step":
            return max(1.0, self.gamma ** len(self.milestones))
        return max(1.0, self.final) if self.kind in ("cosine", "exponential") else 1.0

    def positive(self) -> bool:
        """True if the factor never reaches 0 (a beta schedule must stay > 0)."""
        return self.kind != "cosine" or self.final > 0

    @classmethod
    def parse(cls, text: str | Mapping | Schedule, what: str = "schedule") -> Schedule:
        """From ``kind[:end]`` (cosine, exponential), ``step[:m1,m2[:gamma]]``, a dict or a Schedule.

        Raises ConfigurationError with one line naming ``what`` and the problem.
        """
        if isinstance(text, Schedule):
            return text
        try:
            if isinstance(text, Mapping):
                return cls(**text)
            kind, *rest = str(text).strip().split(":")
            fields: dict = {"kind": kind}
            if kind == "step":
                if rest and rest[0]:
                    fields["milestones"] = tuple(float(m) for m in rest[0].split(","))
                if len(rest) > 1:
                    fields["gamma"] = float(rest[1])
                extra = rest[2:]
            else:
                if rest and rest[0]:
                    fields["end"] = float(rest[0])
                extra = rest[1:]
            if extra:
                raise ValueError(f"unexpected {':'.join(extra)!r}")
            return cls(**fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise ConfigurationError(f"{what} {text!r}: {loc + ': ' if loc else ''}{msg}") from None
        except ValueError as exc:
            raise ConfigurationError(
                f"{what} {text!r}: {exc}; write constant, step[:0.5,0.75[:0.1]], cosine[:END] or exponential[:END]"
            ) from None


#: A schedule as the config gives it: a table (text or mapping), a parsed Schedule, or none.
ScheduleSpec = str | Mapping | Schedule | None


class ScheduleHook:
    """``before_step`` for the trainer: applies a beta and an lr schedule to a protocol.

    Example: ``Trainer(..., before_step=ScheduleHook(protocol, lr="cosine", beta="step:0.5:0.5"))``.
    The protocol's values at construction are the initial ones (factor 1).
    """

    def __init__(
        self,
        protocol: Any,
        lr: str | Mapping | Schedule | None = None,
        beta: str | Mapping | Schedule | None = None,
        substrate: Any = None,
        eps: str | Mapping | Schedule | None = None,
        hold_step: bool = False,
    ) -> None:
        self.protocol, self.substrate = protocol, substrate
        self.eps = None if eps is None else Schedule.parse(eps, "eps schedule")
        name = getattr(protocol, "name", type(protocol).__name__)
        self.beta = None if beta is None else Schedule.parse(beta, "beta schedule")
        self.hold_step = bool(hold_step)
        if self.hold_step:
            if self.beta is None:
                raise ConfigurationError("hold_step holds Aeqprop's step under a beta schedule: give a beta schedule")
            if not hasattr(protocol, "release"):
                raise ConfigurationError(
                    f"hold_step: protocol {name!r} does not step by eps times beta (only Aeqprop's step scales with beta)"
                )
        if self.eps is not None or self.hold_step:
            if not isinstance(getattr(substrate, "eps", None), Mapping):
                what = "an eps schedule" if self.eps is not None else "hold_step"
                raise ConfigurationError(f"{what} needs a simulated substrate with a compliance eps per tensor")
            self.eps0 = {n: float(v) for n, v in substrate.eps.items()}
        self.lr = None if lr is None else Schedule.parse(lr, "lr schedule")
        if self.beta is not None:
            if not isinstance(getattr(protocol, "beta", None), (int, float)):
                raise ConfigurationError(f"protocol {name!r} has no beta to schedule")
            if not self.beta.positive():
                raise ConfigurationError("a beta schedule must stay > 0: give cosine:END with END > 0")
            self.beta0 = float(protocol.beta)
            self._check_largest(protocol, name)
        self.target = None
        if self.lr is not None:
            if getattr(protocol, "lr", None) is not None:
                self.target, self.base = "lr", protocol.lr
            elif hasattr(protocol, "release"):
                if protocol.release is None:
                    raise ConfigurationError(
                        f"protocol {name!r} releases to joint equilibrium, which an lr schedule cannot shorten; "
                        "give a release duration (e.g. --release 1.0)"
                    )
                self.target, self.base = "release", float(protocol.release)
            else:
                raise ConfigurationError(f"protocol {name!r} has neither lr nor release to schedule")

    def _check_largest(self, protocol: Any, name: str) -> None:
        """Refuse, before the run, a beta schedule that grows a nudge to where the protocol's own
        check would stop the run midway (beta <= -1 with the squared cost)."""
        from aeqprop.checks import check_nudging

        assert self.beta is not None
        big = self.beta.largest()
        if big == 1.0 or not callable(getattr(protocol, "betas", None)):
            return  # never above the start, or a protocol that nudges with beta >= 0 only
        if getattr(protocol, "variant", None) == "random-sign":  # betas() draws its sign: not called here
            lo, hi = -self.beta0, self.beta0
        else:
            lo, hi = protocol.betas()
        check_nudging((lo * big, hi * big), f"protocol {name!r} under the beta schedule (x{big:g} at most)")

    def values(self, step: int, total: int) -> dict[str, object]:
        """What the protocol's beta and lr (or release) are set to at a step."""
        out: dict[str, object] = {}
        if self.beta is not None:
            out["beta"] = self.beta0 * self.beta.factor(step, total)
        if self.target is not None and self.lr is not None:  # a target is set only with an lr schedule
            f = self.lr.factor(step, total)
            if self.target == "release":
                out["release"] = self.base * max(f, 1e-12)  # a release must last > 0
            elif isinstance(self.base, Mapping):
                out["lr"] = {k: float(v) * f for k, v in self.base.items()}
            else:
                out["lr"] = float(self.base) * f
        return out

    def __call__(self, epoch: int, step_in_epoch: int, global_step: int, total_steps: int) -> None:
        for attr, value in self.values(global_step, total_steps).items():
            setattr(self.protocol, attr, value)
        if self.eps is not None or self.hold_step:
            f = 1.0 if self.eps is None else self.eps.factor(global_step, total_steps)
            if self.hold_step and self.beta is not None:
                f /= self.beta.factor(global_step, total_steps)
            self.substrate.eps.update({n: v * f for n, v in self.eps0.items()})


def hook(
    protocol: Any,
    substrate: Any = None,
    beta: ScheduleSpec = None,
    lr: ScheduleSpec = None,
    eps: ScheduleSpec = None,
    hold_step: bool = False,
) -> ScheduleHook:
    """The trainer's ``before_step`` for schedules given as tables (run config) or strings."""
    return ScheduleHook(protocol, lr=lr, beta=beta, substrate=substrate, eps=eps, hold_step=hold_step)
