"""Start-up time of `aeqprop --help` against `python -c "import aeqprop"` and `python -c pass`.

Each command is a fresh interpreter, run from the repository root (so this tree's code is the
one imported); the commands are run in turn, ``--repeats`` rounds, and the median wall time of each
is printed with its ratio to the other two. The ratios are the figures: contention on the
machine slows all alike. `python -c "import typer"` is shown as the floor of a typer CLI. Also lists which slow modules (pyvisa, serial, matplotlib, scipy,
dask) `aeqprop --help` imported: none is expected. Last, the time from the imports done to the help
printed, with typer's eager build of the command tree and with the console script's lazy one.

The bytecode of this tree's modules (cli.py, aeqprop/) is written first, as pip writes it for an
installed package (and as the warm-up round would, unless PYTHONDONTWRITEBYTECODE is set): the
installed packages (typer, ...) are timed with theirs, so the tree's are timed with its own.

    python benchmarks/startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW = ("pyvisa", "serial", "matplotlib", "scipy", "dask", "distributed")
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import aeqprop"': [sys.executable, "-c", "import aeqprop"],
    'python -c "import typer"': [sys.executable, "-c", "import typer"],  # the floor of any typer CLI
    "aeqprop --help": [sys.executable, "-m", "cli", "--help"],
    # the same with cli.py compiled from source at every start, as happens without its bytecode when
    # PYTHONDONTWRITEBYTECODE is set (not one of the figures: pip writes the bytecode at install)
    "aeqprop --help, no cli .pyc": [
        sys.executable,
        "-c",
        "import sys; sys.argv = ['cli.py', '--help']; "
        "exec(compile(open('cli.py').read(), 'cli.py', 'exec'), {'__name__': '__main__'})",
    ],
}


def wall(cmd: list[str]) -> float:
    """Seconds from start to exit of one command (its output discarded)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def compile_tree() -> None:
    """Write the bytecode of cli.py and aeqprop/ into their __pycache__ folders (compileall writes it
    whatever PYTHONDONTWRITEBYTECODE says)."""
    import compileall

    compileall.compile_file(str(ROOT / "cli.py"), quiet=1)
    compileall.compile_dir(str(ROOT / "aeqprop"), quiet=1)


def slow_imports() -> list[str]:
    """The slow top-level modules that `aeqprop --help` imports."""
    probe = (
        "import json, sys, runpy; sys.argv = ['aeqprop', '--help']\n"
        "try:\n    runpy.run_module('cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {SLOW!r} if m in sys.modules)), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stderr.strip().splitlines()[-1])


BUILD_PROBE = """
import contextlib, io, sys, time
import typer.main
import cli
t0 = time.perf_counter()
group = cli.lazy_group(cli.app) if sys.argv[1] == "lazy" else typer.main.get_command(cli.app)
with contextlib.redirect_stdout(io.StringIO()):
    try:
        group.main(["--help"], prog_name="aeqprop")
    except SystemExit:
        pass
print(time.perf_counter() - t0)
"""


def build_and_help(repeats: int) -> dict[str, float]:
    """Median s from the imports done to the help printed, each build in a fresh interpreter: typer's
    eager build of the whole tree, and the console script's lazy one (``cli.lazy_group``)."""
    times: dict[str, list[float]] = {"eager": [], "lazy": []}
    for _ in range(repeats):
        for kind in times:
            out = subprocess.run(
                [sys.executable, "-c", BUILD_PROBE, kind], cwd=ROOT, capture_output=True, text=True, check=True
            )
            times[kind].append(float(out.stdout.strip().splitlines()[-1]))
    return {kind: statistics.median(t) for kind, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="rounds of the commands (median taken)")
    args = parser.parse_args()
    compile_tree()
    for cmd in COMMANDS.values():  # warm the file cache
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    med = {name: statistics.median(t) for name, t in times.items()}
    base, imp = med["python -c pass"], med['python -c "import aeqprop"']
    print(f"start-up, median of {args.repeats} rounds")
    print(f"| {'command':<28} | {'median (ms)':>11} | {'/ python -c pass':>16} | {'/ import aeqprop':>16} |")
    print(f"|{'-' * 30}|{'-' * 13}|{'-' * 18}|{'-' * 18}|")
    for name, m in med.items():
        print(f"| {name:<28} | {1e3 * m:>11.0f} | {m / base:>16.2f} | {m / imp:>16.2f} |")
    print(f"aeqprop --help / import aeqprop: {med['aeqprop --help'] / imp:.2f} (aim 2.00 or less)")
    print(f"slow modules imported by aeqprop --help: {', '.join(slow_imports()) or 'none'}")
    build = build_and_help(args.repeats)
    print(f"\nbuilding the commands and printing the help, after the imports; median of {args.repeats}")
    print(f"| {'build':<46} | {'ms':>5} |")
    print(f"|{'-' * 48}|{'-' * 7}|")
    print(f"| {'eager: typer.main.get_command(app)':<46} | {1e3 * build['eager']:>5.1f} |")
    print(f"| {'lazy: cli.lazy_group(app), the console script':<46} | {1e3 * build['lazy']:>5.1f} |")


if __name__ == "__main__":
    main()
