"""Type checking of ``--config`` values, derived from the flags themselves.

A YAML value is parsed exactly as the same value typed after its flag would be: the settings
parser of :func:`mocap.pipeline.config.add_settings_arguments` converts it (its ``type=`` and
``choices``), so ``stride: "abc"`` fails with the message of ``--stride abc``. Switches
(``--preview``, ``--combined``) take YAML booleans only, lists are accepted where the setting is a
list, and ``null`` where the setting may be None. A setting without a flag is checked against its
:class:`~mocap.pipeline.config.RunSettings` type annotation. Nothing here names a setting: a new
field with a flag is checked the moment it is added.
"""

import argparse
import math
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from mocap.errors import MocapError


class _Refused(Exception):
    """argparse's error message for one value."""


class _Checker(argparse.ArgumentParser):
    """The settings parser, raising instead of printing usage and exiting."""

    def error(self, message: str) -> typing.NoReturn:
        raise _Refused(message)


def _args(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    return typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)


def allows_none(hint: Any) -> bool:
    return type(None) in _args(hint) or hint is Any


def is_list(hint: Any) -> bool:
    return any(typing.get_origin(a) is list or a is list for a in _args(hint))


def is_float(hint: Any) -> bool:
    return float in _args(hint)


def setting_types() -> dict[str, Any]:
    """Field name -> resolved type annotation of every RunSettings field."""
    from mocap.pipeline.config import RunSettings

    hints = typing.get_type_hints(RunSettings)
    return {f.name: hints.get(f.name, Any) for f in fields(RunSettings)}


def _matches(value: Any, hint: Any) -> bool:
    """``value`` fits annotation ``hint`` (for settings without a flag)."""
    for h in _args(hint):
        origin = typing.get_origin(h)
        if h is Any or (h is type(None) and value is None):
            return True
        if h is bool and isinstance(value, bool):
            return True
        plain = h in (int, float, str) and not isinstance(value, bool)
        if plain and (isinstance(value, h) or (h is float and isinstance(value, int))):
            return True
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(h) or (Any,)
            if all(_matches(v, item) for v in value):
                return True
        if origin is typing.Literal and value in typing.get_args(h):
            return True
    return False


def check_values(values: dict[str, Any], path: Path) -> dict[str, Any]:
    """``values`` (setting name -> YAML value) converted as their flags would; MocapError naming
    the file, the flag and the problem for the first value that the flag would refuse."""
    from mocap.pipeline.config import add_settings_arguments

    parser = _Checker(prog="mocap", add_help=False)
    add_settings_arguments(parser)
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if action.option_strings:
            actions.setdefault(action.dest, []).append(action)
    hints = setting_types()
    out: dict[str, Any] = {}
    for key, value in values.items():
        hint = hints.get(key, Any)
        flag = actions[key][0].option_strings[-1] if key in actions else key
        where = f"config file {path}: {key}"
        head = f"config file {path}"
        if value is None:
            if not allows_none(hint):
                raise MocapError(f"{where}: needs a value (null is not allowed for {flag})")
            out[key] = None
        elif key not in actions:
            if not _matches(value, hint):
                raise MocapError(f"{where}: {value!r} is not a valid {hint}")
            out[key] = value
        else:
            out[key] = _as_flag(parser, actions[key], key, value, hint, where, head)
    return out


def _as_flag(
    parser: _Checker,
    actions: list[argparse.Action],
    key: str,
    value: Any,
    hint: Any,
    where: str,
    head: str,
) -> Any:
    """``value`` parsed by the flag(s) of ``key``; ``where`` / ``head`` start the error lines."""
    flag = actions[0].option_strings[-1]
    switches = [a for a in actions if a.nargs == 0]  # store_true / store_false / store_const
    if switches:
        if bool in _args(hint):
            if not isinstance(value, bool):
                raise MocapError(f"{where}: {flag} takes true or false, not {value!r}")
            return value
        consts = [a.const for a in switches]
        if not any(type(value) is type(c) and value == c for c in consts):
            raise MocapError(f"{where}: {value!r} is not one of {consts}")
        return value
    action = actions[0]
    if isinstance(value, bool) and bool not in _args(hint):
        raise MocapError(f"{where}: {flag} takes a value, not {str(value).lower()}")
    if isinstance(value, dict) or (isinstance(value, list) and not is_list(hint)):
        raise MocapError(f"{where}: {flag} takes a single value, not {type(value).__name__}")
    if isinstance(value, list):
        if any(isinstance(v, dict | list | bool) or v is None for v in value):
            raise MocapError(f"{where}: {flag} takes a list of plain values")
        many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
        argv = [action.option_strings[-1], *map(str, value)] if many else []
        if not many:
            argv = [f"{action.option_strings[-1]}={','.join(map(str, value))}"]
    else:
        argv = [f"{action.option_strings[-1]}={value}"]
    try:
        parsed = parser.parse_args(argv)
    except _Refused as exc:
        raise MocapError(f"{head}: {exc}") from None
    return getattr(parsed, key)


def non_finite(settings: Any) -> tuple[str, float] | None:
    """(flag, value) of the first float setting that is NaN or infinite, or None."""
    for name, hint in setting_types().items():
        value = getattr(settings, name)
        if is_float(hint) and isinstance(value, float) and not math.isfinite(value):
            return "--" + name.replace("_", "-"), value
    return None
