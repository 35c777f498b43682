"""A SPICE netlist of resistors, diodes and voltage sources, checked before any solve.

SPICE conventions: names are case-insensitive (``D`` and ``d`` are one node); the first line of a
file is its title unless it reads as an element, a comment or a card; ``*`` starts a comment line,
``;`` or `` $ `` a trailing comment; a line starting with ``+`` continues the one before; node ``0``
(or ``gnd``) is ground. Values take the SPICE scale factors t g meg k mil m u n p f a (``1M`` is a
milli, ``1meg`` a mega, ``1mil`` 25.4e-6) and ignore letters after them (``10kohm``, ``5V``)::

    Rname n1 n2 VALUE [train]        resistor of VALUE ohm; "train": its conductance is a parameter
    Dname anode cathode [MODEL] [AREA]   diode; MODEL: a .model name, "ideal" (the default:
                                     V(anode) <= V(cathode), current only anode -> cathode), or
                                     "exp [IS=1e-12] [N=1] [VT=...]" inline
    Vname n+ n- [DC] VALUE           fixed source: V(n+) - V(n-) = VALUE volt
    Vname n+ n- [GAIN*]xK            input source: V(n+) - V(n-) = GAIN * x[K] (K from 0)
    .model NAME D (IS=... N=...)     a Shockley diode i = AREA IS (exp(V / (N VT)) - 1)
    .model NAME D (ideal)            an ideal diode under a name
    .include FILE                    another netlist, relative to this file's folder
    .output n1 n2 ...                output nodes, in order (not SPICE: the substrate's outputs)
    .title, .op                      accepted and ignored (the substrate computes the operating point)
    .end                             optional; lines after it are ignored

VT is the thermal voltage k T / q at SPICE's nominal 27 C (TNOM), 25.865 mV. Diode model parameters
that do not change a DC operating point at 27 C (CJO, M, VJ, FC, TT, EG, XTI, KF, AF) are accepted
and ignored; RS, BV, IBV and any other parameter are refused.

Refused with the file and line: an unsupported element (C, L, I, X, ...) or card (.tran, .param, ...),
a resistance <= 0, a duplicate element name, an unknown diode model, a loop of voltage sources,
a floating node (no path to ground through resistors and sources), inputs not numbered 0..K-1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from aeqprop.errors import ConfigurationError

SUFFIX = {
    "t": 1e12,
    "g": 1e9,
    "meg": 1e6,
    "k": 1e3,
    "mil": 25.4e-6,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "p": 1e-12,
    "f": 1e-15,
    "a": 1e-18,
}
# k T / q at TNOM = 27 C = 300.15 K, with the constants ngspice uses (CODATA 2014)
VT_TNOM = 1.38064852e-23 * 300.15 / 1.6021766208e-19
GROUND = ("0", "gnd")
INPUT = re.compile(r"^(?:([+-]?[0-9.eE+-]+)\*|(-))?x(\d+)$", re.IGNORECASE)
NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|mil|[tgkmunpfa])?[a-z]*")
DIODE_DC = {"is": "IS", "n": "N"}
DIODE_NO_DC = {"cjo", "cj0", "cj", "m", "vj", "fc", "tt", "eg", "xti", "kf", "af"}
IGNORED_CARDS = {".title", ".op"}


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
    where: str = ""  # "file line N"


@dataclass
class Circuit:
    elements: list[Element]
    nodes: list[str]  # ground first
    outputs: list[str]
    n_inputs: int
    source: str = "<netlist>"

    def of(self, kind: str) -> list[Element]:
        return [e for e in self.elements if e.kind == kind]


def read_netlist(path: Path) -> str:
    """The text of a netlist file; a file that is not UTF-8 text is refused with the byte that is not."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{path.name}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save the netlist as UTF-8 (or plain ASCII)"
        ) from None


def number(text: str, where: str) -> float:
    """A SPICE number with an optional scale factor (``1k``, ``2.2meg``, ``10u``, ``1mil``, ``1e-3``)."""
    m = NUMBER.fullmatch(text.lower())
    if not m:
        raise ConfigurationError(f"{where}: {text!r} is not a number; write e.g. 1k, 4.7e3, 10u")
    value = float(m.group(1)) * SUFFIX.get(m.group(2) or "", 1.0)
    if not math.isfinite(value):
        raise ConfigurationError(f"{where}: {text!r} is too large for a number (above 1.8e308); write e.g. 1k, 4.7e3")
    return value


def _node(n: str) -> str:
    n = n.lower()
    return "0" if n in GROUND else n


@dataclass
class _Line:
    where: str
    line: int
    tokens: list[str]


