"""The ``aeqprop`` command line: the app, its top-level commands, and its command groups by module.

Every command validates its input before it opens anything; an AeqpropError is
printed as one line and exits with status 2 (1 for an interrupted run; see aeqprop.cli_errors).
Heavy imports are deferred so that ``aeqprop --help`` starts fast: each group (``aeqprop/cli_*.py``,
``drivers/commands.py``) is imported only when one of its commands runs (see aeqprop.cli_lazy).
"""

# No `from __future__ import annotations`: typer reads every command's signature at start-up, and
# string annotations cost it an eval each (a third of the time `aeqprop --help` spends past its imports).
# Annotations naming types imported under TYPE_CHECKING are therefore quoted.
from typing import TYPE_CHECKING, Optional

import typer

from aeqprop.cli_errors import one_line_errors, resume_command
from aeqprop.cli_lazy import LazyCommands as LazyCommands  # re-exported: tests and benchmarks use cli.LazyCommands
from aeqprop.cli_lazy import OneLineGroup, add_lazy_group, lazy_group
from aeqprop.cli_options import parse_hidden, parse_release, parse_schedule

if TYPE_CHECKING:
    from aeqprop.session import Outcome

app = typer.Typer(
    cls=OneLineGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts hold literal [default: ...]; rich markup would eat them
    help="Train physical systems by (agnostic) equilibrium propagation.",
)


