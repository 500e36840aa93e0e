"""The ``hailstream`` command line and its tools: demo and its view, replay, drift scenarios,
child processes, offline train/evaluate, model-store admin."""

from stream._lazy import lazy_exports

__all__ = ["main", "build_parser", "run_demo", "replay", "run_replay"]
__getattr__ = lazy_exports(__name__, {
    "main": "main", "build_parser": "main", "run_demo": "demo", "replay": "replay", "run_replay": "replay",
})
