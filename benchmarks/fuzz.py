"""No traceback for any input: a seeded fuzz of the command line, and the table of outcomes.

Cases are generated from a seed in six categories: command-line flags of
``train``, ``--set`` values, TOML files (binary, other encodings, random
tables), netlists (mutations of examples/netlist_small.cir), damage to a run
store (random bytes, truncation, dropped tables, a changed input file) followed
by a read or a resume, and the run-viewing commands (run ids, ``-o`` paths).
Each case knows what it should get: ``valid`` (must run), ``invalid`` (must be
refused in one line), ``suspect`` (refused, or run with a warning) or ``either``.

Each case runs the CLI in this process (typer's test runner) on tiny data
(1 epoch), in its own temporary folder, and is sorted into:

- clean: refused with exactly one ``error:`` line (exit 1 or 2);
- ran: exit 0 on a valid input (or an ``either`` one);
- warned: exit 0 on a suspect input with a ``warning:`` line;
- traceback: an exception escaped, or the CLI's ``internal error`` (exit 3);
- silent: exit 0 on an invalid input, or on a suspect one without a warning;
- refused valid: a valid input refused (a false alarm);
- lost or mixed data: a refused command changed the store file, a command left
  a store that fails ``PRAGMA integrity_check``, or a resume accepted changed inputs.

    python benchmarks/fuzz.py [--cases 1200] [--seed 0] [--show 10]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CATEGORIES = ("flags", "set", "toml", "netlist", "store", "views")
COLUMNS = ("tried", "clean", "ran", "warned", "traceback", "silent", "refused valid", "lost or mixed")


@dataclass
class Case:
    category: str
    argv: list[str]  # "{tmp}" is the case's folder, "{fix}" the shared fixtures
    expect: str  # valid, invalid, suspect, either
    files: dict[str, bytes] = field(default_factory=dict)  # written into {tmp} before the run
    store: str | None = None  # "completed" / "interrupted": a store template copied to {tmp}/runs
    damage: tuple | None = None  # applied to the store copy
    label: str = ""


# -- fixtures ----------------------------------------------------------------------


def make_fixtures(folder: Path) -> None:
    """Tiny datasets, protocol files and store templates shared by every case."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (30, 4))
    y = np.arange(30) % 3
    np.savetxt(folder / "tiny.csv", np.column_stack([x, y]), delimiter=",", fmt="%.5f")
    x2 = rng.uniform(-1, 1, (20, 2))
    np.savetxt(folder / "tiny2.csv", np.column_stack([x2, (x2[:, 0] > 0).astype(int)]), delimiter=",", fmt="%.5f")
    (folder / "bad.csv").write_text("a,b,c\nx,y,z\n")
    (folder / "nan.csv").write_text("1,2,0\nnan,3,1\n")
    (folder / "empty.csv").write_text("")
    (folder / "one.csv").write_text("1,2,0\n")
    (folder / "exit.py").write_text("import sys\nsys.exit(3)\n")
    (folder / "binary.py").write_bytes(bytes(range(256)))
    (folder / "raise.py").write_text("raise RuntimeError('boom')\n")
    (folder / "file.txt").write_text("not a folder\n")
    (folder / "netlist.cir").write_bytes((ROOT / "examples" / "netlist_small.cir").read_bytes())
    for kind in ("completed", "interrupted"):
        _template(folder / f"store-{kind}", folder / "tiny.csv", kind)


def _template(runs: Path, data: Path, kind: str) -> None:
    from aeqprop import session
    from aeqprop.config import validate

    cfg = validate({"seed": 1, "runs": str(runs), "dataset": {"name": str(data)},
                    "substrate": {"backend": "hopfield", "options": {"hidden": [3]}},
                    "schedule": {"epochs": 2, "batch_size": 5}, "checkpoint": {"every": 2},
                    "evaluation": {"every": 3}})
    if kind == "interrupted":
        calls = {"n": 0}
        original = session.StopFlag.__call__

        def stop(self):
            calls["n"] += 1
            return calls["n"] == 4

        session.StopFlag.__call__ = stop
        try:
            session.start(cfg)
        finally:
            session.StopFlag.__call__ = original
    else:
        session.start(cfg)


# -- generators -----------------------------------------------------------------------

