"""A sweep file (TOML): a base run, axes of overrides and seeds, expanded into runs.

Example (``examples/sweep_learning_rules.toml`` has a full one)::

    name = "eps and beta"
    base = "hopfield_aeqprop.toml"     # a run config, relative to this file (optional)
    runs = "runs/eps"                  # runs folder, as in a run config [default: the base's]
    seeds = [0, 1, 2]
    [config]                           # fields set on the base run (dotted keys or tables)
    schedule.epochs = 10
    [grid]                             # every combination of these values
    "substrate.options.eps" = [0.05, 0.1]
    [[points]]                         # a list of override tables, each one point
    label = "centered"
    "protocol.options.variant" = "centered"
    [random]                           # random draws, reproducible from their seed
    count = 4
    seed = 0
    "protocol.options.beta" = { log_uniform = [0.1, 1.0] }
    [seed_offsets]                     # fields that follow the run's seed: seed + offset
    "nonideal.seed" = 1000

The points are the product of ``points`` (one empty point if none), ``grid``
and ``random`` draws; each point runs once per seed, the seed being the run's
``seed``. A grid value that is a table may name itself with ``label`` (taken out
of the value), e.g. ``protocol = [{ label = "EqProp", name = "eqprop" }, ...]``;
the point's name shows the label instead of the table. ``seed_offsets`` sets
each field it names to the run's seed plus its offset (e.g. a device's random
streams, per seed yet apart from the run's own). Every run config is validated
when the sweep is expanded, before any run starts: a bad file raises one
ConfigurationError.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aeqprop.config import read_toml, set_field, validate
from aeqprop.errors import ConfigurationError


class Distribution(BaseModel):
    """One random axis: exactly one of ``uniform = [low, high]``, ``log_uniform = [low, high]``
    (both > 0), ``integers = [low, high]`` (high included) or ``choice = [values...]``."""

    model_config = ConfigDict(extra="forbid")
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    integers: tuple[int, int] | None = None
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in ("uniform", "log_uniform", "integers", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, log_uniform, integers, choice")
        if self.log_uniform is not None and min(self.log_uniform) <= 0:
            raise ValueError("log_uniform bounds must be > 0")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self

    def draw(self, rng: np.random.Generator) -> Any:
        if self.uniform is not None:
            return float(rng.uniform(*self.uniform))
        if self.log_uniform is not None:
            low, high = np.log(self.log_uniform)
            return float(np.exp(rng.uniform(low, high)))
        if self.integers is not None:
            return int(rng.integers(self.integers[0], self.integers[1] + 1))
        assert self.choice is not None  # the model's check: exactly one distribution is given
        return self.choice[int(rng.integers(len(self.choice)))]


class RandomAxes(BaseModel):
    """``count`` draws of every axis given (dotted key -> Distribution), from ``seed``."""

    model_config = ConfigDict(extra="allow")
    count: int = Field(1, ge=1)
    seed: int = 0

    def axes(self) -> dict[str, Distribution]:
        out = {}
        for key, value in flat(self.model_extra or {}, leaf=_is_distribution).items():
            try:
                out[key] = Distribution.model_validate(value)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ConfigurationError(f"random.{key}: {msg}, e.g. {{ uniform = [0.1, 1.0] }}") from None
        return out


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    base: str | None = None
    runs: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)
    random: RandomAxes | None = None
    seed_offsets: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One run of a sweep: point ``point`` (its ``label`` and ``overrides``) with ``seed``;
    ``config`` is the validated run config as a dict."""

    point: int
    label: str
    overrides: dict[str, Any]
    seed: int
    config: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    name: str
    spec: dict[str, Any]  # the sweep file as read, with the base config resolved
    runs: str
    jobs: list[Job]

    @property
    def axes(self) -> list[str]:
        return sorted({k for job in self.jobs for k in job.overrides})


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= {"uniform", "log_uniform", "integers", "choice"}


