"""A run's parts from its config: data, protocol and substrate, built by name and checked.

Names are looked up in the registry and the data loaded before any substrate is built; a factory's
options are checked against its signature, and what it builds is checked to be a training protocol
or a substrate (one line naming it, otherwise). The trainer is made last, once the parts fit.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aeqprop.checks import check_memory, check_type
from aeqprop.config import RunConfig
from aeqprop.data import Dataset
from aeqprop.errors import AeqpropError, ConfigurationError
from aeqprop.store import RunStore
from aeqprop.substrate import Substrate, TrainingProtocol
from aeqprop.trainer import Trainer

if TYPE_CHECKING:
    from aeqprop.schedules import ScheduleHook

#: Where the nonideal wrapper lives, found by name like the registry's built-ins.
NONIDEAL = "sim_backends.nonideal:NonidealSubstrate"

T = TypeVar("T")


def build_with(factory: Callable[..., T], options: Mapping[str, Any], injected: Mapping[str, Any], what: str) -> T:
    """Call ``factory`` with the user's ``options`` and whichever ``injected`` ones it takes.

    An option the factory does not take is refused with the valid names
    (``what`` names the config table, e.g. ``protocol.options``).
    """
    params = inspect.signature(factory).parameters
    injected = {k: v for k, v in injected.items() if k in params}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ConfigurationError(f"{what}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(params)}")
    for name, value in options.items():
        if name in params:
            check_type(value, params[name], f"{what}.{name}")
    try:
        return factory(**{**injected, **options})
    except TypeError as exc:  # a factory taking **options passes them on; say which table they came from
        raise ConfigurationError(f"{what}: {exc}") from None


class EventSink:
    """The ``on_event(kind, message)`` callback handed to a substrate (instrument faults, retries,
    reconnects). Events raised before the run exists are kept and written once it is recorded."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str]] = []
        self.store: RunStore | None = None
        self.run_id: int | None = None

    def __call__(self, kind: str, message: str) -> None:
        if self.store is None or self.run_id is None:
            self.pending.append((kind, message))
        else:
            self.store.event(self.run_id, kind, message)

    def attach(self, store: RunStore, run_id: int) -> None:
        self.store, self.run_id = store, run_id
        for kind, message in self.pending:
            store.event(run_id, kind, message)
        self.pending.clear()


@dataclass
class Built:
    """A run's parts, built from its config; ``trainer`` is set once the parts check out."""

    config: RunConfig
    data: Dataset
    protocol: TrainingProtocol
    substrate: Substrate
    hook: ScheduleHook | None = None
    names: dict[str, str] = field(default_factory=dict)
    trainer: Trainer | None = None
    events: EventSink = field(default_factory=EventSink)


def build(config: RunConfig) -> Built:
    """Data, protocol and substrate of a run; unknown names fail before anything is opened."""
    from aeqprop import registry
    from aeqprop.data import load_dataset

    backend = config.substrate.backend or "instrument"
    make_substrate = registry.load("backends", backend)
    make_protocol = registry.load("protocols", config.protocol.name)
    ds = config.dataset
    data = load_dataset(
        ds.name,
        test_fraction=ds.test_fraction,
        seed=config.data_seed,
        target_column=ds.target_column,
        validation=ds.validation,
        data_dir=ds.data_dir,
    )
    protocol = as_protocol(
        build_with(make_protocol, config.protocol.options, {"seed": config.seed}, "protocol.options"),
        f"protocol {config.protocol.name!r}",
    )
    options = dict(config.substrate.options)
    injected: dict[str, Any] = {"seed": config.seed}
    if getattr(data, "shape", None) is not None:
        injected["input_shape"] = data.shape  # an image dataset's (C, H, W), for substrates that take it
    hidden = options.pop("hidden", None)
    if "layers" not in options and hidden is not None:
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        injected["layers"] = (data.n_features, *hidden, data.n_classes)
    layers = options.get("layers", injected.get("layers"))
    if isinstance(layers, (list, tuple)) and all(isinstance(n, int) for n in layers):
        check_memory(
            layers,
            config.schedule.batch_size,
            "substrate.options.layers" if "layers" in options else "layers (features, hidden, classes)",
        )
    if config.substrate.wiring is not None:
        if "wiring" not in inspect.signature(make_substrate).parameters:
            raise ConfigurationError(
                f"substrate.wiring: backend {backend!r} takes no wiring map (instruments do: "
                "backend 'instrument'); drop --wiring or the backend"
            )
        injected["wiring"] = config.substrate.wiring
    events = EventSink()
    injected["on_event"] = events  # instruments report faults and retries
    made = build_with(make_substrate, options, injected, "substrate.options")
    substrate = as_substrate(made, f"backend {backend!r}")
    if config.nonideal is not None:
        try:
            wrapped = registry.factory(NONIDEAL)(substrate, config.nonideal)
        except AeqpropError:
            substrate.close()
            raise
        substrate = as_substrate(wrapped, "the nonideal wrapper")
    names = {"dataset": ds.name, "backend": backend, "protocol": config.protocol.name}
    built = Built(config, data, protocol, substrate, names=names, events=events)
    try:
        built.hook = schedule_hook(config, protocol, substrate)
        built.trainer = Trainer(
            substrate,
            protocol,
            data,
            config.schedule.epochs,
            config.schedule.batch_size,
            seed=config.seed,
            before_step=built.hook,
            eval_every=config.evaluation.every,
            fidelity_every=config.evaluation.fidelity_every,
            checkpoint_every=config.checkpoint.every,
            augment=config.schedule.augment,
        )
    except BaseException:
        substrate.close()
        raise
    return built


def as_protocol(made: object, who: str) -> TrainingProtocol:
    """What a protocol factory built, checked to be a training protocol; ConfigurationError otherwise."""
    if isinstance(made, TrainingProtocol):
        return made
    raise ConfigurationError(
        f"{who} built a {type(made).__name__}, not a training protocol (name, requires, step); check its factory"
    )


def as_substrate(made: object, who: str) -> Substrate:
    """What a backend factory built, checked to be a substrate; ConfigurationError otherwise."""
    if isinstance(made, Substrate):
        return made
    close = getattr(made, "close", None)
    if callable(close):  # half a substrate may still hold an instrument open
        close()
    raise ConfigurationError(
        f"{who} built a {type(made).__name__}, not a substrate (info, clamp, nudge, relax, outputs, parameters, "
        "close); check its factory"
    )


def schedule_hook(config: RunConfig, protocol: TrainingProtocol, substrate: Substrate) -> ScheduleHook | None:
    """The ``before_step`` hook of the beta / lr / eps schedules, or None when the config has none."""
    tables = {k: getattr(config.schedule, k) for k in ("beta", "lr", "eps") if getattr(config.schedule, k)}
    if not tables and not config.schedule.hold_step:
        return None
    try:
        from aeqprop import schedules
    except ImportError:
        raise ConfigurationError(
            f"schedule.{next(iter(tables))}: schedules need aeqprop.schedules, which this version lacks"
        ) from None
    return schedules.hook(protocol, substrate, **tables, hold_step=config.schedule.hold_step)
