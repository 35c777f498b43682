"""The console script builds its commands lazily: the same texts and results as typer's eager build."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import cli
from aeqprop.cli_lazy import LazyTyperInfo


def run(group, args: list[str]) -> tuple[str, str, object]:
    """stdout, stderr and exit status of ``aeqprop ARGS`` through ``group``."""
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            group.main(args, prog_name="aeqprop")
        except SystemExit as exc:
            code = exc.code
    return out.getvalue(), err.getvalue(), code


def every_help() -> list[list[str]]:
    """``--help`` of the top group, of every command and sub-group and of their commands; a group alone."""
    eager = typer.main.get_command(cli.app)
    assert isinstance(eager, typer.core.TyperGroup)
    calls = [["--help"], []]
    for name, command in eager.commands.items():
        calls.append([name, "--help"])
        if isinstance(command, typer.core.TyperGroup):
            calls.append([name])  # no_args_is_help: the group's help
            calls += [[name, sub, "--help"] for sub in command.commands]
    return calls


def test_every_help_text_and_usage_error_is_the_eager_builds():
    calls = every_help() + [
        ["trian"],
        ["runs", "lst"],
        ["--bogus"],
        ["backends", "list"],
        ["protocols", "show", "eqprop"],
    ]
    assert len(calls) > 30
    for args in calls:
        eager = run(typer.main.get_command(cli.app), args)
        assert run(cli.lazy_group(cli.app), args) == eager, args
    # the output compared is real: the listing names every command, a typo is answered with a suggestion
    top = run(cli.lazy_group(cli.app), ["--help"])[0]
    assert all(f"  {name} " in top for name in ("train", "gradcheck", "runs", "sweep", "serve-sim"))
    assert "Did you mean 'train'?" in run(cli.lazy_group(cli.app), ["trian"])[1]


@pytest.fixture
def builds(monkeypatch):
    """Names of the commands and groups typer builds, in order."""
    built: list[str] = []
    make_command, make_group = typer.main.get_command_from_info, typer.main.get_group_from_info

    def command(*args, **kw):  # typer passes command_info by keyword, lazy_group by position
        info = args[0] if args else kw["command_info"]
        built.append(info.name or info.callback.__name__)
        return make_command(*args, **kw)

    def group(*args, **kw):
        info = args[0] if args else kw["group_info"]
        built.append(f"group {info.name}" if isinstance(info.name, str) else "the top group")
        return make_group(*args, **kw)

    monkeypatch.setattr(typer.main, "get_command_from_info", command)
    monkeypatch.setattr(typer.main, "get_group_from_info", group)
    return built


def test_help_builds_no_command_and_a_command_builds_only_its_own(builds):
    run(cli.lazy_group(cli.app), ["--help"])
    assert builds == ["the top group"]
    builds.clear()
    out, _, code = run(cli.lazy_group(cli.app), ["backends", "list"])
    assert code == 0 and "hopfield" in out
    assert builds == ["the top group", "group backends", "list", "show"]  # the group typer builds whole
    builds.clear()
    run(typer.main.get_command(cli.app), ["--help"])
    assert len(builds) > 20  # the eager build, for scale


def test_main_runs_the_lazy_tree(monkeypatch, capsys, builds):
    monkeypatch.setattr(sys, "argv", ["aeqprop", "--help"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0 and builds == ["the top group"]
    usage, _, rest = capsys.readouterr().out.partition("\n")  # the program name click finds under pytest varies
    assert usage.endswith(" [OPTIONS] COMMAND [ARGS]...")
    assert rest == run(typer.main.get_command(cli.app), ["--help"])[0].partition("\n")[2]


def test_lazy_commands_is_a_mapping_in_insertion_order():
    made: list[str] = []

    def entry(name: str):
        def build():
            made.append(name)
            return typer.core.TyperCommand(name, help=f"{name} built")

        return build, lambda: typer.core.TyperCommand(name, help=f"{name} summary")

    commands = cli.LazyCommands({"b": entry("b"), "a": entry("a")})
    commands["c"] = typer.core.TyperCommand("c")
    assert list(commands) == ["b", "a", "c"] and len(commands) == 3 and made == []
    commands.listing = True
    assert commands["a"].help == "a summary" and made == []
    commands.listing = False
    assert commands["a"].help == "a built" and commands["a"] is commands["a"] and made == ["a"]
    del commands["b"]
    assert list(commands) == ["a", "c"] and "b" not in commands
    with pytest.raises(KeyError):
        commands["b"]


LAZY_PROBE = """
import json, runpy, sys
sys.argv = ["aeqprop", *sys.argv[1:]]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*args: str) -> set[str]:
    """The modules a fresh interpreter has imported after ``aeqprop ARGS``."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE, *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_a_group_module_is_imported_only_when_that_group_runs():
    lazy = {info.name: info.where[0] for info in cli.app.registered_groups if isinstance(info, LazyTyperInfo)}
    assert lazy["instruments"] == "drivers.commands"
    modules = set(lazy.values())
    top = imported_by("--help")
    assert "aeqprop.cli_lazy" in top and not modules & top
    assert not {"numpy", "drivers.cli_support", "aeqprop.session"} & top  # what the commands import when they run
    for name, module in lazy.items():
        group = imported_by(name, "--help")
        assert modules & group == {module}, name
        assert not {"dask", "distributed", "pyvisa", "serial", "matplotlib"} & group, name  # imported when asked for


def test_a_lazy_group_names_a_module_attribute_that_is_not_a_typer():
    info = LazyTyperInfo("aeqprop.cli_options", "parse_hidden", name="bad", help="a function, not a group")
    assert info.listing().help == "a function, not a group" and info.listing().name == "bad"
    with pytest.raises(
        TypeError, match=r"aeqprop\.cli_options\.parse_hidden is a function, not the group's typer\.Typer"
    ):
        _ = info.typer_instance