def _statements(text: str, source: str, base: Path, depth: int = 0, title: bool = True) -> list[_Line]:
    """Comment-free statements with continuation lines joined and .include expanded, up to .end."""
    if depth > 8:
        raise ConfigurationError(f"{source}: .include nested deeper than 8 files (a file including itself?)")
    out: list[_Line] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r";|\s\$|^\$", raw, maxsplit=1)[0].strip()
        if not line or line.startswith("*"):
            continue
        if line.startswith("+"):
            if not out:
                raise ConfigurationError(f"{source} line {lineno}: a continuation line '+' continues nothing")
            out[-1].tokens += line[1:].split()
            continue
        st = _Line(f"{source} line {lineno}", lineno, line.split())
        if title and lineno == 1 and not _reads_as_statement(st):
            continue  # the SPICE title line
        head = st.tokens[0].lower()
        if head == ".end":
            break
        if head in (".include", ".inc"):
            if len(st.tokens) != 2:
                raise ConfigurationError(f"{st.where}: .include takes one file name")
            path = base / st.tokens[1].strip("\"'")
            if not path.is_file():
                raise ConfigurationError(f"{st.where}: included file {path} does not exist")
            out += _statements(read_netlist(path), path.name, path.parent, depth + 1, title=False)
            continue
        out.append(st)
    return out


def _reads_as_statement(st: _Line) -> bool:
    """Whether a first line reads as a card or an element (by its form alone), not as a title."""
    tok = [t.lower() for t in st.tokens]
    if tok[0].startswith("."):
        return True
    if tok[0][0] == "d":
        return len(tok) >= 3
    if tok[0][0] not in "rv" or len(tok) < 4:
        return False
    value = tok[4] if tok[0][0] == "v" and tok[3] == "dc" and len(tok) > 4 else tok[3]
    return bool(NUMBER.fullmatch(value) or INPUT.match(value))


def _models(statements: list[_Line]) -> dict[str, dict]:
    """The diode models of the .model cards: name -> {} (ideal) or {"IS", "N", "VT"}."""
    models: dict[str, dict] = {}
    for st in statements:
        if st.tokens[0].lower() != ".model":
            continue
        if len(st.tokens) < 3:
            raise ConfigurationError(
                f"{st.where}: .model needs a name and a type, e.g. .model D1N4148 D (IS=2.5n N=1.8)"
            )
        name, rest = st.tokens[1].lower(), " ".join(st.tokens[2:]).lower().replace("(", " ").replace(")", " ")
        kind, _, params = rest.strip().partition(" ")
        if kind != "d":
            raise ConfigurationError(f"{st.where}: model {name!r} of type {kind!r} is not supported; only diodes (D)")
        if name in models or name in ("ideal", "exp"):
            raise ConfigurationError(f"{st.where}: diode model {name!r} is defined twice (or shadows a built-in)")
        if params.split() == ["ideal"]:
            models[name] = {}
            continue
        model = {"IS": 1e-14, "N": 1.0, "VT": VT_TNOM}
        pairs = re.findall(r"([a-z]\w*)\s*=\s*(\S+)", params)
        if re.sub(r"([a-z]\w*)\s*=\s*(\S+)", "", params).strip():
            raise ConfigurationError(f"{st.where}: model {name!r}: write its parameters as NAME=VALUE")
        for k, v in pairs:
            if k in DIODE_DC:
                model[DIODE_DC[k]] = number(v, st.where)
            elif k not in DIODE_NO_DC:
                raise ConfigurationError(
                    f"{st.where}: diode parameter {k.upper()} of model {name!r} is not supported; "
                    "supported: IS, N (and CJO, M, VJ, FC, TT, EG, XTI, KF, AF, which do not change DC)"
                )
        if model["IS"] <= 0 or model["N"] <= 0:
            raise ConfigurationError(f"{st.where}: diode model {name!r} needs IS > 0 and N > 0")
        models[name] = model
    return models


def _element(st: _Line, models: dict[str, dict]) -> Element:
    tok, where = st.tokens, st.where
    kind = tok[0][0].upper()
    if len(tok) < 3 + (kind != "D"):
        raise ConfigurationError(f"{where}: {tok[0]} needs two nodes{'' if kind == 'D' else ' and a value'}")
    a, b = _node(tok[1]), _node(tok[2])
    if a == b:
        raise ConfigurationError(f"{where}: {tok[0]} connects node {a!r} to itself; give two different nodes")
    e = Element(kind, tok[0], (a, b), st.line, where=where)
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
        spec = tok[3:]
        if spec and spec[0].lower() == "dc":
            spec = spec[1:]
        if len(spec) != 1:
            raise ConfigurationError(
                f"{where}: source {tok[0]} takes one DC value (or GAIN*xK), got {' '.join(tok[3:])!r}"
            )
        m = INPUT.match(spec[0])
        if m:
            e.input = int(m.group(3))
            e.gain = -1.0 if m.group(2) else (number(m.group(1), where) if m.group(1) else 1.0)
        else:
            e.value = number(spec[0], where)
    else:
        e.diode = _diode(tok, where, models)
    return e


