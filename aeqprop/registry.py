"""Names -> factories for backends, drivers and protocols.

``aeqprop`` imports none of ``sim_backends``, ``drivers`` or ``protocols``: it
finds them by name, first in the built-in table below, then through the entry
point groups ``aeqprop.backends``, ``aeqprop.protocols`` and ``aeqprop.drivers``
of installed packages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from aeqprop.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np

    from aeqprop.substrate import StepReport, Substrate

#: What the registry hands out: a class or function building a substrate or protocol from options.
#: What it builds is checked where it is used (aeqprop.session).
Factory = Callable[..., object]

KINDS = {"backends": "aeqprop.backends", "protocols": "aeqprop.protocols", "drivers": "aeqprop.drivers"}

BUILTIN: dict[str, dict[str, str]] = {
    "backends": {
        "conv": "sim_backends.conv:ConvHopfieldSubstrate",
        "discrete": "sim_backends.discrete:DiscreteSubstrate",
        "hopfield": "sim_backends.hopfield:HopfieldSubstrate",
        "instrument": "drivers.cli_support:build_substrate",
        "netlist": "sim_backends.netlist:NetlistSubstrate",
        "resistive": "sim_backends.resistive:ResistiveSubstrate",
        "untied": "sim_backends.untied:UntiedSubstrate",
    },
    "protocols": {
        "aeqprop": "protocols.aeqprop:Aeqprop",
        "continual": "protocols.continual:ContinualEqProp",
        "coupled": "protocols.coupled:CoupledLearning",
        "eqprop": "protocols.eqprop:EqProp",
        "sgd-oracle": "protocols.oracle_sgd:OracleSGD",
        "vector-field": "protocols.vector_field:VectorFieldEqProp",
    },
    "drivers": {
        "instruments": "drivers.cli_support:build_substrate",
    },
}


def available(kind: str) -> dict[str, str]:
    """Every name of a kind with its target ``module:attribute``."""
    if kind not in KINDS:
        raise ConfigurationError(f"unknown registry kind {kind!r}; valid: {', '.join(KINDS)}")
    names = dict(BUILTIN[kind])
    for ep in entry_points(group=KINDS[kind]):
        names.setdefault(ep.name, ep.value)
    return names


def _import(target: str) -> object:
    module, _, attr = target.partition(":")
    obj: object = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load(kind: str, name: str) -> Factory:
    """The factory registered under ``name``; unknown names list the valid ones.

    A protocol may also be a file, ``path/to/file.py:ClassName`` (see :func:`load_protocol`).
    """
    if kind == "protocols" and is_protocol_file(name):
        return load_protocol(name)
    names = available(kind)
    if name not in names:
        singular = kind.rstrip("s")
        raise ConfigurationError(f"unknown {singular} {name!r}; valid: {', '.join(sorted(names))}")
    return factory(names[name])


def factory(target: str) -> Factory:
    """The callable at ``module:attribute``; ConfigurationError if it is not callable."""
    obj = _import(target)
    if not callable(obj):
        raise ConfigurationError(f"{target} is a {type(obj).__name__}, not a class or function to build from")
    return obj


# -- protocols from files and descriptions ----------------------------------------


def is_protocol_file(spec: str) -> bool:
    """True for ``path/to/file.py:ClassName`` (or ``file.py`` alone), as opposed to a registered name."""
    return spec.partition(":")[0].endswith(".py")


class FileProtocol:
    """A protocol loaded from a user's file, checked at the seams the trainer relies on.

    ``name`` is the ``file.py:ClassName`` spec, so capability errors name the
    file; a step that does not return a StepReport raises ConfigurationError.
    Other attributes (``beta``, ``lr``, ...) read and write through to the instance.
    """

    _own = ("inner", "name", "requires", "_origin")

    inner: Any  # the user's protocol object: any class with requires and step (checked at load)

    def __init__(self, inner: Any, origin: str):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "_origin", origin)
        object.__setattr__(self, "name", origin)
        object.__setattr__(self, "requires", frozenset(inner.requires))

    def step(self, substrate: Substrate, x: np.ndarray, y: np.ndarray) -> StepReport:
        from aeqprop.substrate import StepReport, require

        require(substrate, self.requires, f"protocol {self._origin}")
        report = self.inner.step(substrate, x, y)
        if not isinstance(report, StepReport):
            raise ConfigurationError(
                f"{self._origin}: step() returned {type(report).__name__}, not a StepReport "
                "(return aeqprop.substrate.StepReport(loss=..., outputs=..., delta=...))"
            )
        return report

    def __getattr__(self, attr: str) -> Any:
        return getattr(object.__getattribute__(self, "inner"), attr)

    def __setattr__(self, attr: str, value: object) -> None:
        if attr in self._own:
            object.__setattr__(self, attr, value)
        else:
            setattr(self.inner, attr, value)


def _protocol_class_from_file(spec: str) -> tuple[type, str]:
    import importlib.util
    import inspect
    import sys
    from pathlib import Path

    path_text, _, cls_name = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigurationError(f"protocol file {path_text}: no such file")
    module_name = f"aeqprop_user_protocol_{abs(hash(str(path.resolve())))}"
    try:
        source = path.read_text()
        compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise ConfigurationError(f"protocol file {path_text}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # binary or not UTF-8
        raise ConfigurationError(f"protocol file {path_text}: not Python source text ({exc})") from None
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigurationError(f"protocol file {path_text}: Python cannot load it as a module; give a .py file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's module failed on import: one line, the exception named
        del sys.modules[module_name]
        raise ConfigurationError(
            f"protocol file {path_text}: importing it raised {type(exc).__name__}: {exc}"
        ) from None
    classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module_name]
    if not cls_name:
        if len(classes) != 1:
            raise ConfigurationError(
                f"protocol file {path_text}: name the class as {path_text}:ClassName (it defines: {', '.join(classes) or 'none'})"
            )
        cls_name = classes[0]
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ConfigurationError(
            f"protocol file {path_text}: no class {cls_name!r} (it defines: {', '.join(classes) or 'none'})"
        )
    missing = [a for a in ("step", "requires") if not hasattr(cls, a)]
    if missing or not callable(getattr(cls, "step", None)):
        raise ConfigurationError(
            f"protocol file {path_text}: class {cls_name} lacks {' and '.join(missing) or 'a callable step'}; "
            "a protocol has name, requires (a set of capabilities) and step(substrate, x, y) -> StepReport"
        )
    unknown = set(getattr(cls, "requires", ())) - _capabilities()
    if unknown:
        raise ConfigurationError(
            f"protocol file {path_text}: {cls_name}.requires names unknown capabilities {sorted(unknown)}; "
            f"valid: {sorted(_capabilities())}"
        )
    return cls, f"{path_text}:{cls_name}"


def _capabilities() -> set[str]:
    from aeqprop.substrate import CAPABILITIES

    return set(CAPABILITIES)


def load_protocol(spec: str) -> Factory:
    """A protocol factory from a registered name or from ``path/to/file.py:ClassName``.

    A file's class is wrapped in :class:`FileProtocol`; the factory takes the
    class's own constructor options. Every problem with the file is one
    ConfigurationError naming the file.
    """
    if not is_protocol_file(spec):
        return load("protocols", spec)
    import functools
    import inspect

    cls, origin = _protocol_class_from_file(spec)

    @functools.wraps(cls, assigned=("__doc__",), updated=())
    def build(*args: Any, **kwargs: Any) -> FileProtocol:
        try:
            inner = cls(*args, **kwargs)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{origin}: {exc}") from None
        except Exception as exc:
            raise ConfigurationError(f"{origin}: constructing it raised {type(exc).__name__}: {exc}") from None
        return FileProtocol(inner, origin)

    setattr(build, "__signature__", inspect.signature(cls))  # noqa: B010  (what inspect reads; not a declared attribute)
    return build


def describe(kind: str) -> list[tuple[str, str, str]]:
    """(name, target, one line of description) for every name of a kind.

    The line is the class's ``description`` attribute, else its docstring's
    first line; a target that does not import says so instead.
    """
    rows: list[tuple[str, str, str]] = []
    for name, target in sorted(available(kind).items()):
        try:
            obj = _import(target)
        except Exception as exc:  # an installed plugin that is broken must not hide the others
            rows.append((name, target, f"(cannot import: {type(exc).__name__}: {exc})"))
            continue
        text = getattr(obj, "description", None)
        if not isinstance(text, str) or not text:
            text = (getattr(obj, "__doc__", None) or "").strip().splitlines()[:1]
            text = text[0] if text else ""
        rows.append((name, target, text.strip()))
    return rows
