"""A run as a TOML file, validated by pydantic before anything is opened or written.

Example (``examples/hopfield_aeqprop.toml`` has the commented version)::

    seed = 0
    runs = "runs"
    [dataset]
    name = "digits"
    [substrate]
    backend = "hopfield"
    options = { hidden = [512], eps = 0.1, tol = 1e-3 }
    [protocol]
    name = "aeqprop"
    options = { variant = "centered", beta = 1.0 }
    [schedule]
    epochs = 30
    batch_size = 16

A malformed file raises one ConfigurationError naming the field with its
dotted location, e.g. ``schedule.epochs: must be >= 1``.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aeqprop.errors import ConfigurationError

#: The largest seed: run records keep seeds in SQLite's 64-bit integers.
MAX_SEED = 2**63 - 1


#: Backends whose hidden layers follow a conv stack, so ``hidden = []`` is a real network.
CONV_BACKENDS = frozenset({"conv"})


class _Strict(BaseModel):
    """No unknown fields, no coercion: ``true`` is not 1 and ``4.7`` is not an integer."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _sizes(value: Any, what: str, minimum_length: int) -> None:
    """Refuse layer sizes that are not positive integers (``[4.7]``, ``"abc"``, ``true``, ``[]``)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if (
        not isinstance(value, (list, tuple, int))
        or isinstance(value, bool)
        or len(items) < minimum_length
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in items)
    ):
        raise ValueError(
            f"{what} = {value!r}: give layer sizes as positive integers, e.g. [256] or [128, 64]"
            + (f" (at least {minimum_length})" if minimum_length > 1 else "")
        )


class DatasetConfig(_Strict):
    """A bundled or named dataset (``fashion-mnist``, ``cifar10``, ...) or a .csv / .npz path;
    ``seed`` defaults to the run's. ``validation``: fraction of the training split held out
    for model selection (None: 0.1 for named datasets, 0 otherwise); ``data_dir``: folder of
    the named datasets (else $AEQPROP_DATA, ~/.cache/aeqprop/datasets, system folders)."""

    name: str = Field("digits", min_length=1)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    target_column: int = -1
    validation: float | None = Field(None, ge=0.0, lt=1.0)
    data_dir: str | None = None


class SubstrateConfig(_Strict):
    """A simulated backend with options, or an instrument wiring map (``wiring``: a path).

    ``options.hidden`` (a list of sizes) becomes ``layers = (features, *hidden, classes)``
    unless ``options.layers`` is given.
    """

    backend: str | None = None
    wiring: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> SubstrateConfig:
        if self.backend is None and self.wiring is None:
            self.backend = "hopfield"
        if "hidden" in self.options:  # a conv stack may have no dense hidden layer after it
            _sizes(self.options["hidden"], "options.hidden", 0 if self.backend in CONV_BACKENDS else 1)
        if "layers" in self.options:
            _sizes(self.options["layers"], "options.layers", 2)
        return self


class ProtocolConfig(_Strict):
    name: str = "aeqprop"
    options: dict[str, Any] = Field(default_factory=dict)


class ScheduleConfig(_Strict):
    """Epochs, batch size, and optional schedules of beta, lr and eps (see aeqprop.schedules)."""

    epochs: int = Field(30, ge=1, le=1_000_000)  # more would never end: a typo, refused
    batch_size: int = Field(16, ge=1)
    beta: dict[str, Any] | None = None
    lr: dict[str, Any] | None = None
    eps: dict[str, Any] | None = None
    # Aeqprop: divide the compliance by beta's factor, so a beta schedule leaves the step eps b alone
    hold_step: bool = False
    # training images mirrored left-right with probability 1/2 ("flip"; image datasets only)
    augment: Literal["none", "flip"] = "none"


class EveryConfig(_Strict):
    """An interval in training steps; 0 means only at the end of each epoch."""

    every: int = Field(50, ge=0)


class EvaluationConfig(EveryConfig):
    """Held-out evaluation every ``every`` steps (0: at each epoch end), and, on simulated
    substrates, the cosine between a step's update and the oracle gradient every
    ``fidelity_every`` steps (0: never; it costs one implicit differentiation)."""

    fidelity_every: int = Field(0, ge=0)


class CheckpointConfig(_Strict):
    """Steps between checkpoints; 0 (the default) checkpoints at the end of each epoch only.

    A stop (Ctrl+C) always writes one. On slow hardware steps, checkpoint more often.
    """

    every: int = Field(0, ge=0)


class RunConfig(_Strict):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    runs: str = Field("runs", min_length=1, pattern=r"\S")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    substrate: SubstrateConfig = Field(default_factory=SubstrateConfig)
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    nonideal: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _nonideal_seed(self) -> RunConfig:
        nonideal = self.nonideal or {}
        flags = [k for k, v in nonideal.items() if isinstance(v, bool)]
        if flags:  # no device magnitude is a switch: `read_noise = false` would silently be 0
            raise ValueError(f"nonideal.{flags[0]} = {str(nonideal[flags[0]]).lower()}: give a number")
        infinite = [k for k, v in nonideal.items() if isinstance(v, float) and not math.isfinite(v)]
        if infinite:
            raise ValueError(f"nonideal.{infinite[0]} = {nonideal[infinite[0]]}: give a finite number")
        seed = nonideal.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"nonideal.seed = {seed!r}: give an integer from 0 to 2**63-1")
        return self

    @property
    def data_seed(self) -> int:
        return self.seed if self.dataset.seed is None else self.dataset.seed

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


#: The built-in run of ``aeqprop train`` with no file: centered Aeqprop, Hopfield 64-512-10 on digits
#: (float32: the same accuracies as float64 on 3 seeds in benchmarks/core.py, and faster).
DEFAULT: dict[str, Any] = {
    "substrate": {
        "backend": "hopfield",
        "options": {"hidden": [512], "eps": 0.1, "tol": 1e-3, "max_sweeps": 100, "dtype": "float32"},
    },
    "protocol": {"name": "aeqprop", "options": {"variant": "centered", "homeostasis": "native", "release": 1.0}},
}

#: Options of the default run per backend (``aeqprop train --backend NAME`` without a file): the
#: settings behind the README's figures (resistive: benchmarks/resistive.py, 96.66 % on digits;
#: conv: benchmarks/conv_digits.py, one 3x3 conv of 32 channels and max pooling, which fits the
#: 8x8 digits).
BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "resistive": {"hidden": [256], "eps": 0.3, "tol": 1e-5, "max_sweeps": 100},
    "conv": {
        "hidden": [],
        "channels": [32],
        "kernel": 3,
        "pool": 2,
        "pooling": "max",
        "cost": "cross-entropy",
        "eps": 0.3,
        "dtype": "float32",
    },
}

_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must not be empty",
}


def _one_line(exc: ValidationError) -> ConfigurationError:
    """The first pydantic error as ``dotted.location: problem``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    template = _MESSAGES.get(err["type"])
    if template is not None:
        message = template.format(**(err.get("ctx") or {}))
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
        if message.startswith("value error, "):
            message = message[len("value error, ") :]
        elif err["type"].endswith("_type"):
            message += f" (got {err.get('input')!r:.60})"
    if err["type"] == "extra_forbidden":
        model: type[Any] | None = RunConfig
        for part in err["loc"][:-1]:
            field = model.model_fields.get(str(part)) if model is not None else None
            model = field.annotation if field is not None and isinstance(field.annotation, type) else None
            if model is None or not issubclass(model, BaseModel):
                break
        if model is not None and isinstance(model, type) and issubclass(model, BaseModel):
            message += f"; valid: {', '.join(model.model_fields)}"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ConfigurationError(f"{loc}: {message}{more}")


