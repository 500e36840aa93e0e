"""Typed snapshots of a running process: what the worker and the trainer write to their stats file
every second (``--stats-file``), and what the demo, the benchmarks and the tests read back.

The file is the JSON of :meth:`WorkerSnapshot.to_dict` / :meth:`TrainerSnapshot.to_dict`, written
atomically (:func:`write_stats`, a reader never sees half a file); :func:`read_worker_snapshot`
and :func:`read_trainer_snapshot` give the record back, :func:`read_stats` the plain dict.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "stats.json"
>>> write_stats(path, TrainerSnapshot(events=5, live_version="v2").to_dict())
>>> read_trainer_snapshot(path).events, read_stats(path)["live_version"]
(5, 'v2')
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stream.errors import StreamError

MODEL_SCORER = "hail"
"""Name of the live model's prequential scorer (the baselines use their own names)."""
SAMPLE_SUFFIX = "@sample"
"""Suffix of the model's scorer on the baselines' user sample (``"hail@sample"``)."""

T = TypeVar("T", bound="_Snapshot")


class _Snapshot:
    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
        """The record from a stats file's dict (unknown keys ignored, missing ones defaulted)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class WorkerSnapshot(_Snapshot):
    """The worker's counters (``hailstream worker --stats-file``).

    ``prequential`` maps each scorer (:data:`MODEL_SCORER` and the baselines) to its summary
    (``hr@k``, ``window_hr@k``, ``n``, ``cold``, ...); ``latency_s`` holds ``p50``/``p99``/``max``
    event -> prediction seconds; ``busy_s`` the seconds per phase. ``swaps``, ``swap_failures``,
    ``last_swap``, ``rollbacks``, ``guard_verdicts`` (the post-swap guard's last 20), ``guard`` (the
    guard window running now, or None) and ``drift`` exist when operations run (metrics, drift, hot
    swap).
    """

    events: int = 0
    valid: int = 0
    predictions: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    duplicates_skipped: int = 0
    position_resets: int = 0
    users_evicted: int = 0
    cold: int = 0
    #: backfill events applied (history and baselines, not scored, no prediction)
    backfilled: int = 0
    batches: int = 0
    model_version: str = ""
    uptime_s: float = 0.0
    first_batch_at: float | None = None
    last_batch_at: float | None = None
    events_per_s: float | None = None
    busy_s: dict[str, float] = field(default_factory=dict)
    #: CPU seconds per phase of the batch thread (``busy_s`` is wall time; "send" has no CPU entry)
    busy_cpu_s: dict[str, float] = field(default_factory=dict)
    written_at: float = 0.0
    latency_s: dict[str, float | None] = field(default_factory=dict)
    prequential: dict[str, dict[str, Any]] = field(default_factory=dict)
    send_errors: int = 0
    live_model_version: str = ""
    metrics_url: str | None = None
    swaps: int | None = None
    swap_failures: int | None = None
    last_swap: dict[str, Any] | None = None
    rollbacks: int | None = None
    guard_verdicts: list[dict[str, Any]] | None = None
    guard: dict[str, Any] | None = None
    #: ``{"detections": [...], "published": n, "states": [...]}``
    drift: dict[str, Any] | None = None
    #: the incremental-inference cache of the live version (``version``, ``entries``, ``bytes``,
    #: ``hits``, ``misses``); None when the model is re-encoded in full
    state_cache: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.swaps is None:
            for key in ("swaps", "swap_failures", "last_swap", "rollbacks", "guard_verdicts", "guard"):
                del d[key]
        if self.drift is None:
            del d["drift"]
        return d


@dataclass
class TrainerSnapshot(_Snapshot):
    """The trainer's counters (``hailstream trainer --stats-file``): events learned (``warm_events``
    re-read after a restart), the live version, fine-tunes and their ``outcomes``, the window, the
    vocabulary, the last fine-tunes (``history``) and announcements (``announced``)."""

    events: int = 0
    warm_events: int = 0
    invalid: int = 0
    live_version: str = ""
    #: versions a worker's post-swap guard rolled back (marked rejected in the store)
    rolled_back: list[str] = field(default_factory=list)
    fine_tunes: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    running: bool = False
    #: the running fine-tune's phase, steps done / total, elapsed and ETA seconds (None when idle)
    progress: dict[str, Any] | None = None
    pending_request: str | None = None
    window: int = 0
    vocabulary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    announced: list[dict[str, Any]] = field(default_factory=list)
    metrics_url: str | None = None
    uptime_s: float = 0.0
    written_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_stats(path: Path | str, stats: Mapping[str, Any]) -> None:
    """Write ``stats`` as JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_stats(path: Path | str) -> dict[str, Any]:
    """The last stats file a process wrote, as a dict."""
    try:
        return dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise StreamError(f"no stats at {path}: is the process running with --stats-file set?") from None


def read_worker_snapshot(path: Path | str) -> WorkerSnapshot:
    """The last :class:`WorkerSnapshot` a worker wrote to ``path``."""
    return WorkerSnapshot.from_dict(read_stats(path))


def read_trainer_snapshot(path: Path | str) -> TrainerSnapshot:
    """The last :class:`TrainerSnapshot` a trainer wrote to ``path``."""
    return TrainerSnapshot.from_dict(read_stats(path))
