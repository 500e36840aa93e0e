"""The worker's observability per micro-batch: Prometheus metrics and drift detection.

:class:`WorkerMonitor` is called once per processed batch (:meth:`~WorkerMonitor.after_batch`, in
the batch thread, off the event loop): it counts the batch (:func:`stream.observe.metrics.observe_batch_stats`),
feeds every valid event to the :class:`stream.observe.drift.DriftMonitor` (accuracy drift on the per-event
hit@k, input drift on unseen items and item popularity), exports the detectors' state, and at
most once per ``interval`` seconds the prequential gauges. It returns the drift detections of the
batch, which the agent logs and publishes on the model-updates topic as ``drift`` messages for the
trainer (:func:`stream.messages.drift_message`). Consumer lag is exported by :meth:`observe_lag`
from the fetch high watermark (BROKER.md: ListOffsets under-reports it).

>>> from stream.worker.batch import BatchStats
>>> from stream.worker.prequential import Prequential
>>> mon = WorkerMonitor(Metrics(process_collector=False), {"hail": Prequential(10)}, interval=0.0)
>>> stats = BatchStats(events=2, valid=2, predictions=2, per_event=[(None, "a", True), (1.0, "b", False)])
>>> mon.after_batch(stats, seconds=0.01)
[]
>>> mon.metrics.value("hailstream_events_consumed_total"), mon.metrics.value("hailstream_drift_window_events", detector="accuracy")
(2.0, 1.0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from stream.observe.drift import Detection, DriftMonitor
from stream.observe.feed import (
    observe_batch_stats,
    observe_drift,
    observe_lag,
    observe_prequential,
    observe_state_cache,
)
from stream.observe.metrics import Metrics
from stream.worker.batch import BatchStats
from stream.worker.prequential import Prequential

log = logging.getLogger(__name__)


class WorkerMonitor:
    """Metrics and drift for one worker; see the module docstring. ``drift=None`` uses a
    :class:`DriftMonitor` with default detectors; ``interval`` throttles the prequential gauges;
    ``cache_stats`` (None: no cache to export) is read after every batch."""

    def __init__(
        self,
        metrics: Metrics,
        prequential: Mapping[str, Prequential],
        drift: DriftMonitor | None = None,
        interval: float = 1.0,
        cache_stats: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.cache_stats = cache_stats
        self._cache_seen: Mapping[str, Any] | None = None
        self.prequential = prequential
        self.drift = drift if drift is not None else DriftMonitor()
        self.interval = interval
        self.detections: list[Detection] = []
        self._next = 0.0
        self._lock = threading.Lock()
        # Export the detectors' (empty) state from the start, so every series exists.
        observe_drift(metrics, self.drift.states())
        metrics.prequential_k.set(next(iter(prequential.values())).k if prequential else 10)

    def after_batch(self, stats: BatchStats, seconds: float | None = None) -> list[Detection]:
        """Observe one processed batch; returns its drift detections (usually none)."""
        with self._lock:  # batches are sequential; the lock only guards against misuse
            if seconds is None:
                seconds = sum(stats.seconds.values())
            observe_batch_stats(self.metrics, stats, seconds)
            found: list[Detection] = []
            for hit, item, known in stats.per_event:
                found.extend(self.drift.update(hit, item, known))
            observe_drift(self.metrics, self.drift.states(), found)
            for d in found:
                log.warning("%s", d)
            self.detections.extend(found)
            del self.detections[:-256]
            if self.cache_stats is not None:
                self._cache_seen = observe_state_cache(self.metrics, self.cache_stats(), self._cache_seen)
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.interval
                observe_prequential(self.metrics, self.prequential)
            return found

    def flush(self) -> None:
        """Export the prequential gauges now (e.g. at shutdown)."""
        with self._lock:
            observe_prequential(self.metrics, self.prequential)

    def observe_lag(self, lags: Mapping[int, int | float]) -> None:
        observe_lag(self.metrics, lags)
