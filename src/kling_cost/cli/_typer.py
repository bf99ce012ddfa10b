"""The CLI's Typer: help that shows what to type, commands built only when used.

Help. Typer labels every parameter with its Python type: ``--json <bool>`` (a flag takes no
value), ``--help <bool>``, ``--kind <str>``, ``--scope <list[str]>``, and writes a required
argument as ``{file}`` in the usage line. Here a flag shows no type, an option shows the kind
of value it takes (``TEXT``, ``INTEGER``, ``NUMBER``, ``PATH``, or the ``metavar=`` of its
declaration), and an argument shows its name (``Usage: kling-cost batch run [OPTIONS] FILE``;
``[FILE]`` when optional). Help is Click's plain layout (``rich_markup_mode=None``): Typer's
rich help panels import rich, markdown-it and pygments, which is most of ``--help``'s time.

Speed. :class:`LazyGroup` imports a command's module and builds the command (its parameters
from the function's signature) only when that command runs or its help is asked for:
``kling-cost estimate`` builds one command, not thirty; ``kling-cost --help`` lists every
command from its docstring and builds none.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.models import CommandFunctionType

from ._values import use_plain_values

__all__ = ["App", "Command", "Group", "LazyGroup", "tidy_param"]

_METAVARS: dict[object, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def _value_metavar(param: Any) -> str:
    """What an option's value is: from its annotation (``list[str]`` takes one ``TEXT`` at a
    time, repeated), else from a Click parameter type's name."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while get_origin(annotation) in (list, tuple) and get_args(annotation):
        annotation = get_args(annotation)[0]
    if annotation in _METAVARS:
        return _METAVARS[annotation]
    name = getattr(getattr(param, "type", None), "name", None)
    return name.upper() if isinstance(name, str) and name else "VALUE"


class _Argument(TyperArgument):
    """An argument shown by its name (``FILE``) in the usage line and in the help, with no
    type tag beside it: the name says what to give."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        if not self.required:
            name = f"[{name}]"
        return [f"{name}..." if self.nargs != 1 else name]


def tidy_param(param: Any) -> None:
    """Give ``param`` the metavar its help shows (an explicit ``metavar=`` is kept), and a
    value check that needs no pydantic where one applies."""
    use_plain_values(param)
    if isinstance(param, TyperArgument):
        if param.metavar is None:
            param.metavar = (param.name or "").upper()
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        return
    if param.metavar is not None:
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a switch takes no value: nothing beside it
    else:
        param.metavar = _value_metavar(param)


class _Tidy:
    """Tidies the parameters of a command or group, ``--help`` included."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            tidy_param(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            tidy_param(option)
        return option


class Command(_Tidy, TyperCommand):
    """A command whose help shows metavars, not Python types."""


class Group(_Tidy, TyperGroup):
    """A group whose help shows metavars, not Python types."""


class App(typer.Typer):
    """``typer.Typer`` with this CLI's defaults: :class:`Group` groups, :class:`Command`
    commands (a command may pass a subclass as ``cls``), plain help, no completion options
    and no pretty tracebacks (errors are one line; see ``_common.run_main``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("rich_markup_mode", None)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=cls or Command, **kwargs)


def _resolve_annotations(target: Any) -> None:
    """Evaluate the string annotations (PEP 563) of ``target``'s command functions once.
    Typer evaluates each of them four times while building a command otherwise."""
    if isinstance(target, typer.Typer):
        callbacks = [info.callback for info in target.registered_commands]
        callbacks.append(target.registered_callback.callback if target.registered_callback else None)
        for group in target.registered_groups:
            if group.typer_instance is not None:
                _resolve_annotations(group.typer_instance)
    else:
        callbacks = [target]
    for function in callbacks:
        annotations = getattr(function, "__annotations__", None)
        if annotations and any(isinstance(a, str) for a in annotations.values()):
            function.__annotations__ = typing.get_type_hints(function, include_extras=True)


def _help_text(target: Any) -> str | None:
    """The help a command or group shows, read without building it."""
    if isinstance(target, typer.Typer):
        text = getattr(target.info.help, "value", target.info.help)
        if text is None and target.registered_callback is not None:
            text = inspect.getdoc(target.registered_callback.callback)
        return text if isinstance(text, str) else None
    return inspect.getdoc(target)


class _LazyCommands(MutableMapping[str, Any]):
    """A group's ``commands``: the ones built already, and the lazy ones (``name ->
    "module:attribute"``, a command function or a ``typer.Typer``) built on first look-up."""

    def __init__(self, built: MutableMapping[str, Any], lazy: dict[str, str], package: str) -> None:
        self._built = dict(built)
        self._lazy = lazy
        self._package = package

    def target(self, name: str) -> Any:
        """What ``name`` is registered as: its function or Typer app (imports its module)."""
        module, _, attribute = self._lazy[name].partition(":")
        return getattr(importlib.import_module(f".{module}", self._package), attribute)

    def listing(self, name: str) -> Any:
        """``name`` as built, or a stand-in carrying its help (for the list of commands)."""
        if name in self._built:
            return self._built[name]
        return TyperCommand(name=name, help=_help_text(self.target(name)))

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in self._lazy:
                raise KeyError(name)
            target = self.target(name)
            _resolve_annotations(target)
            if isinstance(target, typer.Typer):
                command = typer.main.get_command(target)
            else:
                single = App()
                single.command(name)(target)
                command = typer.main.get_command(single)
            command.name = name
            self._built[name] = command
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._built and name not in self._lazy:
            raise KeyError(name)
        self._built.pop(name, None)
        self._lazy = {k: v for k, v in self._lazy.items() if k != name}

    def __iter__(self) -> Iterator[str]:
        yield from self._lazy
        yield from (name for name in self._built if name not in self._lazy)

    def __len__(self) -> int:
        return len(self._lazy) + sum(1 for name in self._built if name not in self._lazy)


class LazyGroup(Group):
    """A group whose ``lazy_commands`` (``name -> "module:attribute"``, modules relative to
    ``lazy_package``) are imported and built on first use; commands added the usual way
    (``app.command()``, ``app.add_typer()``) are listed after them. Its Typer app needs a
    callback (``@app.callback()``): without one, Typer makes an app of one command that command."""

    lazy_package: ClassVar[str] = ""
    lazy_commands: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands(self.commands, dict(self.lazy_commands), self.lazy_package)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names, without building (Typer's reads the items)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The list of commands with their short help, without building the lazy ones."""
        commands = typing.cast(_LazyCommands, self.commands)
        rows = [(name, commands.listing(name)) for name in self.list_commands(ctx)]
        rows = [(name, command) for name, command in rows if not command.hidden]
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])
