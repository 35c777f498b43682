"""The ``aeqprop`` command line.

Every command validates its input before it opens anything; an AeqpropError is
printed as one line and exits with status 2 (1 for an interrupted run).
Heavy imports are deferred so that ``aeqprop --help`` starts fast.
"""

from __future__ import annotations

import functools
import sys
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train physical systems by (agnostic) equilibrium propagation.",
)


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def one_line_errors(func):
    """Turn an AeqpropError into one line on stderr and a non-zero exit, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from aeqprop.errors import AeqpropError

        try:
            return func(*args, **kwargs)
        except AeqpropError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            fail("interrupted", code=1)

    return wrapper


def parse_hidden(hidden: str) -> tuple[int, ...]:
    from aeqprop.errors import ConfigurationError

    try:
        sizes = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        raise ConfigurationError(f"--hidden {hidden!r}: give hidden layer sizes as integers, e.g. 256 or 128,64") from None
    if any(h < 1 for h in sizes):
        raise ConfigurationError(f"--hidden {hidden!r}: layer sizes must be >= 1")
    return sizes


def parse_release(release: str) -> float | str:
    from aeqprop.errors import ConfigurationError

    if release in ("equilibrium", "joint"):
        return "equilibrium"
    try:
        return float(release)
    except ValueError:
        raise ConfigurationError(f"--release {release!r}: give a duration (e.g. 1.0) or 'equilibrium'") from None


def build_protocol(name: str, **options):
    """A protocol from the registry, given only the options its constructor takes."""
    return _build("protocols", name, options)


def _build(kind: str, name: str, options: dict):
    """Call the factory registered under ``name`` with the options it accepts."""
    import inspect

    from aeqprop import registry

    factory = registry.load(kind, name)
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(factory).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        options = {k: v for k, v in options.items() if k in accepted}
    return factory(**options)


@app.command()
@one_line_errors
def train(
    dataset: str = typer.Option("digits", help="Bundled dataset (digits, iris, wine, breast_cancer) or a .csv/.npz path."),
    backend: str = typer.Option("hopfield", help="Simulated substrate by name."),
    hidden: str = typer.Option("512", help="Hidden layer sizes, comma-separated."),
    protocol: str = typer.Option("aeqprop", help="Training protocol by name."),
    variant: str = typer.Option("centered", help="Nudging variant of the protocol."),
    beta: Optional[float] = typer.Option(None, help="Nudging strength b [default: the protocol's, 1.0 for aeqprop, 0.5 for eqprop]."),
    eps: float = typer.Option(0.1, help="Aeqprop coupling compliance eps (the substrate's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of EqProp and oracle SGD [default: 0.1]."),
    homeostasis: str = typer.Option("native", help="Aeqprop homeostasis: native or feedback."),
    release: str = typer.Option("1.0", help="Aeqprop release: a duration (1.0 = one parameter update) or 'equilibrium'."),
    epochs: int = typer.Option(30, help="Passes over the training split."),
    batch_size: int = typer.Option(16, help="Samples per step."),
    seed: int = typer.Option(0, help="Seed of the split, the initial parameters and the data order."),
    test_fraction: float = typer.Option(0.2, help="Held-out fraction for the test accuracy."),
    tol: float = typer.Option(1e-3, help="Relaxation tolerance: largest unit change in a sweep."),
    max_sweeps: int = typer.Option(100, help="Relaxation sweep cap per phase."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a substrate; by default centered Aeqprop on a 64-512-10 Hopfield network on digits."""
    import time

    from aeqprop.data import load_dataset
    from aeqprop.trainer import Trainer

    sizes = parse_hidden(hidden)
    prot = build_protocol(
        protocol, beta=beta, lr=lr, variant=variant, homeostasis=homeostasis, release=parse_release(release), seed=seed
    )
    data = load_dataset(dataset, test_fraction=test_fraction, seed=seed)
    substrate = _build(
        "backends",
        backend,
        dict(layers=(data.n_features, *sizes, data.n_classes), eps=eps, seed=seed, tol=tol, max_sweeps=max_sweeps),
    )
    try:
        trainer = Trainer(substrate, prot, data, epochs=epochs, batch_size=batch_size, seed=seed)
        t0 = time.perf_counter()
        result = trainer.run(progress=not quiet)
        final = result.final
        typer.echo(
            f"test accuracy {final.test_accuracy:.2%} after {epochs} epochs "
            f"(train {final.train_accuracy:.2%}, best test {result.best_test_accuracy:.2%}, "
            f"{time.perf_counter() - t0:.1f} s)"
        )
    finally:
        substrate.close()


@app.command()
@one_line_errors
def gradcheck(
    protocol: str = typer.Option("aeqprop", help="Protocol whose update is checked."),
    variant: str = typer.Option("centered"),
    beta: float = typer.Option(0.01),
    eps: float = typer.Option(1e-3),
    lr: float = typer.Option(1e-3),
    homeostasis: str = typer.Option("native"),
    release: str = typer.Option("1.0"),
    backend: str = typer.Option("hopfield"),
    layers: str = typer.Option("20,30,5", help="All layer sizes, inputs first."),
    batch_size: int = typer.Option(8),
    entries: int = typer.Option(40, help="Entries per tensor checked by finite differences."),
    seed: int = typer.Option(0),
):
    """Compare a protocol's update with -lr grad L (oracle), and the oracle with finite differences."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from aeqprop import oracle

    sizes = parse_hidden(layers)
    substrate = _build("backends", backend, dict(layers=sizes, eps=eps, seed=seed, tol=1e-13, max_sweeps=100_000))
    prot = build_protocol(
        protocol, beta=beta, lr=lr, variant=variant, homeostasis=homeostasis,
        release=parse_release(release), seed=seed, homeostasis_rtol=1e-9,
    )
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch_size, sizes[0]))
    y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch_size)]
    update = oracle.update_fidelity(substrate, prot, x, y)
    fd, masks = oracle.finite_difference(substrate, x, y, entries=entries, seed=seed)
    grad = substrate.true_gradient(x, y)
    table = Table(title=f"{protocol} ({variant}, beta={beta:g}) against the oracle; oracle against finite differences")
    for col in ("tensor", "update cosine", "update rel. error", "oracle vs FD rel. error"):
        table.add_column(col, justify="right")
    for name in list(grad) + ["all"]:
        if name == "all":
            a = np.concatenate([grad[n][masks[n]] for n in grad])
            b = np.concatenate([fd[n][masks[n]] for n in grad])
        else:
            a, b = grad[name][masks[name]], fd[name][masks[name]]
        table.add_row(name, f"{update[name].cosine:.6f}", f"{update[name].rel_error:.2e}", f"{oracle.fidelity(a, b).rel_error:.2e}")
    Console().print(table)
    substrate.close()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
