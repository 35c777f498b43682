"""The cases of benchmarks/fuzz.py that bring files: a mutated netlist, a damaged run store and the
views (show, plot, export, resume) of a stored run; the command-line cases are in fuzz_cases.py."""

from __future__ import annotations

import random

from fuzz_cases import ROOT, Case


def gen_netlist(rng: random.Random) -> Case:
    base = (ROOT / "examples" / "netlist_small.cir").read_text().splitlines()
    argv = [
        "train",
        "--quiet",
        "--runs",
        "{tmp}/runs",
        "--backend",
        "netlist",
        "--netlist",
        "{tmp}/n.cir",
        "--dataset",
        "{fix}/tiny2.csv",
        "--epochs",
        "1",
        "--batch-size",
        "10",
    ]
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
            elif m == "dup":  # a second element of the same name, before .end (SPICE ignores what follows it)
                lines.insert(i + 1, lines[i])
                expect = "invalid"
            elif m == "output":
                lines = [l for l in lines if not l.startswith(".output")] + [
                    rng.choice([".output o1 o1", ".output", ".output nowhere o2", ".output o1 o2 o1"])
                ]
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
    kind = rng.choice(["completed", "interrupted", "crashed"])  # crashed: interrupted, its last writes in the WAL
    command = rng.choice(
        [
            ["runs", "list"],
            ["runs", "show", "1"],
            ["export", "1", "-o", "{tmp}/out"],
            ["plot", "1", "-o", "{tmp}/p.png"],
            ["resume", "1", "--quiet"],
            ["resume", "1", "--quiet"],
        ]
    )
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
    return Case(
        "store", argv, expect, store=kind, damage=detail, label=f"{damage} on a {kind} run, then {' '.join(command)}"
    )


#: -o of plot and export: what each should get (the run id aside)
PLOT_OUTPUTS = {
    "{tmp}/x.png": "valid",
    "{tmp}/x": "valid",
    "{tmp}/x.bogus": "invalid",
    "{fix}/file.txt": "invalid",
    "{fix}": "invalid",
    "/dev/null": "either",
    "/proc/x.png": "invalid",
    "{tmp}/sub/dir/x.svg": "valid",
    "{tmp}/": "invalid",
}
EXPORT_OUTPUTS = {
    "{tmp}/x.png": "valid",
    "{tmp}/x": "valid",
    "{tmp}/x.bogus": "valid",
    "{fix}/file.txt": "invalid",
    "{fix}": "valid",
    "/dev/null": "invalid",
    "/proc/x.png": "invalid",
    "{tmp}/sub/dir/x.svg": "valid",
    "{tmp}/": "valid",
}


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
