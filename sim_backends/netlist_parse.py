"""A small SPICE-like netlist: resistors, diodes and voltage sources, checked before any solve.

One element or directive per line; ``*`` starts a comment line, ``;`` a trailing
comment; node ``0`` (or ``gnd``) is ground. Values take SPICE suffixes
(f p n u m k meg g t)::

    Rname n1 n2 VALUE [train]       resistor of VALUE ohm; "train": its conductance is a parameter
    Dname anode cathode [ideal]     ideal diode: V(anode) <= V(cathode), current only anode -> cathode
    Dname anode cathode exp [IS=1e-12] [N=1] [VT=0.025852]   exponential (Shockley) diode
    Vname n+ n- VALUE               fixed source: V(n+) - V(n-) = VALUE volt
    Vname n+ n- [GAIN*]xK           input source: V(n+) - V(n-) = GAIN * x[K] (K from 0)
    .output n1 n2 ...               output nodes, in order
    .end                            optional; lines after it are ignored

Refused, naming the line: an unknown element or directive, a resistance <= 0
(a negative conductance), a loop of voltage sources, a floating node (no path
to ground through resistors and sources), inputs not numbered 0..K-1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aeqprop.errors import ConfigurationError

SUFFIX = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "meg": 1e6, "g": 1e9, "t": 1e12}
GROUND = ("0", "gnd")
INPUT = re.compile(r"^(?:([+-]?[0-9.eE+-]+)\*|(-))?x(\d+)$", re.IGNORECASE)


@dataclass
class Element:
    kind: str  # "R", "D", "V"
    name: str
    nodes: tuple[str, str]
    line: int
    value: float = 0.0  # R: conductance (S); V: volts (fixed part)
    trainable: bool = False
    input: int | None = None  # V: index of x driving it
    gain: float = 0.0  # V: volts per unit of x
    diode: dict = field(default_factory=dict)  # D: {} ideal, or {"IS", "N", "VT"} exponential


@dataclass
class Circuit:
    elements: list[Element]
    nodes: list[str]  # ground first
    outputs: list[str]
    n_inputs: int
    source: str = "<netlist>"

    def of(self, kind: str) -> list[Element]:
        return [e for e in self.elements if e.kind == kind]


def number(text: str, where: str) -> float:
    """A SPICE number with an optional suffix (``1k``, ``2.2meg``, ``10u``, ``1e-3``)."""
    m = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(meg|[fpnumkgt])?[a-z]*", text.lower())
    if not m:
        raise ConfigurationError(f"{where}: {text!r} is not a number; write e.g. 1k, 4.7e3, 10u")
    return float(m.group(1)) * SUFFIX.get(m.group(2) or "", 1.0)


def _node(n: str) -> str:
    return "0" if n.lower() in GROUND else n


def parse(text: str, source: str = "<netlist>") -> Circuit:
    """Read and check a netlist; every refusal is a ConfigurationError naming the line."""
    elements, outputs, first_seen = [], [], {"0": 0}
    out_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("*"):
            continue
        where = f"{source} line {lineno}"
        tok = line.split()
        head = tok[0].lower()
        if head == ".end":
            break
        if head == ".output":
            if len(tok) < 2:
                raise ConfigurationError(f"{where}: .output names no node; list the output nodes")
            outputs += [_node(n) for n in tok[1:]]
            out_line = out_line or lineno
            continue
        kind = head[0].upper()
        if kind not in "RDV" or head.startswith("."):
            raise ConfigurationError(
                f"{where}: unknown element {tok[0]!r}; valid: R (resistor), D (diode), V (voltage source), .output, .end"
            )
        if len(tok) < 3 + (kind != "D"):
            raise ConfigurationError(f"{where}: {tok[0]} needs two nodes{'' if kind == 'D' else ' and a value'}")
        a, b = _node(tok[1]), _node(tok[2])
        if a == b:
            raise ConfigurationError(f"{where}: {tok[0]} connects node {a!r} to itself; give two different nodes")
        e = Element(kind, tok[0], (a, b), lineno)
        if kind == "R":
            r = number(tok[3], where)
            if r <= 0:
                raise ConfigurationError(
                    f"{where}: resistor {tok[0]} of {tok[3]} ohm is a {'negative' if r < 0 else 'infinite'} "
                    "conductance; give a resistance > 0"
                )
            e.value = 1.0 / r
            extra = [t.lower() for t in tok[4:]]
            if extra not in ([], ["train"]):
                raise ConfigurationError(f"{where}: unknown resistor option {' '.join(tok[4:])!r}; valid: train")
            e.trainable = bool(extra)
        elif kind == "V":
            m = INPUT.match(tok[3])
            if m:
                e.input = int(m.group(3))
                e.gain = -1.0 if m.group(2) else (float(m.group(1)) if m.group(1) else 1.0)
            else:
                e.value = number(tok[3], where)
            if len(tok) > 4:
                raise ConfigurationError(f"{where}: source {tok[0]} takes one value, got {' '.join(tok[3:])!r}")
        else:
            opts = [t.lower() for t in tok[3:]]
            if opts[:1] == ["exp"]:
                e.diode = {"IS": 1e-12, "N": 1.0, "VT": 0.025852}
                for o in opts[1:]:
                    k, _, v = o.partition("=")
                    if k.upper() not in e.diode or not v:
                        raise ConfigurationError(f"{where}: unknown diode option {o!r}; valid: IS=, N=, VT=")
                    e.diode[k.upper()] = number(v, where)
                if min(e.diode.values()) <= 0:
                    raise ConfigurationError(f"{where}: diode {tok[0]} needs IS, N and VT > 0")
            elif opts not in ([], ["ideal"]):
                raise ConfigurationError(f"{where}: unknown diode model {' '.join(tok[3:])!r}; valid: ideal, exp")
        for n in (a, b):
            first_seen.setdefault(n, lineno)
        elements.append(e)
    where = f"{source}"
    nodes = list(first_seen)
    if not outputs:
        raise ConfigurationError(f"{where}: no .output line; name the output nodes with .output n1 n2 ...")
    for n in outputs:
        if n not in first_seen:
            raise ConfigurationError(f"{where} line {out_line}: output node {n!r} is not in the circuit")
    inputs = sorted({e.input for e in elements if e.input is not None})
    if inputs != list(range(len(inputs))):
        missing = sorted(set(range(max(inputs) + 1)) - set(inputs))
        raise ConfigurationError(f"{where}: inputs must be numbered x0..x{max(inputs)}; missing x{missing[0]}")
    _check_topology(elements, first_seen, source)
    return Circuit(elements, nodes, outputs, len(inputs), source)


def _check_topology(elements: list[Element], first_seen: dict[str, int], source: str) -> None:
    """Loops of voltage sources and floating nodes."""
    parent = {n: n for n in first_seen}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for e in elements:
        if e.kind == "V":
            a, b = find(e.nodes[0]), find(e.nodes[1])
            if a == b:
                raise ConfigurationError(
                    f"{source} line {e.line}: voltage source {e.name} closes a loop of voltage sources "
                    f"through nodes {e.nodes[0]!r} and {e.nodes[1]!r}; remove a source from the loop"
                )
            parent[a] = b
    for e in elements:
        if e.kind == "R":
            parent[find(e.nodes[0])] = find(e.nodes[1])
    for n, line in first_seen.items():
        if find(n) != find("0"):
            raise ConfigurationError(
                f"{source} line {line}: node {n!r} is floating (no path to ground through resistors or "
                "sources); connect it with a resistor or remove it"
            )