BASE = ["train", "--quiet", "--runs", "{tmp}/runs", "--dataset", "{fix}/tiny.csv", "--hidden", "3", "--epochs", "1",
        "--batch-size", "10"]

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
    "--dataset": (["iris"], ["nope", "{fix}/missing.csv", "{fix}/bad.csv", "{fix}", "/dev/null", "{fix}/empty.csv",
                             "{fix}/nan.csv", "{fix}/one.csv", ""], []),
    "--backend": (["hopfield"], ["nope", "", "instrument"], []),
    "--protocol": (["aeqprop"], ["nope", "{fix}/exit.py:P", "{fix}/binary.py:P", "{fix}/missing.py:P",
                                 "{fix}/raise.py:P", ""], []),
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
    return Case("flags", argv, _combine(kinds), label=" ".join(argv[len(BASE):]))


#: --set key -> kind of value it takes
SET_KEYS = {
    "schedule.epochs": "epochs", "schedule.batch_size": "posint", "seed": "seed", "dataset.seed": "seed",
    "dataset.test_fraction": "fraction", "substrate.options.hidden": "hidden", "substrate.options.eps": "eps",
    "substrate.options.tol": "eps", "protocol.options.beta": "beta", "protocol.options.variant": "variant",
    "evaluation.every": "natural", "checkpoint.every": "natural", "evaluation.fidelity_every": "natural",
    "nonideal.read_noise": "noise", "nonideal.seed": "seed", "nonideal.levels": "levels", "runs": "runs",
    "substrate.options.bogus": "unknown", "protocol.options.bogus": "unknown", "schedule.bogus": "unknown",
    "bogus": "unknown", "substrate.options.max_sweeps": "posint",
}
VALUES = ["0", "1", "2", "-1", "3.5", "4.7", "1e400", "-1e400", "nan", "inf", "true", "false", '"abc"', "abc", "''",
          '""', "[]", "[1]", "[4.7]", "[1, 2]", "[0]", "[-3]", '["a"]', "{}", "{a = 1}", str(2**63), str(2**64),
          "1e-300", "1e300", "0.5", "0.1", "9" * 40, "[[1]]", "1979-05-27", '"\\u00e9\\u4e2d"', "0x10", "1_000"]


def _set_oracle(kind: str, text: str) -> str:
    """valid / invalid / suspect for a value of a kind (a value as TOML parses it)."""
    import math

    from aeqprop.config import parse_value

    v = parse_value(text)
    is_int = isinstance(v, int) and not isinstance(v, bool)
    is_num = (is_int or isinstance(v, float)) and not isinstance(v, bool)
    finite = is_num and math.isfinite(v)
    if kind == "epochs":
        return "valid" if is_int and 1 <= v <= 2 else ("invalid" if not is_int or v < 1 else "either")
    if kind == "posint":
        return "valid" if is_int and 1 <= v <= 1000 else ("invalid" if not is_int or v < 1 else "either")
    if kind == "natural":
        return "valid" if is_int and 0 <= v <= 1000 else ("invalid" if not is_int or v < 0 else "either")
    if kind == "seed":
        return "valid" if is_int and 0 <= v < 2**63 else "invalid"
    if kind == "fraction":
        return "valid" if finite and 0 < v < 1 and 1 / v < 100 else ("invalid" if not finite or not 0 < v < 1 else "either")
    if kind == "hidden":
        ok = (is_int and v >= 1) or (isinstance(v, list) and v and all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v))
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
        text = GOOD_TOML + '# caf\u00e9 \u4e2d\n'
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
        keys = {"schedule": ["epochs", "batch_size", "bogus"], "dataset": ["name", "test_fraction", "seed"],
                "substrate": ["backend", "options", "wiring"], "protocol": ["name", "options"],
                "evaluation": ["every", "fidelity_every"], "checkpoint": ["every"],
                "nonideal": ["read_noise", "seed", "levels", "bogus"], "bogus": ["x"]}
        out, kinds = [], []
        for section in rng.sample(sections, rng.randint(1, 3)):
            out.append(f"[{section}]")
            for key in rng.sample(keys[section], rng.randint(1, len(keys[section]))):
                out.append(f"{key} = {rng.choice(VALUES)}")
            kinds.append("either")
        data = ("\n".join(out) + "\n").encode()
        label, expect = "random tables: " + "; ".join(out)[:80], "either"
    return Case("toml", BASE + ["{tmp}/run.toml"], expect, files={"run.toml": data}, label=label)