def flat(table: dict[str, Any], prefix: str = "", leaf: Callable[[Any], bool] = lambda v: False) -> dict[str, Any]:
    """Nested tables as dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); ``leaf(value)`` stops the descent."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not leaf(value):
            out.update(flat(value, name + ".", leaf))
        else:
            out[name] = value
    return out


def _label(overrides: dict[str, Any]) -> str:
    def text(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return (
        ", ".join(f"{k.rsplit('.', 1)[-1] if k.count('.') > 1 else k}={text(v)}" for k, v in overrides.items())
        or "base"
    )


def _labelled(value: Any) -> tuple[Any, Any]:
    """A grid value and how a point's name shows it: a table's own ``label`` (taken out), else the value."""
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        return {k: v for k, v in value.items() if k != "label"}, value["label"]
    return value, value


def _points(spec: SweepConfig) -> list[tuple[str, dict[str, Any]]]:
    listed = [(p.get("label"), flat({k: v for k, v in p.items() if k != "label"})) for p in spec.points] or [(None, {})]
    grid = flat(spec.grid, leaf=lambda v: False)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigurationError(f"grid.{key}: give a non-empty list of values, e.g. [0.1, 0.5]")
    combos, shown = [], []
    for values in itertools.product(*grid.values()):
        pairs = [_labelled(v) for v in values]
        combos.append({k: v for k, (v, _) in zip(grid, pairs)})
        shown.append({k: s for k, (_, s) in zip(grid, pairs)})
    draws: list[dict[str, Any]] = [{}]
    if spec.random is not None:
        axes = spec.random.axes()
        if not axes:
            raise ConfigurationError(
                'random: give at least one axis, e.g. "protocol.options.beta" = { uniform = [0.1, 1.0] }'
            )
        rng = np.random.default_rng(spec.random.seed)
        draws = [{k: d.draw(rng) for k, d in axes.items()} for _ in range(spec.random.count)]
    out = []
    for (label, listed_overrides), (combo, names), draw in itertools.product(listed, zip(combos, shown), draws):
        overrides = {**listed_overrides, **combo, **draw}
        extra = _label({**names, **draw})
        name = label if label is not None else _label({**listed_overrides, **names, **draw})
        if label is not None and (combo or draw):
            name = f"{label}, {extra}"
        out.append((name, overrides))
    return out


def expand(raw: dict, origin: Path | None = None, runs: str | None = None) -> Sweep:
    """The runs of a sweep file's contents (``origin``: its folder, for a relative ``base``).
    ``runs`` overrides the runs folder of the file and of the base config."""
    try:
        spec = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "sweep"
        valid = (
            f"; valid: {', '.join(SweepConfig.model_fields)}"
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1
            else ""
        )
        raise ConfigurationError(f"sweep {loc}: {err['msg'][0].lower() + err['msg'][1:]}{valid}") from None
    base: dict[str, Any] = {}
    if spec.base is not None:
        path = Path(spec.base)
        if not path.is_absolute() and origin is not None:
            path = origin / path
        base = read_toml(path)
    for key, value in flat(spec.config).items():
        set_field(base, key, copy.deepcopy(value))
    folder = runs or spec.runs or base.get("runs", "runs")  # like a run config's: relative to the working folder
    offsets = flat(spec.seed_offsets)
    for key, offset in offsets.items():
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ConfigurationError(
                f"seed_offsets.{key} = {offset!r}: give an integer offset added to each run's seed, e.g. 1000"
            )
    jobs, seen = [], {}
    for index, (label, overrides) in enumerate(_points(spec)):
        if label in seen:
            label = f"{label} #{index}"
        seen[label] = index
        for seed in spec.seeds:
            config = copy.deepcopy(base)
            for key, value in overrides.items():
                set_field(config, key, copy.deepcopy(value))
            for key, offset in offsets.items():
                set_field(config, key, seed + offset)
            config["seed"], config["runs"] = seed, folder
            try:
                checked = validate(config)
            except ConfigurationError as exc:
                raise ConfigurationError(f"sweep point {label!r}, seed {seed}: {exc}") from None
            jobs.append(Job(index, label, overrides, seed, checked.to_dict()))
    if len({(j.point, j.seed) for j in jobs}) != len(jobs):
        raise ConfigurationError(f"sweep seeds {spec.seeds}: a seed is listed twice; give each once")
    name = spec.name or (origin.name if origin is not None else "sweep")
    return Sweep(name, {**raw, "base_config": base}, str(folder), jobs)


def load_sweep(path: str | Path, runs: str | None = None) -> Sweep:
    """Read, validate and expand a sweep file."""
    path = Path(path)
    raw = read_toml(path)
    sweep = expand(raw, path.parent, runs)
    return sweep if raw.get("name") else Sweep(path.stem, sweep.spec, sweep.runs, sweep.jobs)
