"""The console script's command tree, each command and sub-group built by typer on first use.

Typer builds every command of a tree (its parameters read from the signature) before it parses
anything; :func:`lazy_group` builds only what runs, so ``aeqprop --help`` starts fast. A sub-group
added with :func:`add_lazy_group` lives in a module imported only when that group is built.
"""

import copy
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo, TyperInfo

try:
    from typer._click import Command
    from typer._click import exceptions as click_exceptions  # typer vendors its click
except ImportError:  # older typer: click itself
    from click import Command  # type: ignore[assignment]  # the same class, before typer vendored it
    from click import exceptions as click_exceptions  # type: ignore[no-redef]  # the same module, before typer vendored it


class OneLineGroup(TyperGroup):
    """The top command group: a usage error (unknown option, bad number) is one line, not a usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> int:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0  # click returns an Exit's code
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.Abort:
            typer.secho("error: interrupted", fg=typer.colors.RED, err=True)
            code = 1
        except getattr(click_exceptions, "NoArgsIsHelpError", ()) as exc:  # the help text, in full
            exc.show()
            code = exc.exit_code
        except click_exceptions.UsageError as exc:
            where = (
                f"aeqprop {exc.ctx.command_path.partition(' ')[2]} --help".replace("  ", " ")
                if exc.ctx
                else "aeqprop --help"
            )
            typer.secho(
                f"error: {exc.format_message().splitlines()[0]} (see `{where.strip()}`)", fg=typer.colors.RED, err=True
            )
            code = exc.exit_code
        except click_exceptions.ClickException as exc:
            typer.secho(f"error: {exc.format_message().splitlines()[0]}", fg=typer.colors.RED, err=True)
            code = exc.exit_code
        if standalone_mode:
            sys.exit(code)
        return code

    def list_commands(self, ctx: Any) -> list[str]:
        """The names in the order they were added (as typer lists them), without building a lazy one."""
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The commands section of the help; a lazy command is listed from its summary, not built."""
        commands = self.commands
        if not isinstance(commands, LazyCommands):
            return super().format_commands(ctx, formatter)
        commands.listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            commands.listing = False


class LazyCommands(MutableMapping[str, Command]):
    """A group's commands by name, each built by typer on first use.

    While ``listing`` (the group's help), a command not yet built is given as its summary: the same
    class with the same help, short help, hidden and deprecated flags and no parameters, which is
    all a help listing reads. So ``aeqprop --help`` builds no command, and ``aeqprop runs list``
    builds the ``runs`` group alone.
    """

    def __init__(self, lazy: dict[str, tuple[Callable[[], Command], Callable[[], Command]]]) -> None:
        self._names = list(lazy)
        self._lazy = dict(lazy)  # name -> (build, summary)
        self._built: dict[str, Command] = {}
        self.listing = False

    def __getitem__(self, name: str) -> Command:
        if name in self._built:
            return self._built[name]
        build, summary = self._lazy[name]
        if self.listing:
            return summary()
        command = self._built[name] = build()
        del self._lazy[name]
        return command

    def __setitem__(self, name: str, command: Command) -> None:
        if name not in self._built and name not in self._lazy:
            self._names.append(name)
        self._lazy.pop(name, None)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._built and name not in self._lazy:
            raise KeyError(name)
        self._names.remove(name)
        self._lazy.pop(name, None)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)


