"""What a registered protocol or backend takes: options with defaults, variants, capabilities.

Example: ``show("protocols", "aeqprop")`` lists beta, variant (centered, optimistic,
pessimistic), homeostasis (native, feedback), ... and that it needs the "aeqprop" capability.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

#: Options set by the run itself, not by the user's options table.
INJECTED = ("seed", "on_event", "wiring")


def _choices(module: Any, name: str) -> list[str] | None:
    """The valid values of option ``name`` when its module spells them as a constant (VARIANTS, HOMEOSTASIS)."""
    for const in (name.upper() + "S", name.upper()):
        value = getattr(module, const, None)
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return list(value)
        if isinstance(value, (tuple, list, frozenset)) and value and all(isinstance(k, str) for k in value):
            return list(value)
    return None


def _summary(obj: Any) -> str:
    text = getattr(obj, "description", None)
    if isinstance(text, str) and text:
        return text
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def show(kind: str, name: str) -> list[str]:
    """Lines describing one registered name (``kind``: protocols or backends)."""
    from aeqprop import registry

    factory = registry.load(kind, name)
    target = registry.available(kind).get(name, name)
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    lines = [f"{name}  ({target})", f"  {_summary(factory)}"]
    table = "protocol.options" if kind == "protocols" else "substrate.options"
    lines.append(f"options ({table}, or --set {table}.NAME=VALUE):")
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in INJECTED:
            continue
        default = "required" if p.default is inspect.Parameter.empty else f"default {p.default!r}"
        annotation = "" if p.annotation is inspect.Parameter.empty else f" ({p.annotation})"
        choices = _choices(module, p.name) if module is not None else None
        lines.append(f"  {p.name}{annotation}: {default}" + (f"; one of {', '.join(choices)}" if choices else ""))
    if kind == "protocols":
        requires = sorted(getattr(factory, "requires", ()) or ())
        lines.append(
            "needs of a substrate: "
            + (", ".join(requires) or "nothing beyond the contract")
            + "  (capabilities: eqprop = measure dE/dtheta and program theta; aeqprop = knobs and release; "
            "homeostasis = native hold of theta)"
        )
    else:
        lines.append("capabilities: " + _capabilities(factory))
    return lines


def _capabilities(factory: Any) -> str:
    """The capabilities of a backend built with its defaults, or why they are not known without a file."""
    try:
        sub = factory()
    except Exception as exc:  # e.g. a netlist backend needs its file: say so instead
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"known once built ({first[:120]})"
    try:
        caps: Any = getattr(getattr(sub, "info", None), "capabilities", ())
        return ", ".join(sorted(caps)) or "none"
    finally:
        close = getattr(sub, "close", None)
        if callable(close):
            close()
