"""A worker run's timeline: windowed accuracy, drift detections and model-version changes as JSON lines.

The worker (``hailstream worker --timeline PATH``) feeds one :class:`Timeline` after every
processed batch (:meth:`Timeline.after_batch`, in the batch thread); ``hailstream report``
(:mod:`stream.observe.report`) draws the file. One line is one record, appended and flushed at once, so a
reader sees every record written before a crash; a worker killed mid-write leaves at most one torn
line, which :func:`read_timeline` skips. Three kinds of record, each with ``t`` (unix seconds) and
``events`` (events processed so far by this worker):

- ``point``, at most once per ``every`` events (and a last one at shutdown, :meth:`Timeline.finish`):
  the live ``version``, ``k``, and ``window``, the prequential values of every scorer (the model
  ``"hail"`` and each baseline) over its sliding window:
  ``{scorer: {"n": events in the window, "hr@k": ..., "ndcg@k": ...}}``;
- ``drift``, per :class:`stream.observe.drift.Detection`: ``detector``, ``at_event`` (the detector's own
  count), ``value``, ``baseline`` and ``direction`` (``"down"`` when ``value < baseline``);
- ``version``, when the served model version changes (hot swap): ``old``, ``new`` and, when known,
  ``reason``; ``events`` is the count before the first batch the new version served.

Two more kinds are appended by ``hailstream demo`` after its worker stopped: ``injected`` (where the
demo's ``--drift`` renamed the items) and ``finetune`` (a fine-tune that was not promoted:
``outcome``, ``version``, ``events`` estimated from its end time).

>>> import tempfile
>>> from stream.worker.prequential import Prequential
>>> path = Path(tempfile.mkdtemp()) / "timeline.jsonl"
>>> preq = {"hail": Prequential(k=10, window=100)}
>>> with Timeline(path, every=2, version="v1") as tl:
...     _ = preq["hail"].update(["a"], "a")
...     tl.after_batch(3, "v1", preq)
...     tl.after_batch(2, "v2", preq)
>>> [(r["kind"], r["events"]) for r in read_timeline(path)]
[('point', 3), ('version', 3), ('point', 5)]
>>> read_timeline(path)[0]["window"]
{'hail': {'n': 1, 'hr@10': 1.0, 'ndcg@10': 1.0}}
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from stream.errors import StreamError
from stream.observe.drift import Detection
from stream.worker.prequential import Prequential

log = logging.getLogger(__name__)

TIMELINE_FILE = "timeline.jsonl"
"""The timeline's file name inside a run directory (what ``hailstream report RUN`` looks for)."""
DEFAULT_EVERY = 200
"""Events between two ``point`` records."""
KINDS = ("point", "drift", "version", "injected", "finetune")
DECIMALS = 6


class Timeline:
    """Appends a worker's timeline records to ``path``; see the module docstring.

    ``version`` is the version served when the worker starts (a batch with another version is a
    change). An existing file is appended to, and the event count continues from its last record,
    so a restarted worker extends the same timeline. ``clock`` gives ``t`` (unix seconds).
    """

    def __init__(
        self,
        path: Path | str,
        every: int = DEFAULT_EVERY,
        *,
        version: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if every < 1:
            raise StreamError(f"timeline point interval must be >= 1 event, not {every}")
        self.path = Path(path)
        self.every = every
        self.clock = clock
        self.version = version
        self.events = 0
        self.written: Counter[str] = Counter()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = self.path.exists() and not _ends_with_newline(self.path)
            if self.path.exists() and self.path.stat().st_size:
                self.events = max((int(r.get("events", 0)) for r in read_timeline(self.path)), default=0)
            self._file: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise StreamError(f"cannot write the timeline {self.path}: {e}; pass a writable --timeline path") from e
        if torn:  # a killed writer's half line stays a line of its own (read_timeline skips it)
            self._file.write("\n")
        self._pointed = self.events  # the event count of the latest point

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line and flush it."""
        if self._file is None:
            raise StreamError(f"the timeline {self.path} is closed")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        self.written[str(record.get("kind"))] += 1

    def point(self, prequential: Mapping[str, Prequential]) -> None:
        """A ``point`` record with the windowed prequential values of every scorer now."""
        window: dict[str, dict[str, float | int]] = {}
        k = 10
        for name, p in prequential.items():
            k = p.k
            n, hr, ndcg, _ = p.window_values()
            window[name] = {"n": n, f"hr@{k}": round(hr, DECIMALS), f"ndcg@{k}": round(ndcg, DECIMALS)}
        self.write({"kind": "point", "t": self.clock(), "events": self.events, "version": self.version,
                    "k": k, "window": window})
        self._pointed = self.events

    def drift(self, detection: Detection) -> None:
        """A ``drift`` record for one detection, at the current event count."""
        d = detection
        self.write({
            "kind": "drift", "t": self.clock(), "events": self.events, "detector": d.detector,
            "at_event": d.at_event, "value": round(d.value, DECIMALS), "baseline": round(d.baseline, DECIMALS),
            "direction": "down" if d.value < d.baseline else "up",
        })

    def version_change(self, old: str | None, new: str, reason: str | None = None) -> None:
        """A ``version`` record: the served version went from ``old`` to ``new``."""
        record: dict[str, Any] = {"kind": "version", "t": self.clock(), "events": self.events, "old": old, "new": new}
        if reason:
            record["reason"] = reason
        self.write(record)
        self.version = new

    def after_batch(
        self,
        events: int,
        version: str,
        prequential: Mapping[str, Prequential],
        detections: Iterable[Detection] = (),
        reason: str | None = None,
    ) -> None:
        """Record one processed batch of ``events`` events served by ``version``, with the drift
        detections it raised; ``reason`` explains a version change (e.g. the hot swap's reason).
        Writes a ``point`` once ``every`` events have passed since the latest one."""
        if self.version is None:
            self.version = version
        elif version != self.version:
            self.version_change(self.version, version, reason)
        self.events += events
        for d in detections:
            self.drift(d)
        if self.events >= self._pointed + self.every:
            self.point(prequential)

    def finish(self, prequential: Mapping[str, Prequential]) -> None:
        """A last ``point`` when events came after the latest one (at shutdown, so that the
        timeline reaches the end of the run), then :meth:`close`."""
        if self._file is not None and self.events > self._pointed:
            self.point(prequential)
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def read_timeline(path: Path | str) -> list[dict[str, Any]]:
    """The records of a timeline file, in order.

    A torn last line (a worker killed mid-write) is skipped silently; any other line that is not a
    JSON record with a known ``kind`` is skipped with a warning. Raises :class:`StreamError` when
    the file is missing, or has content but no record at all (not a timeline).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise StreamError(
            f"no timeline at {path}: run `hailstream demo` (it writes <run dir>/{TIMELINE_FILE}) or "
            f"`hailstream worker --timeline {path}` first"
        ) from None
    except IsADirectoryError:
        raise StreamError(f"{path} is a directory; pass the timeline file ({path / TIMELINE_FILE})") from None
    records: list[dict[str, Any]] = []
    bad = 0
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and record.get("kind") in KINDS:
            records.append(record)
        elif i != last:
            bad += 1
            log.warning("%s line %d is not a timeline record; skipped", path, i + 1)
    if bad and not records:
        raise StreamError(f"{path} holds no timeline records ({bad} unreadable lines): is it a worker's --timeline file?")
    return records
