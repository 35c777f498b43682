"""`aeqprop gradcheck --gdu`: per-step EqProp updates against BPTT, as a user runs it."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def aeqprop(*args):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result, fragment):
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_gdu_tables_and_figure(tmp_path):
    png = tmp_path / "gdu.png"
    result = aeqprop("gradcheck", "--gdu", "--layers", "10,12,4", "--batch-size", "4", "--k", "6", "--png", str(png))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "relative error" in out and "sign agreement" in out and "beta=0.001" in out
    header = next(line for line in out.splitlines() if "s1" in line and "W2" in line)
    assert [c for c in re.split(r"[┃│\s]+", header) if c] == ["t", "s1", "s2", "W1", "b1", "W2", "b2"]
    agreement = float(re.search(r"over the 6 steps with -g_BPTT over them: (\S+)%", out).group(1))
    assert 99.0 <= agreement <= 100.0
    worst = float(re.search(r"worst relative error (\S+);", out).group(1))
    assert 0 < worst < 1e-2
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_gdu_needs_a_discrete_time_backend():
    assert_one_line_error(aeqprop("gradcheck", "--gdu", "--backend", "hopfield"), "discrete-time substrate")