def parse_value(text: str) -> Any:
    """A TOML value (``5``, ``0.1``, ``[128, 64]``, ``true``, ``"x"``), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_field(raw: dict, key: str, value: Any) -> None:
    """Set ``dotted.key`` in a raw config dict, creating tables as needed."""
    *path, last = key.split(".")
    node = raw
    for part in path:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigurationError(f"{key}: {part} is not a table")
        node = child
    node[last] = value


def apply_override(raw: dict, assignment: str) -> None:
    """Apply ``dotted.key=value`` (the value in TOML syntax) to a raw config dict."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigurationError(f"--set {assignment!r}: write it as section.field=value, e.g. schedule.epochs=5")
    set_field(raw, key, parse_value(value.strip()))


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(
            f"config file {path} does not exist"
            if not path.exists()
            else f"config file {path} is not a file; give a TOML file"
        )
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "a config is a TOML file saved as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {path} ({exc.strerror or exc})") from None


def validate(raw: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise _one_line(exc) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, fields: dict[str, Any] | None = None
) -> RunConfig:
    """Read a TOML file (or the built-in default), apply ``key=value`` overrides and
    ``fields`` (dotted key -> value, e.g. from command-line flags), validate."""
    import copy

    raw = read_toml(path) if path is not None else copy.deepcopy(DEFAULT)
    if path is None:  # the default run's options belong to its protocol and backend
        chosen = {
            **(fields or {}),
            **{k.strip(): parse_value(v.strip()) for k, _, v in (a.partition("=") for a in overrides or [])},
        }
        if chosen.get("protocol.name", DEFAULT["protocol"]["name"]) != DEFAULT["protocol"]["name"]:
            raw["protocol"]["options"] = {}
        backend = chosen.get("substrate.backend", DEFAULT["substrate"]["backend"])
        if backend != DEFAULT["substrate"]["backend"]:
            raw["substrate"]["options"] = copy.deepcopy(
                BACKEND_DEFAULTS.get(backend, {"hidden": DEFAULT["substrate"]["options"]["hidden"]})
            )
    for key, value in (fields or {}).items():
        set_field(raw, key, value)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    return validate(raw)
