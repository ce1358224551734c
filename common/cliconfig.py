"""Settings from a TOML file and ``REPEDGE_*`` environment variables, for any command.

One rule for every repedge command built with :func:`configurable` (``node start``,
``broker start``): a value comes from the command line, else its environment variable,
else the ``--config`` file, else the default in code. That is Click's own order (option,
``envvar``, ``ctx.default_map``, default; typer keeps it): this module only fills ``envvar``
for each option and ``default_map`` from the file, after checking the file against the
command's options and their type hints. Only typer's public API is used (``cls=``,
``is_eager`` callbacks, ``default_map``): typer 0.29 ships its own copy of Click.

File keys are the long option names as typed on the command line, dashes and all
(``node-id = "pi-1"`` for ``--node-id pi-1``); ``node_id`` is refused with a hint. Relative
paths in a file are relative to the file's folder.
"""

from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

CONFIG_KEY = "config"
PRINT_KEY = "print-config"
_NOT_IN_FILE = (CONFIG_KEY, PRINT_KEY)
_SECRET_WORDS = ("password",)


class ConfigFileError(typer.BadParameter):
    """A config file that cannot be used; names the file, the key and the reason."""

    def __init__(self, path: Path, key: str | None, reason: str) -> None:
        where = f"config file {path}" + (f", key {key!r}" if key else "")
        super().__init__(f"{where}: {reason}", param_hint="--config")


def option_keys(command: Any) -> dict[str, Any]:
    """File key -> option: each option's first long name without its dashes."""
    keys: dict[str, Any] = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        long_names = [o for o in param.opts if o.startswith("--")]
        if long_names:
            keys[long_names[0][2:]] = param
    return keys


def _value_types(command: Any) -> dict[str, tuple[type, bool]]:
    """Parameter name -> (scalar type, is a list), from the command function's hints."""
    hints = typing.get_type_hints(command.callback)  # follows typer's wrapper to the function
    result: dict[str, tuple[type, bool]] = {}
    for name, hint in hints.items():
        multiple = False
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
            hint = args[0]  # X | None
        if typing.get_origin(hint) is list:
            multiple, hint = True, typing.get_args(hint)[0]
        if isinstance(hint, type):
            result[name] = (hint, multiple)
    return result


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


def _check_scalar(expected: type, value: Any) -> str | None:
    """Why ``value`` (from TOML) does not fit ``expected``, or None. TOML has types: a
    quoted "32" for an integer option is a mistake worth reporting, not coercing."""
    if expected is bool:
        ok = isinstance(value, bool)
        wanted = "true or false"
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        wanted = "an integer"
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        wanted = "a number"
    else:  # str, Path and anything typer parses from text
        ok = isinstance(value, str)
        wanted = "a string"
    return None if ok else f"expected {wanted}, got {_type_name(value)}"


def load_config_file(path: Path, command: Any) -> dict[str, Any]:
    """The file's settings as a ``default_map`` (parameter name -> value), validated."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(path, None, exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, None, f"not valid TOML: {exc}") from None
    keys = {k: p for k, p in option_keys(command).items() if k not in _NOT_IN_FILE}
    value_types = _value_types(command)
    base = path.parent.absolute()
    settings: dict[str, Any] = {}
    for key, value in data.items():
        param = keys.get(key)
        if param is None:
            dashed = key.replace("_", "-")
            if dashed != key and dashed in keys:
                reason = f"write {dashed!r}: keys are the long option names, with dashes"
            else:
                reason = f"unknown key (known keys: {', '.join(sorted(keys))})"
            raise ConfigFileError(path, key, reason)
        expected, multiple = value_types.get(param.name, (str, False))
        if multiple and not isinstance(value, list):
            raise ConfigFileError(path, key, f"expected a list, got {_type_name(value)}")
        items = value if multiple else [value]
        for item in items:
            problem = _check_scalar(expected, item)
            if problem:
                raise ConfigFileError(path, key, problem)
        if issubclass(expected, Path):
            # Relative to the file, not to wherever the command happens to run.
            items = [str(base / Path(item).expanduser()) for item in items]
        settings[param.name] = items if multiple else items[0]
    return settings


def _load_into_context(ctx: typer.Context, value: Path | None) -> Path | None:
    if value is not None and not ctx.resilient_parsing:
        settings = load_config_file(Path(value), ctx.command)
        ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        is_eager=True,  # read before the other options, so their defaults come from it
        callback=_load_into_context,
        show_default=False,
        help="TOML file of settings; keys are the long option names (max-batch = 64), "
        "relative paths are relative to the file. An option on the command line beats its "
        "environment variable, which beats the file.",
    ),
]
PrintConfig = Annotated[
    bool,
    typer.Option(
        "--print-config",
        help="Print the effective settings as TOML, with where each comes from; do nothing else.",
    ),
]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_effective(ctx: typer.Context) -> str:
    """Every setting of the command as TOML, each with where its value came from."""
    origins = {"COMMANDLINE": "command line", "DEFAULT_MAP": "config file"}
    lines = []
    for key, param in option_keys(ctx.command).items():
        if key in _NOT_IN_FILE:
            continue
        value = ctx.params.get(param.name)
        source = getattr(ctx.get_parameter_source(param.name), "name", "DEFAULT")
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        origin = origins.get(source, "environment" if source == "ENVIRONMENT" else "default")
        note = f"  # {origin}" + (f"; env {' or '.join(envvars)}" if envvars else "")
        if value is None or value == () or value == []:
            lines.append(f"# {key} = (not set){note}")
        elif any(word in key for word in _SECRET_WORDS):
            lines.append(f'{key} = "***"{note}')
        else:
            lines.append(f"{key} = {_toml_value(value)}{note}")
    return "\n".join(lines) + "\n"


def configurable(env_prefix: str, no_env: tuple[str, ...] = ()) -> type[TyperCommand]:
    """A typer command class whose options read ``<env_prefix><OPTION>`` from the
    environment, and which honours ``--print-config`` (declare it with :data:`PrintConfig`,
    and ``--config`` with :data:`ConfigFile`).

    Use as ``@app.command(cls=configurable("REPEDGE_"))``. An option that names its own
    ``envvar`` keeps it, after the generic name; options named in ``no_env`` (parameter
    names) get no environment variable.
    """

    class ConfigurableCommand(TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for param in self.params:
                if getattr(param, "param_type_name", "") != "option":
                    continue
                if param.name == "print_config" or param.name in no_env:
                    continue
                generic = f"{env_prefix}{param.name.upper()}"
                own = param.envvar
                if own is None:
                    param.envvar = generic
                elif isinstance(own, str) and own != generic:
                    param.envvar = [generic, own]
                param.show_envvar = True

        def invoke(self, ctx: typer.Context) -> Any:
            if ctx.params.get("print_config"):
                typer.echo(render_effective(ctx), nl=False)
                return None
            return super().invoke(ctx)

    return ConfigurableCommand
