"""Live counters of one worker process (:class:`WorkerStats`), fed once per batch by the agent's
sink and turned into the stats file's :class:`stream.snapshots.WorkerSnapshot` by the runtime."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from stream.records import INTERNAL_ERROR
from stream.worker.batch import BatchResult
from stream.worker.prequential import Prequential


class WorkerStats:
    """Live counters of one worker process, readable in-process and written as a JSON file.

    ``dead_letters`` is keyed by reason; latency percentiles cover the last ``latency_window``
    predictions (event -> prediction, from the Kafka message time).
    """

    def __init__(self, prequential: Mapping[str, Prequential], latency_window: int = 10000) -> None:
        self.prequential = prequential
        self.events = 0
        self.valid = 0
        self.predictions = 0
        self.duplicates = 0
        self.resets = 0
        self.evicted = 0
        self.cold = 0
        self.backfilled = 0
        self.batches = 0
        self.dead_letters: Counter[str] = Counter()
        self.model_version = ""
        self.started_at = time.time()
        self.first_batch_at: float | None = None
        self.last_batch_at: float | None = None
        self.first_batch_events = 0
        self.busy: dict[str, float] = {}
        self.busy_cpu: dict[str, float] = {}
        self._latencies: deque[float] = deque(maxlen=latency_window)

    def add(self, result: BatchResult) -> None:
        s = result.stats
        self.events += s.events
        self.valid += s.valid
        self.predictions += s.predictions
        self.duplicates += s.duplicates
        self.resets += s.resets
        self.cold += s.cold
        self.backfilled += s.backfilled
        self.dead_letters.update(s.dead_letters)
        self._latencies.extend(s.latencies)
        self.model_version = result.model_version
        self.batches += 1
        for phase, seconds in s.seconds.items():
            self.add_busy(phase, seconds)
        for phase, seconds in s.cpu_seconds.items():
            self.busy_cpu[phase] = self.busy_cpu.get(phase, 0.0) + seconds
        self.last_batch_at = time.time()
        if self.first_batch_at is None:
            self.first_batch_at, self.first_batch_events = self.last_batch_at, s.events

    def count_internal_errors(self, n: int) -> None:
        """Events dead-lettered by the agent itself (a whole batch failed outside process_batch)."""
        self.events += n
        self.dead_letters[INTERNAL_ERROR] += n

    def add_busy(self, phase: str, seconds: float) -> None:
        """Account time the agent spent outside :func:`process_batch` (e.g. ``"send"``)."""
        self.busy[phase] = self.busy.get(phase, 0.0) + seconds

    @property
    def events_per_second(self) -> float | None:
        """Throughput between the end of the first batch and the end of the last one."""
        if self.first_batch_at is None or self.last_batch_at is None or self.last_batch_at <= self.first_batch_at:
            return None
        return (self.events - self.first_batch_events) / (self.last_batch_at - self.first_batch_at)

    def latency(self) -> dict[str, float | None]:
        """p50 / p99 / max event -> prediction latency in seconds (None before any prediction)."""
        if not self._latencies:
            return {"p50": None, "p99": None, "max": None}
        a = np.fromiter(self._latencies, dtype=np.float64)
        p50, p99 = np.percentile(a, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(a.max())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot: counters, model version, latency and prequential per scorer."""
        now = time.time()
        return {
            "events": self.events,
            "valid": self.valid,
            "predictions": self.predictions,
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letter_reasons": dict(self.dead_letters),
            "duplicates_skipped": self.duplicates,
            "position_resets": self.resets,
            "users_evicted": self.evicted,
            "cold": self.cold,
            "backfilled": self.backfilled,
            "batches": self.batches,
            "model_version": self.model_version,
            "uptime_s": now - self.started_at,
            "first_batch_at": self.first_batch_at,
            "last_batch_at": self.last_batch_at,
            "events_per_s": self.events_per_second,
            "busy_s": dict(self.busy),
            "busy_cpu_s": dict(self.busy_cpu),
            "written_at": now,
            "latency_s": self.latency(),
            "prequential": {name: p.summary() for name, p in self.prequential.items()},
        }