def gen_netlist(rng: random.Random) -> Case:
    base = (ROOT / "examples" / "netlist_small.cir").read_text().splitlines()
    argv = ["train", "--quiet", "--runs", "{tmp}/runs", "--backend", "netlist", "--netlist", "{tmp}/n.cir",
            "--dataset", "{fix}/tiny2.csv", "--epochs", "1", "--batch-size", "10"]
    r = rng.random()
    expect = "either"
    if r < 0.1:
        data, label, expect = rng.randbytes(rng.randint(1, 300)), "random bytes", "invalid"
    elif r < 0.18:
        data = "\n".join(base).replace("ground.", "ground \u00e9\u00e8.").encode(rng.choice(["latin-1", "utf-16"]))
        label, expect = "not UTF-8", "invalid"
    elif r < 0.25:
        data, label, expect = b"", "empty", "invalid"
    elif r < 0.3:
        data, label, expect = "\n".join(base).encode(), "the example", "valid"
    else:
        lines = list(base)
        mutations = []
        for _ in range(rng.randint(1, 3)):
            m = rng.choice(["value", "node", "dup", "output", "input", "drop", "token"])
            body = [i for i, l in enumerate(lines) if l and not l.startswith(("*", "."))]
            if not body:
                break
            i = rng.choice(body)
            parts = lines[i].split(";")[0].split()
            if m == "value" and len(parts) >= 4:
                parts[3] = rng.choice(["0", "-1", "1e400", "abc", "1e-400", "1meg", "nan", "inf", "1e999", "N=1e999"])
                expect = "invalid" if parts[3] in ("0", "-1", "1e400", "abc", "nan", "inf", "1e999") else expect
            elif m == "node" and len(parts) >= 3:
                parts[rng.choice([1, 2])] = rng.choice(["99999999999", "n" * 300, "0", "gnd", "x"])
            elif m == "dup":
                lines.append(lines[i])
                expect = "invalid"
            elif m == "output":
                lines = [l for l in lines if not l.startswith(".output")] + [rng.choice(
                    [".output o1 o1", ".output", ".output nowhere o2", ".output o1 o2 o1"])]
                expect = "invalid"
                continue
            elif m == "input" and parts[0].startswith("V"):
                parts[3] = rng.choice(["x40000000", "e*x0", "2*x", "x-1", "xx0", "*x0"])
                expect = "invalid"
            elif m == "drop":
                del lines[i]
                continue
            elif m == "token":
                parts.append(rng.choice(["train", "bogus", "IS=abc", "exp", "ideal", "=", "1e400"]))
            lines[i] = " ".join(parts)
            mutations.append(m)
        data = "\n".join(lines).encode()
        label = "mutated: " + ",".join(mutations)
    return Case("netlist", argv, expect, files={"n.cir": data}, label=label)


def gen_store(rng: random.Random) -> Case:
    kind = rng.choice(["completed", "interrupted"])
    command = rng.choice([["runs", "list"], ["runs", "show", "1"], ["export", "1", "-o", "{tmp}/out"],
                          ["plot", "1", "-o", "{tmp}/p.png"], ["resume", "1", "--quiet"], ["resume", "1", "--quiet"]])
    argv = command + ["--runs", "{tmp}/runs"]
    damage = rng.choice(["bytes", "bytes", "truncate", "zero", "drop", "blob", "version", "append", "none", "input"])
    detail = (damage, rng.random(), rng.randint(1, 16384), rng.randrange(2**32))
    resume_completed = command[0] == "resume" and kind == "completed"
    if damage == "none":
        expect = "invalid" if resume_completed else "valid"
    elif damage == "input":
        expect = "invalid" if command[0] == "resume" else ("valid" if damage == "input" else "either")
    elif damage == "append":
        expect = "either"
    else:
        expect = "invalid" if damage in ("zero", "drop", "version") or resume_completed else "either"
    return Case("store", argv, expect, store=kind, damage=detail, label=f"{damage} on a {kind} run, then "
                                                                             f"{' '.join(command)}")


