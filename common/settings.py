"""Typed settings objects: checked where they are built, and sent whole across a process.

Each service's settings are a dataclass whose fields and defaults are the single source
that its typer options, the TOML/env loader (common/cliconfig.py) and ``--print-config``
read. A field states its range in its metadata (:func:`setting`); :func:`validate`
checks every field's type and range, naming the command-line option in the error, so a
bad value is one clear line before anything starts (issue 20: "Settings that are not
validated"). :func:`to_json` / :func:`from_json` carry a settings object over an exec
with its types intact (``Path`` stays ``Path``, a nested dataclass such as the
``BrokerEndpoint`` stays one).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

# MQTT 5's Session Expiry Interval is a four-byte integer.
MAX_UINT32 = 2**32 - 1
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SettingsError(ValueError):
    """A setting outside its type or range; the message names the option."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    option: str | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    choices: tuple[str, ...] | None = None,
    max_len: int | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its command-line option name and its allowed values."""
    metadata = {
        "option": option,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "choices": choices,
        "max_len": max_len,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_name(field: dataclasses.Field) -> str:
    return field.metadata.get("option") or field.name.replace("_", "-")


def _hint_parts(hint: Any) -> tuple[Any, bool, bool]:
    """(inner type, optional, is a list) of a field's type hint."""
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    if typing.get_origin(hint) in (list, tuple):
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _type_problem(value: Any, expected: Any) -> str | None:
    if expected is Any:
        return None
    if expected is bool:
        return None if isinstance(value, bool) else "true or false"
    if expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "an integer"
    if expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return "a finite number"
        return None if ok else "a number"
    if expected is str:
        return None if isinstance(value, str) else "a string"
    if isinstance(expected, type):
        return None if isinstance(value, expected) else f"a {expected.__name__}"
    return None


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range_problem(value: Any, meta: typing.Mapping[str, Any]) -> str | None:
    low, high = meta.get("min"), meta.get("max")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if low is not None and (value <= low if meta.get("min_exclusive") else value < low):
            return (
                f"more than {_number(low)}"
                if meta.get("min_exclusive")
                else f"at least {_number(low)}"
            )
        if high is not None and value > high:
            return f"at most {_number(high)}"
    if isinstance(value, str):
        if meta.get("choices") and value not in meta["choices"]:
            return f"one of {', '.join(meta['choices'])}"
        if meta.get("max_len") is not None and len(value) > meta["max_len"]:
            return f"at most {meta['max_len']} characters"
        if _CONTROL.search(value):
            return "text without control characters (newline, tab, escape)"
    return None


def validate(settings: Any) -> None:
    """Check every field of a settings dataclass; :class:`SettingsError` on the first bad one."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        expected, optional, is_list = _hint_parts(hints[field.name])
        if value is None:
            if optional:
                continue
            raise SettingsError(f"--{option_name(field)}: a value is required")
        items = value if is_list else [value]
        if is_list and not isinstance(value, list | tuple):
            raise SettingsError(f"--{option_name(field)}: expected a list, got {value!r}")
        for item in items:
            wanted = _type_problem(item, expected) or _range_problem(item, field.metadata)
            if wanted:
                shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
                raise SettingsError(f"--{option_name(field)}: must be {wanted}, got {shown}")


def check_topic_name(option: str, topic: str) -> None:
    """A topic one publishes to or grants in an ACL line: no wildcards, spaces or control
    characters (an ACL file is line based), not a $ topic."""
    if not topic or topic.startswith("$") or re.search(r"[+#\s\x00-\x1f\x7f]", topic):
        raise SettingsError(
            f"{option}: {topic!r} must be a topic name (no wildcards + #, spaces, $...)"
        )


def to_json(settings: Any) -> Any:
    """A settings object as JSON-ready data (paths as strings, nested dataclasses as dicts)."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: to_json(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, Path):
        return str(settings)
    if isinstance(settings, list | tuple):
        return [to_json(v) for v in settings]
    return settings


def _restore(value: Any, hint: Any) -> Any:
    inner, _optional, is_list = _hint_parts(hint)
    if value is None:
        return None
    if is_list:
        return [_restore(v, inner) for v in value]
    if dataclasses.is_dataclass(inner):
        return from_json(inner, value)
    if inner is Path:
        return Path(value)
    if inner is float and isinstance(value, int):
        return float(value)
    return value


def from_json(cls: type, data: dict[str, Any]) -> Any:
    """The inverse of :func:`to_json`: the same types back, then the class's own checks."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"unknown settings for {cls.__name__}: {', '.join(sorted(unknown))}")
    return cls(**{name: _restore(value, hints[name]) for name, value in data.items()})


def default_of(cls: type, name: str) -> Any:
    """A field's default (calling its factory), for a typer option's default."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default
