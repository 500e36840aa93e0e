"""Names and text values of the settings: every setting has one flat name (``partitions``,
``batch_size``, ``trainer_steps``), which is its keyword override, its environment variable
``HAILSTREAM_<NAME>`` and its flag ``--<name>``; :func:`convert` turns the text of a variable or a
flag into the field's type with an error that names where the text came from.

>>> env_name("trainer_steps")
'HAILSTREAM_TRAINER_STEPS'
>>> convert("none", int | None, "HAILSTREAM_TRAINER_EVERY_EVENTS", "trainer_every_events") is None
True
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from stream.errors import SettingsError

ENV_PREFIX = "HAILSTREAM_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: How an optional setting (a trigger, a limit) is switched off from text.
NONE = {"none", "null", "off"} - _FALSE


def env_name(name: str) -> str:
    """The environment variable of a setting's flat name.

    >>> env_name("bootstrap_servers")
    'HAILSTREAM_BOOTSTRAP_SERVERS'
    """
    return ENV_PREFIX + name.upper()


def flat_fields(model: type[BaseModel], sections: Mapping[str, tuple[type[BaseModel], str]]) -> dict[str, tuple[str | None, str, FieldInfo]]:
    """Flat name -> (section or None, field name, field) of every setting of ``model``, whose
    ``sections`` map a field to its section model and flat-name prefix."""
    out: dict[str, tuple[str | None, str, FieldInfo]] = {}
    for name, info in model.model_fields.items():
        if name in sections:
            section, prefix = sections[name]
            for sub, sub_info in section.model_fields.items():
                out[prefix + sub] = (name, sub, sub_info)
        else:
            out[name] = (None, name, info)
    return out


def base_type(tp: Any) -> Any:
    """``int`` for ``int | None`` (the first non-None member of a union)."""
    if isinstance(tp, UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not NoneType]
        return args[0] if args else tp
    return tp


def optional(tp: Any) -> bool:
    return (isinstance(tp, UnionType) or typing.get_origin(tp) is typing.Union) and NoneType in typing.get_args(tp)


def type_label(tp: Any) -> str:
    base = base_type(tp)
    return {int: "integer", float: "number", bool: "boolean", Path: "path", str: "string"}.get(base, str(base))


def convert(raw: str, tp: Any, source: str, name: str) -> Any:
    """The text ``raw`` of ``source`` (a variable or a flag) as a value of type ``tp``."""
    raw = raw.strip()
    if optional(tp) and raw.lower() in NONE:
        return None
    base = base_type(tp)
    try:
        if base is bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if base is int:
            return int(raw, 10)
        if base is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if base is Path:
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise SettingsError(f"{source}={raw!r} is not a valid {type_label(tp)} (setting {name})") from None


def to_text(value: Any) -> str:
    """A setting's value as the text of its variable (``convert`` reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
