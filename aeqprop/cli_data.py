"""``aeqprop data list|fetch``: the named datasets, where they are, and downloading them.

The group's commands; ``cli.py`` adds the group (name and help) and this module is imported only when
one of them runs.
"""

# No `from __future__ import annotations`: typer reads each command's signature (see cli.py).
from typing import Optional

import typer

from aeqprop.cli_errors import one_line_errors

data_app = typer.Typer()


@data_app.command("list")
@one_line_errors
def data_list(
    data_dir: Optional[str] = typer.Option(None, help="Folder of the datasets [default: see `train --help`]."),
) -> None:
    """Each named dataset, its image shape and the folder it loads from (or 'not found')."""
    from aeqprop.catalog import CATALOG, locate, search_dirs
    from aeqprop.errors import DataError

    search_dirs(data_dir)  # a data folder given must exist
    for name, ds in CATALOG.items():
        try:
            where = str(next(iter(locate(ds, data_dir).values())).parent)
        except DataError:
            where = f"not found (aeqprop data fetch {name})"
        typer.echo(f"{name:<16} {'x'.join(map(str, ds.shape)):<9} {where}")


@data_app.command("fetch")
@one_line_errors
def data_fetch(
    name: str = typer.Argument(..., help="Dataset name, e.g. fashion-mnist (see `aeqprop data list`)."),
    data_dir: Optional[str] = typer.Option(None, help="Folder to download into (the dataset goes in DATA_DIR/NAME)."),
    mirror: list[str] = typer.Option([], help="Base URL to download from instead of the official ones (repeatable)."),
) -> None:
    """Download a named dataset from its official location; each file is checked against its published MD5."""
    from aeqprop.download import fetch

    folder = fetch(name, data_dir, mirrors=mirror or None, on_file=lambda f, status: typer.echo(f"{status:<10} {f}"))
    typer.echo(f"{name} in {folder}")
