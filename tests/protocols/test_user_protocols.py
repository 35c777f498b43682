"""User protocols from files: one that runs, and one clear line for each kind of broken file."""

import subprocess
import sys
from pathlib import Path

import pytest

from aeqprop import registry
from aeqprop.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]

GOOD = '''
import numpy as np
from protocols.eqprop import EqProp

class Half(EqProp):
    """EqProp at half the learning rate."""
    def __init__(self, lr=0.1, beta=0.5):
        super().__init__(beta=beta, lr=lr / 2)
'''

BROKEN = {
    "missing class": (
        "class Other:\n    requires = frozenset()\n    def step(self, s, x, y): pass\n",
        "Mine",
        "no class 'Mine' (it defines: Other)",
    ),
    "syntax error": ("class Mine:\n    def step(self, s, x, y)\n        pass\n", "Mine", "syntax error at line 2"),
    "wrong return": (
        "class Mine:\n    name = 'mine'\n    requires = frozenset()\n    def step(self, s, x, y):\n        return 0.5\n",
        "Mine",
        "step() returned float, not a StepReport",
    ),
    "missing capability": (
        "class Mine:\n    name = 'mine'\n    requires = frozenset({'aeqprop'})\n    def step(self, s, x, y):\n        pass\n",
        "Mine",
        "needs capabilities ['aeqprop']",
    ),
}


def aeqprop(*args):
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["missing class", "syntax error"])
def test_a_file_that_does_not_load_is_one_configuration_error_naming_it(case, tmp_path):
    source, cls, fragment = BROKEN[case]
    path = tmp_path / "user_protocol.py"
    path.write_text(source)
    with pytest.raises(ConfigurationError) as info:
        registry.load("protocols", f"{path}:{cls}")  # what the train command calls
    message = str(info.value)
    assert "\n" not in message and str(path) in message and fragment in message, message


@pytest.mark.parametrize("case", ["wrong return", "missing capability"])
def test_a_broken_protocol_file_is_one_line_naming_the_file(case, tmp_path):
    source, cls, fragment = BROKEN[case]
    path = tmp_path / "user_protocol.py"
    path.write_text(source)
    result = aeqprop(
        "train",
        "--protocol",
        f"{path}:{cls}",
        "--backend",
        "untied",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--runs",
        str(tmp_path / "runs"),
        "-q",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and fragment in lines[0], lines[0]


def test_a_protocol_file_loads_with_its_own_options(tmp_path):
    path = tmp_path / "half.py"
    path.write_text(GOOD)
    factory = registry.load("protocols", f"{path}:Half")
    protocol = factory(lr=0.3)
    assert protocol.name == f"{path}:Half"
    assert protocol.lr == pytest.approx(0.15)
    protocol.lr = 0.01  # schedules write through to the user's instance
    assert protocol.inner.lr == 0.01
    with pytest.raises(ConfigurationError, match="no such file"):
        registry.load_protocol(str(tmp_path / "absent.py:X"))


def test_the_example_protocol_trains_and_lists(tmp_path):
    result = aeqprop(
        "train",
        "--protocol",
        "examples/my_protocol.py:SignEqProp",
        "--hidden",
        "32",
        "--epochs",
        "1",
        "--runs",
        str(tmp_path / "runs"),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 50.0
    listing = aeqprop("protocols", "list")
    assert listing.returncode == 0
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert {"aeqprop", "eqprop", "continual", "coupled", "vector-field", "sgd-oracle"} <= set(lines)
    assert "Continual EqProp" in lines["continual"]