def lazy_group(app: typer.Typer) -> TyperGroup:
    """The click group ``typer.main.get_command(app)`` builds, with each command and sub-group built on first use.

    Typer builds every command of a tree (its parameters read from the signature) before it parses
    anything; the console script builds only what it runs. The group itself, each command and each
    sub-group are built by typer's own functions, so they are the same objects; a sub-group added
    without a name (merged into its parent by typer) is built at once.
    """
    shell = copy.copy(app)  # the group alone: typer builds it from the app's settings
    shell.registered_commands, shell.registered_groups = [], []
    group = typer.main.get_group(shell)
    short, markup = app.pretty_exceptions_short, app.rich_markup_mode
    lazy: dict[str, tuple[Callable[[], Command], Callable[[], Command]]] = {}
    eager: dict[str, Command] = {}
    for command_info in app.registered_commands:
        if command_info.callback is None:
            continue
        name = command_info.name or typer.main.get_command_name(command_info.callback.__name__)
        lazy[name] = (
            functools.partial(
                typer.main.get_command_from_info, command_info, pretty_exceptions_short=short, rich_markup_mode=markup
            ),
            functools.partial(_command_summary, command_info, name),
        )
    for group_info in app.registered_groups:
        listed = group_info.listing() if isinstance(group_info, LazyTyperInfo) else group_info
        solved = typer.main.solve_typer_info_defaults(listed)
        build = functools.partial(
            typer.main.get_group_from_info,
            group_info,
            pretty_exceptions_short=short,
            rich_markup_mode=markup,
            suggest_commands=app.suggest_commands,
        )
        if solved.name:
            lazy[solved.name] = (build, functools.partial(_group_summary, solved))
        else:
            eager.update(build().commands)
    group.commands = LazyCommands(lazy)
    group.commands.update(eager)
    return group


def _command_summary(info: CommandInfo, name: str) -> Command:
    """A command as its group's help lists it (help as typer takes it: the docstring unless given)."""
    use_help = inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help)
    cls = info.cls or TyperCommand
    return cls(name=name, help=use_help, short_help=info.short_help, hidden=info.hidden, deprecated=info.deprecated)


def _group_summary(solved: TyperInfo) -> Command:
    """A sub-group as its parent's help lists it, from its settings as typer solves them."""
    cls = solved.cls or TyperGroup
    return cls(
        name=solved.name,
        help=solved.help,
        short_help=solved.short_help,
        hidden=solved.hidden,
        deprecated=solved.deprecated,
    )


class LazyTyperInfo(TyperInfo):
    """A sub-group as ``app.add_typer`` records it, its Typer imported from its module when the group is built.

    The settings a help listing reads (help, and short_help, hidden or deprecated where set) are given
    here, so listing the group imports nothing; the group's Typer in its module is a bare
    ``typer.Typer()`` holding its commands. Typer's own eager build reads ``typer_instance`` and so
    imports the module, as a test's ``CliRunner().invoke(app, ...)`` does.
    """

    __slots__ = ("where", "_typer")  # outside __dict__, which typer copies field by field into a TyperInfo
    where: tuple[str, str]  # (module, attribute) of the group's Typer

    def __init__(self, module: str, attribute: str, **settings: Any) -> None:
        self.where = (module, attribute)
        self._typer: typer.Typer | None = None
        super().__init__(**settings)

    @property
    def typer_instance(self) -> typer.Typer:
        """The group's Typer, ``module.attribute``, imported on first use."""
        if self._typer is None:
            module, attribute = self.where
            found = getattr(importlib.import_module(module), attribute)
            if not isinstance(found, typer.Typer):
                raise TypeError(f"{module}.{attribute} is a {type(found).__name__}, not the group's typer.Typer")
            self._typer = found
        return self._typer

    @typer_instance.setter
    def typer_instance(self, value: object) -> None:
        """TyperInfo.__init__ stores its default here; the Typer is the module's."""

    def listing(self) -> TyperInfo:
        """The same settings without the Typer: typer solves them (help, hidden, ...) importing nothing."""
        return TyperInfo(**self.__dict__)


def add_lazy_group(app: typer.Typer, name: str, module: str, attribute: str, *, help: str, **settings: Any) -> None:
    """``app.add_typer(module.attribute, name=name, help=help, ...)`` without importing ``module`` until the
    group is built (see :class:`LazyTyperInfo`)."""
    app.registered_groups.append(LazyTyperInfo(module, attribute, name=name, help=help, **settings))
