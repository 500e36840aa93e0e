"""Every setting as a flag: :func:`add_settings_flags` adds the flags of some settings groups to a
command's parser (one flag per setting of :class:`stream.settings.Settings`, named after it, its
help saying the variable and the default), :func:`settings_from_args` builds the one settings
object from the environment and the flags that were given.

>>> ap = argparse.ArgumentParser()
>>> add_settings_flags(ap, ["shared", "trainer"])
>>> s = settings_from_args(ap.parse_args(["--partitions", "2", "--steps", "7", "--no-drift"]), env={})
>>> s.partitions, s.trainer.steps, s.trainer.on_drift, s.trainer.every_events
(2, 7, False, 5000)
>>> settings_from_args(ap.parse_args(["--every-events", "none"]), env={}).trainer.every_events is None
True
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stream.errors import SettingsError
from stream.settings import Settings, settings_fields
from stream.settings.env import base_type, convert, env_name, type_label

GROUPS = ("shared", "worker", "trainer")
TITLES = {
    "shared": "shared settings (flag, or environment variable HAILSTREAM_<NAME>)",
    "worker": "worker settings (flag, or environment variable HAILSTREAM_<NAME>)",
    "trainer": "trainer settings (flag, or environment variable HAILSTREAM_TRAINER_<NAME>)",
}


def _checker(flat: str, annotation: Any, flag: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            convert(text, annotation, flag, flat)
        except SettingsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text  # converted once, with the environment, by Settings.from_env

    check.__name__ = type_label(annotation)
    return check


def flag_name(flat: str, *, trainer_prefix: str = "") -> str:
    """The flag of a setting: ``--batch-size``; trainer settings ``--<trainer_prefix><name>``
    (``--steps`` on ``hailstream trainer``, ``--trainer-steps`` on ``hailstream demo``)."""
    section, name, info = settings_fields()[flat]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    name = str(extra.get("flag", name))
    if section == "trainer":
        return "--" + (trainer_prefix + name).replace("_", "-")
    return "--" + name.replace("_", "-")


def add_settings_flags(
    ap: argparse.ArgumentParser,
    groups: Iterable[str],
    *,
    trainer_prefix: str = "",
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> None:
    """Add one flag per setting of ``groups`` (``"shared"``, ``"worker"``, ``"trainer"``), except
    the flat names in ``skip`` (or only those in ``only``). An unset flag leaves the environment's
    value (or the default) in place."""
    wanted = set(groups)
    unknown = wanted - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown settings groups {sorted(unknown)}; known: {GROUPS}")
    skipped, kept = set(skip), None if only is None else set(only)
    groups_made: dict[str, argparse._ArgumentGroup] = {}
    for flat, (section, _, info) in settings_fields().items():
        if (section or "shared") not in wanted or flat in skipped or (kept is not None and flat not in kept):
            continue
        group = groups_made.get(section or "shared")
        if group is None:
            group = groups_made[section or "shared"] = ap.add_argument_group(TITLES[section or "shared"])
        flag = flag_name(flat, trainer_prefix=trainer_prefix)
        default = "unset" if info.default is None else info.default
        help_text = f"{info.description or flat} (env {env_name(flat)}; default {default})".replace("%", "%%")
        if base_type(info.annotation) is bool:
            group.add_argument(flag, dest=flat, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=flat, type=_checker(flat, info.annotation, flag), default=None,
                               metavar=type_label(info.annotation).upper(), help=help_text)


def settings_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """The settings: defaults, the environment, then ``overrides`` (a command's own choices),
    then the flags that were given."""
    given = {flat: getattr(args, flat) for flat in settings_fields() if getattr(args, flat, None) is not None}
    return Settings.from_env(env, **{**overrides, **given})