#: -o of plot and export: what each should get (the run id aside)
PLOT_OUTPUTS = {"{tmp}/x.png": "valid", "{tmp}/x": "valid", "{tmp}/x.bogus": "invalid", "{fix}/file.txt": "invalid",
                "{fix}": "invalid", "/dev/null": "either", "/proc/x.png": "invalid", "{tmp}/sub/dir/x.svg": "valid",
                "{tmp}/": "invalid"}
EXPORT_OUTPUTS = {"{tmp}/x.png": "valid", "{tmp}/x": "valid", "{tmp}/x.bogus": "valid", "{fix}/file.txt": "invalid",
                  "{fix}": "valid", "/dev/null": "invalid", "/proc/x.png": "invalid", "{tmp}/sub/dir/x.svg": "valid",
                  "{tmp}/": "valid"}


def gen_views(rng: random.Random) -> Case:
    rid = rng.choice(["1", "1", "0", "-1", str(2**63), str(2**64), "abc", "", "1.0", " 1", "99", "1e3"])
    command = rng.choice(["show", "plot", "export", "resume"])
    output = rng.choice([None] + sorted(PLOT_OUTPUTS))
    argv = ["runs", "show", rid] if command == "show" else [command, rid]
    valid_id = rid.strip() == "1"
    expect = "valid" if valid_id else "invalid"
    if command in ("plot", "export") and output is not None:
        argv += ["-o", output]
        verdict = (PLOT_OUTPUTS if command == "plot" else EXPORT_OUTPUTS)[output]
        expect = "invalid" if verdict == "invalid" or expect == "invalid" else verdict
    if command == "resume":
        expect = "invalid"  # the template run is completed, or the id is wrong
    return Case("views", argv + ["--runs", "{tmp}/runs"], expect, store="completed", label=" ".join(argv))


GENERATORS = {"flags": gen_flags, "set": gen_set, "toml": gen_toml, "netlist": gen_netlist, "store": gen_store,
              "views": gen_views}
WEIGHTS = {"flags": 0.25, "set": 0.25, "toml": 0.15, "netlist": 0.1, "store": 0.15, "views": 0.1}


def cases(n: int, seed: int = 0, categories=CATEGORIES) -> list[Case]:
    rng = random.Random(seed)
    cats = [c for c in CATEGORIES if c in categories]
    return [GENERATORS[c](rng) for c in rng.choices(cats, [WEIGHTS[c] for c in cats], k=n)]


# -- running and judging ---------------------------------------------------------------