@app.command()
@one_line_errors
def train(
    config: Optional[str] = typer.Argument(None, help="Run config (TOML); without it the built-in default run."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one config field, e.g. --set schedule.epochs=5 (repeatable)."
    ),
    runs: Optional[str] = typer.Option(None, help="Runs folder holding the run store [default: the config's, runs]."),
    dataset: Optional[str] = typer.Option(
        None,
        help="Bundled dataset (digits, iris, wine, breast_cancer), a named one (mnist, fashion-mnist, kmnist, emnist-SPLIT, cifar10, cifar100; see `aeqprop data list`) or a .csv/.npz path [default: digits].",
    ),
    data_dir: Optional[str] = typer.Option(
        None, help="Folder of the named datasets [default: $AEQPROP_DATA, ~/.cache/aeqprop/datasets, system folders]."
    ),
    backend: Optional[str] = typer.Option(None, help="Simulated substrate by name [default: hopfield]."),
    wiring: Optional[str] = typer.Option(
        None, help="Train instruments wired as in this map (TOML; see docs/hardware.md)."
    ),
    netlist: Optional[str] = typer.Option(None, help="Netlist file of the circuit for --backend netlist."),
    hidden: Optional[str] = typer.Option(None, help="Hidden layer sizes, comma-separated [default: 512]."),
    protocol: Optional[str] = typer.Option(
        None, help="Training protocol by name, or a file: path/to/file.py:ClassName [default: aeqprop]."
    ),
    variant: Optional[str] = typer.Option(None, help="Nudging variant of the protocol [default: centered]."),
    beta: Optional[float] = typer.Option(
        None, help="Nudging strength b [default: the protocol's, 1.0 for aeqprop, 0.5 for eqprop]."
    ),
    eps: Optional[float] = typer.Option(None, help="Aeqprop coupling compliance eps (the substrate's) [default: 0.1]."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of EqProp and oracle SGD [default: 0.1]."),
    homeostasis: Optional[str] = typer.Option(None, help="Aeqprop homeostasis: native or feedback [default: native]."),
    release: Optional[str] = typer.Option(
        None, help="Aeqprop release: a duration (1.0 = one parameter update) or 'equilibrium' [default: 1.0]."
    ),
    epochs: Optional[int] = typer.Option(None, help="Passes over the training split [default: 30]."),
    batch_size: Optional[int] = typer.Option(None, help="Samples per step [default: 16]."),
    seed: Optional[int] = typer.Option(
        None, help="Seed of the split, the initial parameters and the data order [default: 0]."
    ),
    test_fraction: Optional[float] = typer.Option(None, help="Held-out fraction for the test accuracy [default: 0.2]."),
    tol: Optional[float] = typer.Option(
        None, help="Relaxation tolerance: largest unit change in a sweep [default: 1e-3]."
    ),
    max_sweeps: Optional[int] = typer.Option(None, help="Relaxation sweep cap per phase [default: 100; conv: 1000]."),
    lr_schedule: Optional[str] = typer.Option(
        None, help="Learning-rate schedule: constant, step[:0.5,0.75[:0.1]], cosine[:END], exponential[:END]."
    ),
    beta_schedule: Optional[str] = typer.Option(None, help="Beta schedule, written as --lr-schedule (must stay > 0)."),
    hold_step: Optional[bool] = typer.Option(
        None, "--hold-step", help="Aeqprop in simulation: divide eps by beta's factor, so the step eps b holds."
    ),
    augment: Optional[str] = typer.Option(
        None, help="Training images mirrored left-right with probability 1/2: none or flip [default: none]."
    ),
    fidelity_every: Optional[int] = typer.Option(
        None, help="Steps between measurements of the update's cosine with the oracle gradient (simulation; 0: never)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a substrate and record the run; by default centered Aeqprop on a 64-512-10 Hopfield network on digits."""
    from aeqprop import session
    from aeqprop.config import load_config

    if wiring is not None:
        backend = backend or "instrument"
        batch_size = batch_size or 1  # instruments settle one sample at a time
    flags = {
        "runs": runs,
        "dataset.name": dataset,
        "dataset.data_dir": data_dir,
        "substrate.backend": backend,
        "protocol.name": protocol,
        "substrate.wiring": wiring,
        "substrate.options.netlist": netlist,
        "protocol.options.variant": variant,
        "protocol.options.beta": beta,
        "substrate.options.eps": eps,
        "protocol.options.lr": lr,
        "protocol.options.homeostasis": homeostasis,
        "protocol.options.release": None if release is None else parse_release(release),
        "schedule.epochs": epochs,
        "schedule.batch_size": batch_size,
        "seed": seed,
        "dataset.test_fraction": test_fraction,
        "substrate.options.tol": tol,
        "substrate.options.max_sweeps": max_sweeps,
        "substrate.options.hidden": None if hidden is None else list(parse_hidden(hidden)),
        "schedule.lr": parse_schedule(lr_schedule, "--lr-schedule"),
        "evaluation.fidelity_every": fidelity_every,
        "schedule.beta": parse_schedule(beta_schedule, "--beta-schedule"),
        "schedule.hold_step": hold_step,
        "schedule.augment": augment,
    }
    cfg = load_config(config, overrides=set_, fields={k: v for k, v in flags.items() if v is not None})
    outcome = session.start(cfg, progress=not quiet, on_created=lambda rid: typer.echo(f"run {rid} in {cfg.runs}"))
    report_outcome(outcome, cfg.schedule.epochs, cfg.runs)


def report_outcome(outcome: "Outcome", epochs: int, runs: str | None = None) -> None:
    """One line for the end of a run (and its warnings on stderr); an interrupted run exits with status 1."""
    result = outcome.result
    if outcome.status == "interrupted":
        typer.echo(f"run {outcome.run_id} interrupted; continue it with `{resume_command(outcome.run_id, runs)}`")
        raise typer.Exit(1)
    for message in getattr(outcome, "warnings", ()):
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    final = result.final
    typer.echo(
        f"test accuracy {final.test_accuracy:.2%} after {epochs} epochs "
        f"(train {final.train_accuracy:.2%}, best test {result.best_test_accuracy:.2%}, "
        f"{outcome.step_seconds + outcome.store_seconds:.1f} s, run {outcome.run_id})"
    )


@app.command()
@one_line_errors
def resume(
    run: str = typer.Argument(..., help="Run id (see `aeqprop runs list`)."),
    runs: str = typer.Option("runs", help="Runs folder holding the run store."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Continue a run from its last checkpoint; it ends as if it had never stopped."""
    from aeqprop import session

    warn = lambda message: typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)  # noqa: E731
    outcome = session.resume(runs, run, progress=not quiet, on_warning=warn)
    report_outcome(outcome, outcome.result.history[-1].epoch if outcome.result.history else 0, runs)


@app.command()
@one_line_errors
def plot(
    run: str = typer.Argument(..., help="Run id."),
    runs: str = typer.Option("runs", help="Runs folder."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="PNG path [default: <runs>/run-<id>.png]."),
) -> None:
    """PNG of a run: loss and accuracy per epoch, relaxation sweeps per phase, parameter norms, gradient fidelity."""
    from aeqprop import views

    typer.echo(views.plot_run(runs, run, output))


@app.command()
@one_line_errors
def export(
    run: str = typer.Argument(..., help="Run id."),
    runs: str = typer.Option("runs", help="Runs folder."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", help="Folder for the files [default: <runs>/run-<id>]."
    ),
) -> None:
    """A run as CSV files (steps, epochs, evaluations, events) and one JSON file (config and everything)."""
    from aeqprop import views

    for path in views.export_run(runs, run, output):
        typer.echo(path)


@app.command()
@one_line_errors
def gradcheck(
    protocol: str = typer.Option("aeqprop", help="Protocol whose update is checked."),
    variant: str = typer.Option("centered"),
    beta: Optional[float] = typer.Option(None, help="Nudging strength b [default: 0.01; 1e-3 with --gdu]."),
    eps: float = typer.Option(1e-3),
    lr: float = typer.Option(1e-3),
    homeostasis: str = typer.Option("native"),
    release: str = typer.Option("1.0"),
    backend: Optional[str] = typer.Option(None, help="Simulated substrate [default: hopfield; discrete with --gdu]."),
    layers: str = typer.Option("20,30,5", help="All layer sizes, inputs first."),
    batch_size: int = typer.Option(8),
    entries: int = typer.Option(40, help="Entries per tensor checked by finite differences."),
    seed: int = typer.Option(0),
    gdu: bool = typer.Option(
        False, "--gdu", help="Per-step EqProp updates against per-step BPTT gradients (discrete-time backend)."
    ),
    k: int = typer.Option(10, "--k", help="With --gdu: nudged time steps compared."),
    png: str = typer.Option("gdu.png", "--png", help="With --gdu: where the figure is written."),
) -> None:
    """Compare a protocol's update with -lr grad L (oracle), and the oracle with finite differences.

    With --gdu: EqProp's per-step updates of the nudged phase against BPTT's per-step gradients
    (Ernoult et al. 2019), as tables of relative error and sign agreement per layer and step, and a PNG."""
    from sim_backends.gradcheck import gdu_table, oracle_table

    sizes = parse_hidden(layers)
    if gdu:
        return gdu_table(
            backend or "discrete", sizes, variant, 1e-3 if beta is None else beta, k, batch_size, seed, png
        )
    beta = 0.01 if beta is None else beta
    oracle_table(
        protocol, variant, beta, eps, lr, homeostasis, release, backend or "hopfield", sizes, batch_size, entries, seed
    )


@app.command("serve-sim")
@one_line_errors
def serve_sim(
    backend: str = typer.Option("hopfield", help="Simulated substrate behind the instruments."),
    layers: str = typer.Option("4,5,3", help="Layer sizes of the simulated substrate, inputs first."),
    port: int = typer.Option(5025, help="TCP port of the SCPI server on 127.0.0.1 (0: any free port)."),
    serial: bool = typer.Option(True, help="Also serve the board protocol on a pseudo-terminal."),
    delay: float = typer.Option(0.0, help="Fault: reply delay in s."),
    drop: float = typer.Option(0.0, help="Fault: probability of a dropped reply."),
    garble: float = typer.Option(0.0, help="Fault: probability of a garbled reply."),
    disconnect: float = typer.Option(0.0, help="Fault: probability of a disconnect per exchange."),
    compliance_trip: float = typer.Option(0.0, help="Fault: probability of a compliance trip."),
    settle: float = typer.Option(0.0, help="Fault: extra settling time in s."),
    seed: int = typer.Option(0, help="Seed of the substrate and of the faults."),
    wiring_out: Optional[str] = typer.Option(None, help="Write a wiring map for the served instruments here."),
) -> None:
    """Serve a simulated substrate as instruments: SCPI over TCP (loopback) and a serial board, until Ctrl+C."""
    from sim_backends.virtual_lab import Faults, serve

    options = {"layers": list(parse_hidden(layers)), "max_batch": 1, "seed": seed}
    faults = Faults(
        delay=delay,
        drop=drop,
        garble=garble,
        disconnect=disconnect,
        compliance_trip=compliance_trip,
        settle=settle,
        seed=seed,
    )
    serve(backend, options, port=port, serial=serial, faults=faults, wiring_out=wiring_out, echo=typer.echo)


# The command groups, in the order the help lists them (after the commands above). Each group's module
# is imported only when one of its commands runs; the name and help here are what the help lists.
add_lazy_group(
    app,
    "protocols",
    "aeqprop.cli_registry",
    "protocols_app",
    help="Training protocols: built in, and added by installed packages.",
    no_args_is_help=True,
)
add_lazy_group(
    app,
    "backends",
    "aeqprop.cli_registry",
    "backends_app",
    help="Simulated substrates: built in, and added by installed packages.",
    no_args_is_help=True,
)
add_lazy_group(
    app,
    "data",
    "aeqprop.cli_data",
    "data_app",
    help="Named datasets (MNIST family, CIFAR): where they are, and downloading them.",
    no_args_is_help=True,
)
add_lazy_group(
    app,
    "runs",
    "aeqprop.cli_runs",
    "runs_app",
    help="Look at the runs recorded in a runs folder.",
    no_args_is_help=True,
)
add_lazy_group(
    app,
    "instruments",
    "drivers.commands",
    "instruments_app",
    help="Find, probe and check instruments (nothing here changes an output).",
    no_args_is_help=True,
)
add_lazy_group(
    app,
    "sweep",
    "aeqprop.cli_sweep",
    "sweep_app",
    help="Sweeps: many runs from one file, on a local process pool or a Dask cluster.",
    no_args_is_help=True,
)


def main() -> None:
    """The console script ``aeqprop``: ``app``, each command built when it runs (see :func:`lazy_group`)."""
    lazy_group(app)()


if __name__ == "__main__":
    main()
