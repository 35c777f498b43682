"""``aeqprop protocols list|show`` and ``aeqprop backends list|show``: what the registry holds by name.

The two groups' commands; ``cli.py`` adds the groups (names and help) and this module is imported only
when one of them runs.
"""

# No `from __future__ import annotations`: typer reads each command's signature (see cli.py).
import typer

from aeqprop.cli_errors import one_line_errors

protocols_app = typer.Typer()
backends_app = typer.Typer()


def list_registered(kind: str) -> None:
    """One line per registered name: the name and its description."""
    from aeqprop import registry

    rows = registry.describe(kind)
    width = max((len(r[0]) for r in rows), default=0)
    for name, _target, text in rows:
        typer.echo(f"{name:<{width}}  {text}")


@protocols_app.command("list")
@one_line_errors
def protocols_list() -> None:
    """The protocols available by name (a file runs with --protocol path/to/file.py:ClassName)."""
    list_registered("protocols")


@backends_app.command("list")
@one_line_errors
def backends_list() -> None:
    """The simulated substrates available by name."""
    list_registered("backends")


@protocols_app.command("show")
@one_line_errors
def protocols_show(
    name: str = typer.Argument(..., help="Protocol name (see `aeqprop protocols list`) or file.py:Class."),
) -> None:
    """A protocol's options with defaults, its variants, and what it needs of a substrate."""
    from aeqprop import describe

    for line in describe.show("protocols", name):
        typer.echo(line)


@backends_app.command("show")
@one_line_errors
def backends_show(name: str = typer.Argument(..., help="Backend name (see `aeqprop backends list`).")) -> None:
    """A backend's options with defaults and its capabilities."""
    from aeqprop import describe

    for line in describe.show("backends", name):
        typer.echo(line)
