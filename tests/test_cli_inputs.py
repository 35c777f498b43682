"""The inputs of issue 13's list, each refused in one line naming what to change, or run with a warning."""

import pytest
from typer.testing import CliRunner

import cli

TINY = ["--quiet", "--dataset", "iris", "--hidden", "4", "--epochs", "1"]


def invoke(*args):
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_line(result, code=2):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.exit_code == code and len(lines) == 1 and lines[0].startswith("error: "), (
        result.exit_code,
        result.stderr,
    )
    return lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seed", "-1"], "seed: must be >= 0"),
        (["--seed", str(2**63)], "seed: must be <= 9223372036854775807"),
        (["--set", "substrate.options.hidden=abc"], "options.hidden = 'abc': give layer sizes as positive integers"),
        (["--set", "substrate.options.hidden=[4.7]"], "options.hidden = [4.7]"),
        (["--set", "substrate.options.eps=abc"], "substrate.options.eps = 'abc': give a finite number or a table"),
        (["--set", "protocol.options.beta=big"], "protocol.options.beta = 'big': give a finite number"),
        (["--set", "protocol.options.beta=1e400"], "protocol.options.beta = inf: give a finite number"),
        (["--set", "schedule.epochs=true"], "schedule.epochs: input should be a valid integer (got True)"),
        (["--set", "nonideal.read_noise=false"], "nonideal.read_noise = false: give a number"),
        (["--hidden", ""], "--hidden '': give at least one layer size"),
        (["--hidden", "10000000"], "parameters need about"),
        (["--runs", ""], "runs: must not be empty"),
        (["--runs", "/dev/null"], "runs folder /dev/null is a file, not a folder"),
        (["--runs", "/proc/aeqprop-runs"], "cannot create the run store in /proc/aeqprop-runs"),
        (["--epochs", "abc"], "Invalid value for '--epochs'"),
        (["--augment", "crop"], "schedule.augment: input should be 'none' or 'flip'"),
        (["--augment", "flip"], "augment = 'flip' needs image data (C, H, W); this dataset has no image shape"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_hostile_train_inputs_are_one_line(tmp_path, args, fragment):
    base = TINY + ["--runs", str(tmp_path / "runs")]
    line = one_line(invoke("train", *base, *args))
    assert fragment in line, line


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("seed = 1\n# caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 14)"),
        ("seed = 1\n".encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0)"),
        (bytes(range(256)), "not UTF-8 text"),
    ],
)
def test_config_files_in_other_encodings_are_one_line(tmp_path, content, fragment):
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    assert fragment in one_line(invoke("train", str(path), *TINY))


def test_a_protocol_file_that_exits_on_import_is_one_line(tmp_path):
    path = tmp_path / "p.py"
    path.write_text("import sys\nsys.exit(3)\n")
    line = one_line(invoke("train", *TINY, "--runs", tmp_path / "runs", "--protocol", f"{path}:P"))
    assert "importing it raised SystemExit: 3" in line


def test_a_run_whose_step_underflows_says_it_did_not_learn(tmp_path):
    result = invoke("train", *TINY, "--runs", tmp_path / "runs", "--beta", "1e-300")
    assert result.exit_code == 0
    assert "warning: the run did not learn: best test accuracy" in result.stderr
    show = invoke("runs", "show", "1", "--runs", tmp_path / "runs")
    assert "warning: the run did not learn" in show.stdout
    healthy = invoke(
        "train", "--quiet", "--dataset", "iris", "--hidden", "8", "--epochs", "3", "--runs", tmp_path / "runs"
    )
    assert healthy.exit_code == 0 and "warning" not in healthy.stderr, healthy.stderr


def test_a_run_whose_relaxations_hit_the_sweep_cap_says_so(tmp_path):
    result = invoke("train", *TINY, "--runs", tmp_path / "runs", "--max-sweeps", "1", "--tol", "1e-12")
    assert result.exit_code == 0
    assert "relaxations ended unsettled at the sweep cap (epochs 1" in result.stderr, result.stderr
    show = invoke("runs", "show", "1", "--runs", tmp_path / "runs")
    assert "ended unsettled at the sweep cap" in show.stdout


def test_plot_and_export_outputs(tmp_path):
    runs = tmp_path / "runs"
    assert invoke("train", *TINY, "--runs", runs).exit_code == 0
    plain = invoke("plot", "1", "--runs", runs, "-o", tmp_path / "curves")
    assert plain.stdout.strip() == str(tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 1000
    assert "unknown image format .bogus; use one of" in one_line(
        invoke("plot", "1", "--runs", runs, "-o", tmp_path / "x.bogus")
    )
    assert "is a folder" in one_line(invoke("plot", "1", "--runs", runs, "-o", tmp_path))
    (tmp_path / "file").write_text("x")
    assert "is a file; export writes several files" in one_line(
        invoke("export", "1", "--runs", runs, "-o", tmp_path / "file")
    )
    assert "no run 9223372036854775808" in one_line(invoke("runs", "show", str(2**63), "--runs", runs))
    assert "runs folder" in one_line(invoke("runs", "list", "--runs", tmp_path / "file"))


def test_help_shows_defaults_and_protocols_show_lists_variants():
    helptext = invoke("train", "--help").stdout
    assert "[default: 512]" in helptext and "[default: the config's, runs]" in " ".join(helptext.split())
    shown = invoke("protocols", "show", "eqprop").stdout
    assert "variant (str): default 'centered'; one of centered, positive, negative, random-sign" in shown
    assert "needs of a substrate: eqprop" in shown
    assert "one of centered, optimistic, pessimistic" in invoke("protocols", "show", "aeqprop").stdout
    assert "capabilities: aeqprop, eqprop, homeostasis, oracle" in invoke("backends", "show", "hopfield").stdout
    assert "unknown protocol 'nope'" in one_line(invoke("protocols", "show", "nope"))


def test_a_second_ctrl_c_names_the_resume_command(tmp_path, monkeypatch):
    """A second Ctrl+C raises KeyboardInterrupt inside a step: one line, exit 1, and how to go on."""
    from aeqprop import trainer

    calls = {"n": 0}
    real = trainer.Trainer.run_epoch

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "run_epoch", interrupted)
    result = invoke("train", "--quiet", "--dataset", "iris", "--hidden", "4", "--epochs", "3", "--runs", tmp_path / "r")
    line = one_line(result, code=1)
    assert line == f"error: interrupted; continue it with `aeqprop resume 1 --runs {tmp_path / 'r'}`"
    monkeypatch.undo()
    assert invoke("resume", "1", "--runs", tmp_path / "r", "--quiet").exit_code == 0
