"""Runs through the command line: configs, the run store, runs list/show, plot, export."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PATIENCE

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
seed = 1
runs = "{runs}"
[dataset]
name = "iris"
[substrate]
backend = "hopfield"
options = {{ hidden = [8], eps = 0.1, tol = 1e-3 }}
[protocol]
name = "{protocol}"
[schedule]
epochs = {epochs}
batch_size = 8
[evaluation]
every = 5
[checkpoint]
every = 4
"""


def aeqprop(*args):
    """The command in this process (fast); the subprocess tests are in popen() and tests/aeqprop/test_resume.py."""
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    result.returncode = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def popen(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def small(tmp_path, protocol="aeqprop", epochs=3, name="run.toml"):
    path = tmp_path / name
    path.write_text(SMALL.format(runs=tmp_path / "runs", protocol=protocol, epochs=epochs))
    return path


def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs started at once on the same runs folder."""
    tmp = tmp_path_factory.mktemp("two")
    a, b = small(tmp, "aeqprop", name="a.toml"), small(tmp, "eqprop", epochs=4, name="b.toml")
    procs = [popen("train", str(a), "-q"), popen("train", str(b), "-q")]
    outs = [p.communicate(timeout=PATIENCE) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return tmp / "runs"


def test_two_runs_at_once_both_complete_and_are_listed(two_runs):
    result = aeqprop("runs", "list", "--runs", str(two_runs))
    assert result.returncode == 0, result.stderr
    rows = [l for l in result.stdout.splitlines() if "completed" in l]
    assert len(rows) == 2
    assert any("aeqprop" in r for r in rows) and any("eqprop" in r and "aeqprop" not in r for r in rows)
    assert all("iris" in r and "hopfield" in r and "%" in r for r in rows)


def eqprop_run(runs) -> int:
    from aeqprop.store import RunStore

    return next(r["id"] for r in RunStore(runs, create=False).runs() if r["protocol"] == "eqprop")


def test_runs_show_and_export(two_runs, tmp_path):
    rid = eqprop_run(two_runs)
    show = aeqprop("runs", "show", rid, "--runs", str(two_runs))
    assert show.returncode == 0, show.stderr
    assert "completed" in show.stdout and "4 epochs" in show.stdout and "closed" in show.stdout
    out = tmp_path / "export"
    result = aeqprop("export", rid, "--runs", str(two_runs), "-o", str(out))
    assert result.returncode == 0, result.stderr
    with open(out / "epochs.csv") as f:
        epochs = list(csv.DictReader(f))
    assert [int(e["epoch"]) for e in epochs] == [1, 2, 3, 4]
    with open(out / "steps.csv") as f:
        steps = list(csv.DictReader(f))
    assert len(steps) == 4 * 15  # 120 training samples of iris, batch 8
    data = json.loads((out / "run.json").read_text())
    assert data["run"]["protocol"] == "eqprop" and data["run"]["config"]["schedule"]["epochs"] == 4
    assert [e["test_accuracy"] for e in data["epoch_metrics"]] == [float(e["test_accuracy"]) for e in epochs]


def test_plot_writes_a_png_with_content(two_runs, tmp_path):
    import matplotlib.image

    path = tmp_path / "run.png"
    result = aeqprop("plot", eqprop_run(two_runs), "--runs", str(two_runs), "-o", str(path))
    assert result.returncode == 0, result.stderr
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 300
    rgb = image[..., :3]
    not_white = np.mean(np.any(rgb < 0.9, axis=-1))
    assert 0.01 < not_white < 0.6  # axes, curves and text, on a mostly white page
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # several colours, not a flat image


def test_malformed_config_one_line_and_nothing_written(tmp_path):
    path = small(tmp_path)
    path.write_text(path.read_text().replace("epochs = 3", "epochs = 0"))
    one_line_error(aeqprop("train", str(path)), "schedule.epochs: must be >= 1")
    path.write_text(path.read_text().replace("epochs = 0", "epochs = 3\nlearning_rate = 2"))
    one_line_error(aeqprop("train", str(path)), "schedule.learning_rate: unknown field", "valid: epochs, batch_size")
    one_line_error(
        aeqprop("train", str(small(tmp_path)), "--set", "protocol.name=backprop"),
        "unknown protocol 'backprop'",
        "aeqprop",
        "eqprop",
        "sgd-oracle",
    )
    one_line_error(
        aeqprop("train", str(small(tmp_path)), "--set", "substrate.backend=nope"),
        "unknown backend 'nope'; valid:",
        "hopfield",
    )
    one_line_error(aeqprop("train", str(small(tmp_path)), "--batch-size", "0"), "schedule.batch_size: must be >= 1")
    assert not (tmp_path / "runs").exists()


def test_overrides_reach_the_run(tmp_path):
    result = aeqprop("train", str(small(tmp_path)), "-q", "--set", "schedule.epochs=1", "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert "after 1 epochs" in result.stdout
    show = aeqprop("runs", "show", "1", "--runs", str(tmp_path / "runs"))
    # the config is one line of JSON whatever the runs folder's length (a copy of it is a config)
    config = json.loads(next(l for l in show.stdout.splitlines() if l.startswith("config: "))[len("config: ") :])
    assert config["schedule"]["epochs"] == 1 and config["seed"] == 5


def test_a_corrupted_database_is_named_and_other_folders_stay_readable(two_runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "aeqprop.db").write_bytes(b"\x00garbage" * 512)
    one_line_error(aeqprop("runs", "list", "--runs", str(broken)), "is not a run store", "not an SQLite file")
    assert aeqprop("runs", "list", "--runs", str(two_runs)).returncode == 0
    one_line_error(aeqprop("plot", "7", "--runs", str(two_runs)), "no run 7", "runs: 1, 2")
