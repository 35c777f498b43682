"""``aeqprop sweep run|resume|show|plot|export``: many runs from one file, on a local process pool or Dask.

The group's commands; ``cli.py`` adds the group (name and help) and this module is imported only when
one of them runs. Dask is imported only when a sweep asks for it (:func:`sweep_executor`).
"""

# No `from __future__ import annotations`: typer reads each command's signature (see cli.py).
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

import typer

from aeqprop.cli_errors import one_line_errors

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from aeqprop.sweep_exec import SweepReport

sweep_app = typer.Typer()

_RUNS_OF_FILE = typer.Option(None, help="Runs folder (default: the sweep file's, else its base config's, else runs).")
_WORKERS = typer.Option(None, help="Worker processes of the local pool or --cluster local (default: one per core).")
_SCHEDULER = typer.Option(None, help="A running Dask scheduler to run on, tcp://HOST:PORT (needs the dask extra).")
_CLUSTER = typer.Option(None, help="'local': a Dask LocalCluster of --workers processes on 127.0.0.1.")
_RETRIES = typer.Option(3, min=0, help="Times a run whose worker was lost is submitted again.")


def sweep_executor(
    workers: Optional[int], scheduler: Optional[str], cluster: Optional[str]
) -> Callable[[], "Executor"]:
    """A factory of the sweep's Executor: the local process pool, or Dask (imported only here)."""
    from aeqprop.errors import ConfigurationError

    if workers is not None and workers < 1:
        raise ConfigurationError(f"--workers {workers}: give at least 1")
    if scheduler is not None or cluster is not None:
        from aeqprop.dask_executor import DaskExecutor

        def make() -> "Executor":
            ex = DaskExecutor(scheduler=scheduler, cluster=cluster, workers=workers)
            where = f"dashboard {ex.dashboard}" if ex.dashboard else "no dashboard (install bokeh for one)"
            typer.echo(f"dask scheduler {ex.address}, {ex.workers} workers, {where}")
            return ex

        return make
    from aeqprop.sweep_exec import LocalPool

    return lambda: LocalPool(workers)


def report_sweep(sweep_id: int, report: "SweepReport", runs: str, quiet: bool) -> None:
    from aeqprop import sweep_views

    done = ", ".join(f"{n} {k}" for k, n in sorted(report.recorded.items())) or "no run"
    retried = f", {report.resubmitted} resubmitted after a lost worker" if report.resubmitted else ""
    if report.interrupted:
        typer.echo(
            f"sweep {sweep_id} interrupted after {report.seconds:.1f} s: {done} recorded{retried}; "
            f"continue it with `aeqprop sweep resume {sweep_id} --runs {runs}`"
        )
        raise typer.Exit(1)
    if not quiet:
        sweep_views.print_sweep(runs, str(sweep_id))
    typer.echo(f"sweep {sweep_id}: {done} in {report.seconds:.1f} s{retried}")


@sweep_app.command("run")
@one_line_errors
def sweep_run(
    sweep_file: str = typer.Argument(..., help="Sweep file (TOML), e.g. benchmarks/learning_rules.toml."),
    runs: Optional[str] = _RUNS_OF_FILE,
    workers: Optional[int] = _WORKERS,
    scheduler: Optional[str] = _SCHEDULER,
    cluster: Optional[str] = _CLUSTER,
    retries: int = _RETRIES,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no table."),
) -> None:
    """Expand a sweep file into runs and run them all, each recorded in the run store under the sweep's id."""
    from aeqprop.sweep import load_sweep
    from aeqprop.sweep_exec import SweepSettings, start_sweep

    sweep = load_sweep(sweep_file, runs)
    make = sweep_executor(workers, scheduler, cluster)
    sweep_id, report = start_sweep(
        sweep,
        make,
        SweepSettings(retries=retries),
        progress=not quiet,
        on_created=lambda sid: typer.echo(f"sweep {sid}: {len(sweep.jobs)} runs in {sweep.runs}"),
        one_at_a_time=workers == 1 and scheduler is None and cluster is None,
    )
    report_sweep(sweep_id, report, sweep.runs, quiet)


@sweep_app.command("resume")
@one_line_errors
def sweep_resume(
    sweep: str = typer.Argument(..., help="Sweep id."),
    runs: str = typer.Option("runs", help="Runs folder."),
    workers: Optional[int] = _WORKERS,
    scheduler: Optional[str] = _SCHEDULER,
    cluster: Optional[str] = _CLUSTER,
    retries: int = _RETRIES,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no table."),
) -> None:
    """Run the runs of a sweep that did not complete (never started, failed, lost, stopped)."""
    from aeqprop.sweep_exec import SweepSettings, resume_sweep

    make = sweep_executor(workers, scheduler, cluster)
    sweep_id, todo, report = resume_sweep(
        runs,
        sweep,
        make,
        SweepSettings(retries=retries),
        progress=not quiet,
        one_at_a_time=workers == 1 and scheduler is None and cluster is None,
    )
    if not todo:
        typer.echo(f"sweep {sweep_id}: every run already completed; nothing to resume")
        return
    typer.echo(f"sweep {sweep_id}: {todo} runs to go")
    report_sweep(sweep_id, report, runs, quiet)


@sweep_app.command("show")
@one_line_errors
def sweep_show(
    sweep: str = typer.Argument(..., help="Sweep id."),
    runs: str = typer.Option("runs", help="Runs folder."),
    markdown: bool = typer.Option(False, help="A Markdown table (for a README)."),
) -> None:
    """A table per point: final test accuracy, mean ± std over seeds, ranked (by validation accuracy where
    every point holds a validation split out), the best marked."""
    from aeqprop import sweep_views

    sweep_views.print_sweep(runs, sweep, markdown=markdown)


@sweep_app.command("plot")
@one_line_errors
def sweep_plot(
    sweep: str = typer.Argument(..., help="Sweep id."),
    runs: str = typer.Option("runs", help="Runs folder."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="PNG path (default: RUNS/sweep-ID.png)."),
) -> None:
    """PNG: final test accuracy against each swept axis, with the spread over seeds."""
    from aeqprop import sweep_views

    typer.echo(sweep_views.plot_sweep(runs, sweep, output))


@sweep_app.command("export")
@one_line_errors
def sweep_export(
    sweep: str = typer.Argument(..., help="Sweep id."),
    runs: str = typer.Option("runs", help="Runs folder."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="CSV path (default: RUNS/sweep-ID.csv)."),
) -> None:
    """CSV: one row per run of the sweep (point, seed, swept values, status, figures)."""
    from aeqprop import sweep_views

    typer.echo(sweep_views.export_sweep(runs, sweep, output))
