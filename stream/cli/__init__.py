"""The ``hailstream`` command line and its tools: one parser per command (every setting a flag), the
demo and its view, replay, drift scenarios, child processes, offline train/evaluate, model admin."""

from stream._lazy import lazy_exports

__all__ = ["main", "build_parser", "add_settings_flags", "settings_from_args", "run_demo", "replay", "run_replay",
           "spawn_hailstream", "stop_process"]
__getattr__ = lazy_exports(__name__, {
    "main": "main", "build_parser": "main", "add_settings_flags": "flags", "settings_from_args": "flags",
    "run_demo": "demo", "replay": "replay", "run_replay": "replay", "spawn_hailstream": "procs", "stop_process": "procs",
})
