"""The one settings object (:class:`Settings`), read once at start-up from ``HAILSTREAM_*`` variables
and flags, with one section per process (:class:`WorkerSettings`, :class:`TrainerSettings`)."""

from stream.settings.core import Settings, settings_fields
from stream.settings.env import env_name
from stream.settings.sections import GATE_METRICS, TrainerSettings, WorkerSettings

__all__ = ["GATE_METRICS", "Settings", "TrainerSettings", "WorkerSettings", "env_name", "settings_fields"]
