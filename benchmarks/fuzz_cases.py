"""The cases of benchmarks/fuzz.py: generated from a seed, each with what it should get.

``valid`` (must run), ``invalid`` (must be refused in one line), ``suspect``
(refused, or run with a warning) or ``either``. Paths: ``{tmp}`` is the case's
folder, ``{fix}`` the shared fixtures (see ``fuzz.make_fixtures``).
The command-line cases (flags, --set, TOML) are here; those that bring files (a netlist, a damaged
store, a stored run's views) are in fuzz_files.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("flags", "set", "toml", "netlist", "store", "views")


@dataclass
class Case:
    category: str
    argv: list[str]  # "{tmp}" is the case's folder, "{fix}" the shared fixtures
    expect: str  # valid, invalid, suspect, either
    files: dict[str, bytes] = field(default_factory=dict)  # written into {tmp} before the run
    store: str | None = None  # "completed" / "interrupted": a store template copied to {tmp}/runs
    damage: tuple | None = None  # applied to the store copy
    label: str = ""


# -- generators -----------------------------------------------------------------------

BASE = [
    "train",
    "--quiet",
    "--runs",
    "{tmp}/runs",
    "--dataset",
    "{fix}/tiny.csv",
    "--hidden",
    "3",
    "--epochs",
    "1",
    "--batch-size",
    "10",
]

#: flag -> (valid values, invalid values, suspect values)
FLAGS: dict[str, tuple[list, list, list]] = {
    "--seed": (["0", "7", str(2**31)], ["-1", str(2**63), str(2**64), "abc", "1.5", ""], []),
    "--epochs": (["1", "2"], ["0", "-3", "abc", "1e3", ""], []),
    "--batch-size": (["1", "7", "1000"], ["0", "-1", "x"], []),
    "--hidden": (["3", "2,2"], ["", "abc", "0", "-4", "4.7", "3,,x", "10000000", "100000,100000"], []),
    "--eps": (["0.1", "0.05"], ["abc", "nan", "inf", "-inf", ""], ["1e300", "1e-300", "-0.1"]),
    "--beta": (["0.5", "0.3"], ["big", "nan", "inf"], ["1e-300", "1e300", "-1", "0"]),
    "--tol": (["1e-3"], ["nan", "x", "inf"], ["0", "-1", "1e300"]),
    "--max-sweeps": (["50"], ["-1", "x", "1.5"], ["0"]),
    "--test-fraction": (["0.2", "0.5"], ["0", "1", "-0.1", "1.5", "nan", "x"], []),
    "--variant": (["centered"], ["nope", "", "CENTERED"], []),
    "--homeostasis": (["native", "feedback"], ["x", ""], []),
    "--release": (["1.0", "equilibrium", "0.5"], ["abc", "nan", "-1", "inf"], []),
    "--runs": (["{tmp}/r2"], ["", "/dev/null", "/proc/aeqprop", "{fix}/file.txt", "{fix}/tiny.csv"], []),
    "--dataset": (
        ["iris"],
        [
            "nope",
            "{fix}/missing.csv",
            "{fix}/bad.csv",
            "{fix}",
            "/dev/null",
            "{fix}/empty.csv",
            "{fix}/nan.csv",
            "{fix}/one.csv",
            "",
        ],
        [],
    ),
    "--backend": (["hopfield"], ["nope", "", "instrument"], []),
    "--protocol": (
        ["aeqprop"],
        ["nope", "{fix}/exit.py:P", "{fix}/binary.py:P", "{fix}/missing.py:P", "{fix}/raise.py:P", ""],
        [],
    ),
    "--lr-schedule": (["cosine", "step"], ["x", "cosine:abc", "step:2,3"], []),
    "--fidelity-every": (["0", "5"], ["-1", "x"], []),
    "--wiring": ([], ["{fix}/missing.toml", "{fix}/tiny.csv", "/dev/null"], []),
}
AEQPROP_ONLY = ("--homeostasis", "--release", "--eps")


def _pick(rng: random.Random, pools: tuple[list, list, list]) -> tuple[str, str]:
    valid, invalid, suspect = pools
    options = [("valid", valid), ("invalid", invalid), ("suspect", suspect)]
    options = [(k, p) for k, p in options if p]
    weights = {"valid": 0.45, "invalid": 0.4, "suspect": 0.15}
    kind, pool = rng.choices(options, [weights[k] for k, _ in options])[0]
    return kind, rng.choice(pool)


def _combine(kinds: list[str]) -> str:
    if "invalid" in kinds:
        return "invalid"
    if "either" in kinds:
        return "either"
    return "suspect" if "suspect" in kinds else "valid"


def gen_flags(rng: random.Random) -> Case:
    argv, kinds = list(BASE), []
    chosen = rng.sample(sorted(FLAGS), rng.randint(1, 3))
    for flag in chosen:
        kind, value = _pick(rng, FLAGS[flag])
        argv += [flag, value]
        kinds.append(kind)
    if "--release" in chosen and "--lr-schedule" in chosen:
        kinds.append("either")  # a release to equilibrium cannot follow an lr schedule: refused, rightly
    if "--backend" not in chosen and rng.random() < 0.05:  # resistive: the default beta may not suit it
        argv += ["--backend", "resistive"]
        kinds.append("either")
    if rng.random() < 0.15:  # eqprop with a learning rate
        kind, value = _pick(rng, (["0.1", "0.01"], ["abc", "nan", "inf"], ["1e308", "1e-300", "-0.1"]))
        argv += ["--protocol", "eqprop", "--lr", value]
        if "--protocol" in chosen:  # the later --protocol wins: the earlier value is not used
            kinds[chosen.index("--protocol")] = "valid"
        kinds.append(kind)
        if any(f in chosen for f in AEQPROP_ONLY):
            kinds.append("either")  # an aeqprop option for eqprop is refused, rightly
    return Case("flags", argv, _combine(kinds), label=" ".join(argv[len(BASE) :]))


#: --set key -> kind of value it takes
SET_KEYS = {
    "schedule.epochs": "epochs",
    "schedule.batch_size": "posint",
    "seed": "seed",
    "dataset.seed": "seed",
    "dataset.test_fraction": "fraction",
    "substrate.options.hidden": "hidden",
    "substrate.options.eps": "eps",
    "substrate.options.tol": "eps",
    "protocol.options.beta": "beta",
    "protocol.options.variant": "variant",
    "evaluation.every": "natural",
    "checkpoint.every": "natural",
    "evaluation.fidelity_every": "natural",
    "nonideal.read_noise": "noise",
    "nonideal.seed": "seed",
    "nonideal.levels": "levels",
    "runs": "runs",
    "substrate.options.bogus": "unknown",
    "protocol.options.bogus": "unknown",
    "schedule.bogus": "unknown",
    "bogus": "unknown",
    "substrate.options.max_sweeps": "posint",
}
VALUES = [
    "0",
    "1",
    "2",
    "-1",
    "3.5",
    "4.7",
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "true",
    "false",
    '"abc"',
    "abc",
    "''",
    '""',
    "[]",
    "[1]",
    "[4.7]",
    "[1, 2]",
    "[0]",
    "[-3]",
    '["a"]',
    "{}",
    "{a = 1}",
    str(2**63),
    str(2**64),
    "1e-300",
    "1e300",
    "0.5",
    "0.1",
    "9" * 40,
    "[[1]]",
    "1979-05-27",
    '"\\u00e9\\u4e2d"',
    "0x10",
    "1_000",
]


def _set_oracle(kind: str, text: str) -> str:
    """valid / invalid / suspect for a value of a kind (a value as TOML parses it)."""
    import math

    from aeqprop.config import parse_value

    v = parse_value(text)
    is_int = isinstance(v, int) and not isinstance(v, bool)
    is_num = (is_int or isinstance(v, float)) and not isinstance(v, bool)
    finite = is_num and math.isfinite(v)
    if kind == "epochs":
        return "valid" if is_int and 1 <= v <= 2 else ("invalid" if not is_int or not 1 <= v <= 10**6 else "either")
    if kind == "posint":
        return "valid" if is_int and 1 <= v <= 1000 else ("invalid" if not is_int or v < 1 else "either")
    if kind == "natural":
        return "valid" if is_int and 0 <= v <= 1000 else ("invalid" if not is_int or v < 0 else "either")
    if kind == "seed":
        return "valid" if is_int and 0 <= v < 2**63 else "invalid"
    if kind == "fraction":
        return (
            "valid"
            if finite and 0 < v < 1 and 1 / v < 100
            else ("invalid" if not finite or not 0 < v < 1 else "either")
        )
    if kind == "hidden":
        ok = (is_int and v >= 1) or (
            isinstance(v, list) and v and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v)
        )
        sizes = v if isinstance(v, list) else [v]
        return ("valid" if all(h <= 64 for h in sizes) else "either") if ok else "invalid"
    if kind in ("eps", "beta"):
        if not finite:
            return "invalid"
        if 1e-4 <= v <= 1.5:
            return "valid"
        return "either" if 1.5 < v <= 10 else "suspect"  # centered beta >= 2 is refused, rightly
    if kind == "noise":
        return "valid" if finite and 0 <= v <= 0.1 else ("invalid" if not finite or v < 0 else "suspect")
    if kind == "levels":
        return "valid" if is_int and 2 <= v <= 10**6 else ("invalid" if not is_int or v < 2 else "either")
    if kind == "variant":
        return "valid" if v == "centered" else "invalid"
    if kind == "runs":
        return "invalid" if not isinstance(v, str) or not v.strip() else "either"
    return "invalid"


def gen_set(rng: random.Random) -> Case:
    argv, kinds, labels = list(BASE), {}, []
    for n in range(rng.randint(1, 2)):
        r = rng.random()
        if r < 0.06:
            text = rng.choice(["=5", "schedule.=1", "a..b=1", "noequals", ".x=1", "schedule.epochs", "=", " = "])
            kinds[f"malformed {n}"] = "invalid"
        else:
            key = rng.choice(sorted(SET_KEYS))
            value = rng.choice(VALUES)
            if key == "schedule.epochs" and value in ("1_000", "0x10"):
                value = "2"  # legitimate but long: not worth the fuzz's time
            text = f"{key}={value}"
            kinds[key] = _set_oracle(SET_KEYS[key], value)  # a key set twice: the last value counts
        argv += ["--set", text]
        labels.append(text)
    return Case("set", argv, _combine(list(kinds.values())), label=" ".join(labels))


GOOD_TOML = '# a run\nseed = 2\n[schedule]\nbatch_size = 5\n[protocol]\nname = "aeqprop"\noptions = { beta = 0.5 }\n'


def gen_toml(rng: random.Random) -> Case:
    r = rng.random()
    expect = "invalid"
    if r < 0.2:
        data = rng.randbytes(rng.randint(1, 400))
        label = "random bytes"
    elif r < 0.35:
        text = GOOD_TOML + "# caf\u00e9 \u4e2d\n"
        enc = rng.choice(["utf-16", "utf-16-le", "latin-1", "utf-32", "cp1252"])
        data = text.encode(enc, errors="replace")
        label = f"a valid config in {enc}"
    elif r < 0.45:
        data = GOOD_TOML.encode()
        if rng.random() < 0.5:
            data = b"\xef\xbb\xbf" + data
            label, expect = "UTF-8 with a BOM", "either"
        else:
            label, expect = "a valid config", "valid"
    elif r < 0.55:
        lines = GOOD_TOML.splitlines()
        i = rng.choice([k for k, line in enumerate(lines) if not line.startswith("#")])
        lines[i] = lines[i][: rng.randint(0, len(lines[i]))] + rng.choice(["[", "=", '"', "{", "]]", ""]) + " = = ["
        data = "\n".join(lines).encode()
        label = "a config cut and broken"
    else:  # random tables and values
        sections = ["schedule", "dataset", "substrate", "protocol", "evaluation", "checkpoint", "nonideal", "bogus"]
        keys = {
            "schedule": ["epochs", "batch_size", "bogus"],
            "dataset": ["name", "test_fraction", "seed"],
            "substrate": ["backend", "options", "wiring"],
            "protocol": ["name", "options"],
            "evaluation": ["every", "fidelity_every"],
            "checkpoint": ["every"],
            "nonideal": ["read_noise", "seed", "levels", "bogus"],
            "bogus": ["x"],
        }
        out, kinds = [], []
        for section in rng.sample(sections, rng.randint(1, 3)):
            out.append(f"[{section}]")
            for key in rng.sample(keys[section], rng.randint(1, len(keys[section]))):
                out.append(f"{key} = {rng.choice(VALUES)}")
            kinds.append("either")
        data = ("\n".join(out) + "\n").encode()
        label, expect = "random tables: " + "; ".join(out)[:80], "either"
    return Case("toml", BASE + ["{tmp}/run.toml"], expect, files={"run.toml": data}, label=label)


WEIGHTS = {"flags": 0.25, "set": 0.25, "toml": 0.15, "netlist": 0.1, "store": 0.15, "views": 0.1}


def cases(n: int, seed: int = 0, categories=CATEGORIES) -> list[Case]:
    from fuzz_files import gen_netlist, gen_store, gen_views  # they build on Case (imported here: no cycle)

    generators = {
        "flags": gen_flags,
        "set": gen_set,
        "toml": gen_toml,
        "netlist": gen_netlist,
        "store": gen_store,
        "views": gen_views,
    }
    rng = random.Random(seed)
    cats = [c for c in CATEGORIES if c in categories]
    return [generators[c](rng) for c in rng.choices(cats, [WEIGHTS[c] for c in cats], k=n)]
