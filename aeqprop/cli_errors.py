"""The command line's error handling: every failure is one line on stderr and a non-zero exit.

An AeqpropError exits with status 2, an interrupted run with 1, a bug with 3 (:data:`INTERNAL_ERROR`).
Imports only typer (its click through :mod:`aeqprop.cli_lazy`) and, when a command fails, :mod:`aeqprop.errors`,
so every command module can use it.
"""

import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer

from aeqprop.cli_lazy import click_exceptions

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


#: Exit status when the reader of stdout has gone (``aeqprop data list | head -1``): 128 + SIGPIPE, as a shell reports it.
BROKEN_PIPE = 141

#: Exit status of an unexpected exception: a bug, reported in one line (AEQPROP_TRACEBACK=1 shows the traceback).
INTERNAL_ERROR = 3


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an AeqpropError into one line on stderr and a non-zero exit, no traceback.

    A second Ctrl+C names the run to resume; a closed stdout ends quietly (status 141, as SIGPIPE
    would); running out of memory says so; any other
    exception is a bug, printed as one ``internal error`` line with exit status 3.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from aeqprop.errors import AeqpropError

        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click_exceptions.ClickException):
            raise
        except AeqpropError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt as exc:
            rid, runs = getattr(exc, "run_id", None), getattr(exc, "runs", None)
            hint = f"; continue it with `{resume_command(rid, runs)}`" if rid else ""
            fail(f"interrupted{hint}", code=1)
        except BrokenPipeError:
            # stdout's reader went away: stop quietly as a filter does; stdout goes to /dev/null so the
            # interpreter's last flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(BROKEN_PIPE) from None
        except MemoryError:
            fail("out of memory; make the run smaller (fewer hidden units, a smaller batch)")
        except Exception as exc:
            if os.environ.get("AEQPROP_TRACEBACK"):
                raise
            text = str(exc).splitlines()[0] if str(exc) else ""
            fail(
                f"internal error ({type(exc).__name__}: {text[:200]}); this is a bug, please report it with the "
                "command; AEQPROP_TRACEBACK=1 shows the traceback",
                code=INTERNAL_ERROR,
            )

    return wrapper


def resume_command(run_id: int | str, runs: str | None) -> str:
    """``aeqprop resume 3`` (with ``--runs FOLDER`` when the folder is not the default)."""
    return f"aeqprop resume {run_id}" + ("" if runs in (None, "runs") else f" --runs {runs}")
