"""``aeqprop runs list|show``: the runs recorded in a runs folder.

The group's commands; ``cli.py`` adds the group (name and help) and this module is imported only when
one of them runs. (``aeqprop plot`` and ``export``, top-level commands, are in ``cli.py``.)
"""

# No `from __future__ import annotations`: typer reads each command's signature (see cli.py).
import typer

from aeqprop.cli_errors import one_line_errors

runs_app = typer.Typer()


@runs_app.command("list")
@one_line_errors
def runs_list(runs: str = typer.Option("runs", help="Runs folder holding the run store.")) -> None:
    """A table of runs: id, status, dataset, backend, protocol, best accuracy, duration."""
    from aeqprop import views

    views.print_runs(runs)


@runs_app.command("show")
@one_line_errors
def runs_show(
    run: str = typer.Argument(..., help="Run id."), runs: str = typer.Option("runs", help="Runs folder.")
) -> None:
    """A run's config, metrics summary and events."""
    from aeqprop import views

    views.print_run(runs, run)