def _damage(db: Path, detail: tuple, fix: Path) -> None:
    kind, frac, size, seed = detail
    r = random.Random(seed)
    if kind == "bytes":
        data = bytearray(db.read_bytes())
        at = int(frac * max(1, len(data) - 100)) + 100
        data[at:at + size] = r.randbytes(min(size, max(0, len(data) - at)))
        db.write_bytes(bytes(data))
    elif kind == "truncate":
        data = db.read_bytes()
        db.write_bytes(data[: int(frac * len(data))])
    elif kind == "zero":
        db.write_bytes(b"")
    elif kind == "append":
        with open(db, "ab") as f:
            f.write(r.randbytes(size))
    elif kind in ("drop", "blob", "version"):
        con = sqlite3.connect(db)
        if kind == "drop":
            table = r.choice(["runs", "step_metrics", "epoch_metrics", "evaluations", "events", "checkpoints", "leases",
                              "inputs"])
            con.execute(f"DROP TABLE {table}")
        elif kind == "blob":
            blob = bytearray(con.execute("SELECT arrays FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()[0])
            blob[int(frac * (len(blob) - 1))] ^= 0xFF
            con.execute("UPDATE checkpoints SET arrays = ? WHERE id = (SELECT MAX(id) FROM checkpoints)", (bytes(blob),))
        else:
            con.execute("PRAGMA user_version = 99")
        con.commit()
        con.close()
    elif kind == "input":  # the run's data file changes (its path is the shared fixture: restored after)
        data = (fix / "tiny.csv").read_text().splitlines()
        data[0] = data[0][:-1] + ("1" if data[0][-1] != "1" else "2")
        (fix / "tiny.csv").write_text("\n".join(data) + "\n")


def run_case(case: Case, fix: Path, work: Path) -> tuple[str, str]:
    """(verdict, what happened in one line)."""
    from typer.testing import CliRunner

    import cli

    tmp = Path(tempfile.mkdtemp(dir=work))
    original_data = (fix / "tiny.csv").read_bytes()
    try:
        for name, data in case.files.items():
            (tmp / name).write_bytes(data)
        db = tmp / "runs" / "aeqprop.db"
        if case.store is not None:
            shutil.copytree(fix / f"store-{case.store}", tmp / "runs")
            if case.damage is not None:
                _damage(db, case.damage, fix)
        before = db.read_bytes() if db.exists() else None
        argv = [a.replace("{tmp}", str(tmp)).replace("{fix}", str(fix)) for a in case.argv]
        result = CliRunner().invoke(cli.app, argv)
        out, err = result.stdout, result.stderr
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        code = result.exit_code
        errors = [l for l in err.splitlines() if l.startswith("error:")]
        others = [l for l in err.splitlines() if l.strip() and not l.startswith(("error:", "warning:"))]
        what = (errors[0] if errors else (f"{type(result.exception).__name__}: {result.exception}" if escaped
                                          else (out.strip().splitlines() or ["(no output)"])[-1]))[:160]
        if escaped or code == 3 or "Traceback" in out + err:
            return "traceback", what
        lost = _lost(case, db, before, code)
        if lost:
            return "lost or mixed", lost
        if code == 0:
            warned = any(l.startswith("warning:") for l in err.splitlines())
            if case.expect in ("valid", "either"):
                return "ran", what
            if case.expect == "suspect":
                return ("warned" if warned else "silent"), what
            return "silent", what
        if len(errors) == 1 and not others and code in (1, 2):
            return ("refused valid" if case.expect == "valid" else "clean"), what
        return "traceback", f"exit {code}, not one line: {err.strip()[:120]}"
    finally:
        (fix / "tiny.csv").write_bytes(original_data)
        shutil.rmtree(tmp, ignore_errors=True)


def _lost(case: Case, db: Path, before: bytes | None, code: int) -> str | None:
    if case.store is None or before is None:
        return None
    if code != 0 and db.exists() and db.read_bytes() != before and case.damage[0] not in ("none", "input"):
        return "a refused command wrote into the damaged store"
    if case.damage and case.damage[0] == "input" and case.argv[0] == "resume" and code == 0:
        return "a resume accepted a changed data file"
    if code == 0 and case.argv[0] == "resume":
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            ok = False
        finally:
            con.close()
        if not ok:
            return "a resume left a store that fails integrity_check"
    return None


def run(n: int, seed: int = 0, categories=CATEGORIES, show: int = 0) -> dict[str, Counter]:
    """Generate and run ``n`` cases; per category, the count of each verdict (and ``tried``)."""
    table: dict[str, Counter] = {c: Counter() for c in categories}
    examples: dict[str, list] = {}
    work = Path(tempfile.mkdtemp(prefix="aeqprop-fuzz-"))
    cwd = os.getcwd()
    try:
        fix = work / "fixtures"
        fix.mkdir()
        make_fixtures(fix)
        os.chdir(work)  # a run's relative paths land here
        for case in cases(n, seed, categories):
            verdict, what = run_case(case, fix, work)
            table[case.category]["tried"] += 1
            table[case.category][verdict] += 1
            if verdict in ("traceback", "silent", "refused valid", "lost or mixed"):
                examples.setdefault(verdict, []).append(f"[{case.category}] {case.label[:90]} -> {what}")
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    table["_examples"] = examples  # type: ignore[assignment]
    return table


def print_table(table: dict, show: int = 10) -> None:
    examples = table.pop("_examples", {})
    print("| category | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    total = Counter()
    for category, counts in table.items():
        total.update(counts)
        print(f"| {category} | " + " | ".join(str(counts.get(c, 0)) for c in COLUMNS) + " |")
    print("| all | " + " | ".join(str(total.get(c, 0)) for c in COLUMNS) + " |")
    for verdict, items in examples.items():
        print(f"\n{verdict} ({len(items)}), first {min(show, len(items))}:")
        for item in items[:show]:
            print("  " + item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=10, help="examples listed per failing verdict")
    parser.add_argument("--category", action="append", choices=CATEGORIES, help="only these (repeatable)")
    args = parser.parse_args()
    table = run(args.cases, args.seed, tuple(args.category or CATEGORIES))
    print(f"python benchmarks/fuzz.py --cases {args.cases} --seed {args.seed}")
    print_table(table, args.show)


if __name__ == "__main__":
    main()