def _diode(tok: list[str], where: str, models: dict[str, dict]) -> dict:
    opts = [t.lower() for t in tok[3:]]
    if not opts or opts == ["ideal"]:
        return {}
    if opts[0] == "exp":  # inline model: exp IS= N= VT=; IS defaults to 1e-12 A as it always has here
        d = {"IS": 1e-12, "N": 1.0, "VT": VT_TNOM}
        for o in opts[1:]:
            k, _, v = o.partition("=")
            if k.upper() not in d or not v:
                raise ConfigurationError(f"{where}: unknown diode option {o!r}; valid: IS=, N=, VT=")
            d[k.upper()] = number(v, where)
        if min(d.values()) <= 0:
            raise ConfigurationError(f"{where}: diode {tok[0]} needs IS, N and VT > 0")
        return d
    if opts[0] not in models:
        raise ConfigurationError(
            f"{where}: unknown diode model {tok[3]!r}; define it with .model {tok[3]} D (IS=... N=...), "
            "or write ideal or exp"
        )
    d = dict(models[opts[0]])
    if len(opts) > 2 or (len(opts) == 2 and opts[1] == "off"):
        raise ConfigurationError(
            f"{where}: diode {tok[0]} takes a model and an optional area, got {' '.join(tok[3:])!r}"
        )
    if len(opts) == 2:
        area = number(opts[1], where)
        if area <= 0 or not d:
            raise ConfigurationError(f"{where}: diode {tok[0]}: the area must be > 0 and needs a Shockley model")
        d["IS"] *= area
    return d


def parse(text: str, source: str = "<netlist>", base: str | Path = ".") -> Circuit:
    """Read and check a netlist; every refusal is a ConfigurationError naming the file and line."""
    statements = _statements(text, source, Path(base))
    models = _models(statements)
    elements: list = []
    outputs: list[str] = []
    first_seen: dict[str, object] = {"0": 0}
    names: dict[str, str] = {}
    out_where = ""
    for st in statements:
        head = st.tokens[0].lower()
        if head in IGNORED_CARDS or head == ".model":
            continue
        if head == ".output":
            if len(st.tokens) < 2:
                raise ConfigurationError(f"{st.where}: .output names no node; list the output nodes")
            outputs += [_node(n) for n in st.tokens[1:]]
            out_where = out_where or st.where
            continue
        if head.startswith("."):
            raise ConfigurationError(
                f"{st.where}: unsupported card {st.tokens[0]!r}; valid: .model, .include, .output, .op, .title, .end"
            )
        if head[0] not in "rdv":
            raise ConfigurationError(
                f"{st.where}: unsupported element {st.tokens[0]!r}; valid: R (resistor), D (diode), V (voltage source)"
            )
        if head in names:
            raise ConfigurationError(f"{st.where}: element {st.tokens[0]!r} is already defined at {names[head]}")
        names[head] = st.where
        e = _element(st, models)
        for n in e.nodes:
            first_seen.setdefault(n, st)
        elements.append(e)
    nodes = list(first_seen)
    if not outputs:
        raise ConfigurationError(f"{source}: no .output line; name the output nodes with .output n1 n2 ...")
    for n in outputs:
        if n not in first_seen:
            raise ConfigurationError(f"{out_where}: output node {n!r} is not in the circuit")
    inputs = sorted({e.input for e in elements if e.input is not None})
    if inputs != list(range(len(inputs))):
        missing = sorted(set(range(max(inputs) + 1)) - set(inputs))
        raise ConfigurationError(f"{source}: inputs must be numbered x0..x{max(inputs)}; missing x{missing[0]}")
    _check_topology(elements, first_seen, source)
    return Circuit(elements, nodes, outputs, len(inputs), source)


def _check_topology(elements: list[Element], first_seen: dict, source: str) -> None:
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
                    f"{e.where}: voltage source {e.name} closes a loop of voltage sources "
                    f"through nodes {e.nodes[0]!r} and {e.nodes[1]!r}; remove a source from the loop"
                )
            parent[a] = b
    for e in elements:
        if e.kind == "R":
            parent[find(e.nodes[0])] = find(e.nodes[1])
    for n, st in first_seen.items():
        if find(n) != find("0"):
            raise ConfigurationError(
                f"{st.where}: node {n!r} is floating (no path to ground through resistors or "
                "sources); connect it with a resistor or remove it"
            )
