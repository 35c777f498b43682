"""No traceback for any input: a seeded fuzz of the command line, and the table of outcomes.

Cases are generated from a seed in six categories: command-line flags of
``train``, ``--set`` values, TOML files (binary, other encodings, random
tables), netlists (mutations of examples/netlist_small.cir), damage to a run
store (random bytes, truncation, dropped tables, a changed input file) of a
completed, an interrupted or a crashed run (its last writes still in the WAL)
followed by a read or a resume, and the run-viewing commands (run ids, ``-o`` paths).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from fuzz_cases import CATEGORIES, Case, cases  # noqa: E402

COLUMNS = ("tried", "clean", "ran", "warned", "traceback", "silent", "refused valid", "lost or mixed")


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
    _crashed(folder / "store-interrupted", folder / "store-crashed")


def _crashed(source: Path, folder: Path) -> None:
    """The interrupted run's store as a killed writer leaves it: its last writes still in aeqprop.db-wal
    (copied while the writer's connection is open; closing it would fold them into the file)."""
    from aeqprop.store import DB_NAME, RunStore

    scratch = folder.with_name(folder.name + "-writer")
    shutil.copytree(source, scratch)
    writer = RunStore(scratch)
    try:
        writer.event(1, "note", "written by a process killed before it closed its store " * 40)
        folder.mkdir()
        for name in (DB_NAME, DB_NAME + "-wal"):
            shutil.copyfile(scratch / name, folder / name)
    finally:
        writer.close()
        shutil.rmtree(scratch)
    assert (folder / (DB_NAME + "-wal")).stat().st_size > 0


def _template(runs: Path, data: Path, kind: str) -> None:
    from aeqprop import session
    from aeqprop.config import validate

    cfg = validate(
        {
            "seed": 1,
            "runs": str(runs),
            "dataset": {"name": str(data)},
            "substrate": {"backend": "hopfield", "options": {"hidden": [3]}},
            "schedule": {"epochs": 2, "batch_size": 5},
            "checkpoint": {"every": 2},
            "evaluation": {"every": 3},
        }
    )
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


# -- running and judging ---------------------------------------------------------------


def _damage(db: Path, detail: tuple, fix: Path) -> None:
    kind, frac, size, seed = detail
    r = random.Random(seed)
    if kind == "bytes":
        data = bytearray(db.read_bytes())
        at = int(frac * max(1, len(data) - 100)) + 100
        data[at : at + size] = r.randbytes(min(size, max(0, len(data) - at)))
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
            table = r.choice(
                ["runs", "step_metrics", "epoch_metrics", "evaluations", "events", "checkpoints", "leases", "inputs"]
            )
            con.execute(f"DROP TABLE {table}")
        elif kind == "blob":
            blob = bytearray(con.execute("SELECT arrays FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()[0])
            blob[int(frac * (len(blob) - 1))] ^= 0xFF
            con.execute(
                "UPDATE checkpoints SET arrays = ? WHERE id = (SELECT MAX(id) FROM checkpoints)", (bytes(blob),)
            )
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
        what = (
            errors[0]
            if errors
            else (
                f"{type(result.exception).__name__}: {result.exception}"
                if escaped
                else (out.strip().splitlines() or ["(no output)"])[-1]
            )
        )[:160]
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
        import time

        slow = []
        for k, case in enumerate(cases(n, seed, categories), 1):
            t0 = time.perf_counter()
            verdict, what = run_case(case, fix, work)
            seconds = time.perf_counter() - t0
            if seconds > 5:
                slow.append(f"[{case.category}] {case.label[:90]}: {seconds:.0f} s")
            if show and k % 100 == 0:
                print(f"{k}/{n} cases", file=sys.stderr, flush=True)
            table[case.category]["tried"] += 1
            table[case.category][verdict] += 1
            if verdict in ("traceback", "silent", "refused valid", "lost or mixed"):
                examples.setdefault(verdict, []).append(f"[{case.category}] {case.label[:90]} -> {what}")
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    if slow:
        examples["slower than 5 s (not a failure)"] = slow
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
    table = run(args.cases, args.seed, tuple(args.category or CATEGORIES), show=args.show)
    print(f"python benchmarks/fuzz.py --cases {args.cases} --seed {args.seed}")
    print_table(table, args.show)


if __name__ == "__main__":
    main()
