"""Names -> factories for backends, drivers and protocols.

``aeqprop`` imports none of ``sim_backends``, ``drivers`` or ``protocols``: it
finds them by name, first in the built-in table below, then through the entry
point groups ``aeqprop.backends``, ``aeqprop.protocols`` and ``aeqprop.drivers``
of installed packages.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from aeqprop.errors import ConfigurationError

KINDS = {"backends": "aeqprop.backends", "protocols": "aeqprop.protocols", "drivers": "aeqprop.drivers"}

BUILTIN: dict[str, dict[str, str]] = {
    "backends": {
        "hopfield": "sim_backends.hopfield:HopfieldSubstrate",
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


def _import(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load(kind: str, name: str):
    """The factory registered under ``name``; unknown names list the valid ones."""
    names = available(kind)
    if name not in names:
        singular = kind.rstrip("s")
        raise ConfigurationError(f"unknown {singular} {name!r}; valid: {', '.join(sorted(names))}")
    return _import(names[name])
