"""Feeding the metrics of :mod:`stream.observe.metrics`: one call per event of interest, taking
plain numbers (or objects shaped like the worker's batch stats, prequential scorers and drift
states, see the protocols), so that the worker and the trainer never touch a metric object.

- per micro-batch: :func:`observe_batch` (or :func:`observe_batch_stats` with the worker's
  ``BatchStats``), then :func:`observe_prequential`, :func:`observe_lag`, :func:`observe_drift` and
  :func:`observe_state_cache`;
- on a model load or hot swap: :func:`set_model`;
- per fine-tune: :func:`count_trigger` when one is started, :func:`observe_finetune` when it ends.

>>> m = Metrics(process="worker")
>>> observe_batch(m, events=3, valid=2, predictions=2, dead_letters={"bad_json": 1}, latencies=[0.01, 0.02], seconds=0.004)
>>> m.value("hailstream_events_consumed_total"), m.value("hailstream_dead_letters_total", reason="bad_json")
(3.0, 1.0)
>>> set_model(m, "v12", vocab_items=4988)
>>> m.value("hailstream_model_version"), m.value("hailstream_vocabulary_items")
(12.0, 4988.0)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from stream.errors import StreamError
from stream.messages import version_number
from stream.observe.metrics import FINETUNE_OUTCOMES, STATE_CACHE_OUTCOMES, TRIGGER_REASONS, Metrics


class BatchStatsLike(Protocol):
    """What :func:`observe_batch_stats` reads: the fields of ``stream.worker.batch.BatchStats``."""

    @property
    def events(self) -> int: ...
    @property
    def valid(self) -> int: ...
    @property
    def predictions(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def cold(self) -> int: ...
    @property
    def dead_letters(self) -> Mapping[str, int]: ...
    @property
    def latencies(self) -> Sequence[float]: ...


class PrequentialLike(Protocol):
    """What :func:`observe_prequential` reads from ``stream.worker.prequential.Prequential``."""

    @property
    def k(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def hr(self) -> float: ...
    @property
    def ndcg(self) -> float: ...
    @property
    def mrr(self) -> float: ...
    def window_values(self) -> tuple[int, float, float, float]: ...


class DriftStateLike(Protocol):
    """``stream.observe.drift.DriftState``."""

    @property
    def detector(self) -> str: ...
    @property
    def statistic(self) -> float: ...
    @property
    def window(self) -> int: ...


class DetectionLike(Protocol):
    """``stream.observe.drift.Detection``."""

    @property
    def detector(self) -> str: ...


def observe_batch(
    metrics: Metrics,
    *,
    events: int,
    valid: int = 0,
    predictions: int = 0,
    duplicates: int = 0,
    cold: int = 0,
    resets: int = 0,
    dead_letters: Mapping[str, int] | None = None,
    latencies: Iterable[float] = (),
    seconds: float | None = None,
    now: float | None = None,
) -> None:
    """Count one micro-batch: ``events`` consumed (valid or not), ``predictions`` published,
    ``dead_letters`` by reason, ``duplicates`` skipped, ``cold`` events, each event -> prediction
    latency in seconds (negative ones, from clock skew between producer and worker, count as 0),
    and the batch's processing time ``seconds``. ``valid`` is accepted for symmetry with
    ``BatchStats`` (it is consumed - dead letters - duplicates)."""
    if events < 0 or predictions < 0:
        raise StreamError(f"a batch cannot have negative counts (events={events}, predictions={predictions})")
    metrics.events_consumed.inc(events)
    metrics.predictions_published.inc(predictions)
    if duplicates:
        metrics.duplicates_skipped.inc(duplicates)
    if cold:
        metrics.cold_events.inc(cold)
    if resets:
        metrics.position_resets.inc(resets)
    for reason, n in (dead_letters or {}).items():
        if n:
            metrics.dead_letters.labels(reason=reason).inc(n)
    for lat in latencies:
        metrics.prediction_latency.observe(max(0.0, float(lat)))
    metrics.batch_size.observe(events)
    if seconds is not None:
        metrics.batch_processing.observe(max(0.0, float(seconds)))
    metrics.last_batch.set(time.time() if now is None else now)


def observe_batch_stats(metrics: Metrics, stats: BatchStatsLike, seconds: float | None = None) -> None:
    """:func:`observe_batch` from a ``stream.worker.batch.BatchStats`` (``BatchResult.stats``)."""
    observe_batch(
        metrics,
        events=stats.events,
        valid=stats.valid,
        predictions=stats.predictions,
        duplicates=stats.duplicates,
        cold=stats.cold,
        resets=getattr(stats, "resets", 0),
        dead_letters=stats.dead_letters,
        latencies=stats.latencies,
        seconds=seconds,
    )


def observe_prequential(metrics: Metrics, scorers: Mapping[str, PrequentialLike]) -> None:
    """Set the windowed and whole-stream HR/NDCG/MRR gauges of every scorer (the live model and
    each baseline; the worker's ``new_prequential`` mapping). Cheap: call it once per batch.

    >>> from stream.worker.prequential import Prequential
    >>> p = Prequential(k=10, window=100); _ = p.update(["a", "b"], "b")
    >>> m = Metrics(); observe_prequential(m, {"hail": p})
    >>> m.value("hailstream_prequential_window_hr_ratio", scorer="hail"), m.value("hailstream_prequential_k")
    (1.0, 10.0)
    """
    for name, p in scorers.items():
        _, whr, wndcg, wmrr = p.window_values()
        metrics.window_hr.labels(scorer=name).set(whr)
        metrics.window_ndcg.labels(scorer=name).set(wndcg)
        metrics.window_mrr.labels(scorer=name).set(wmrr)
        metrics.stream_hr.labels(scorer=name).set(p.hr)
        metrics.stream_ndcg.labels(scorer=name).set(p.ndcg)
        metrics.stream_mrr.labels(scorer=name).set(p.mrr)
        metrics.scored_events.labels(scorer=name).set(p.n)
        metrics.prequential_k.set(p.k)


def observe_state_cache(metrics: Metrics, cache: Mapping[str, Any] | None,
                        before: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
    """Export an incremental-inference cache (``OnlineRecommender.cache_stats()``: ``version``,
    ``entries``, ``bytes`` and the ``hits``/``misses`` since that version's first batch; None = no
    cache) and count the lookups made since ``before`` (the previous call's answer: a new version's
    cache counts from 0). Returns ``cache``, the next call's ``before``.

    >>> m = Metrics()
    >>> seen = observe_state_cache(m, {"version": "1", "entries": 3, "bytes": 900, "hits": 5, "misses": 3})
    >>> seen = observe_state_cache(m, {"version": "2", "entries": 1, "bytes": 300, "hits": 2, "misses": 1}, seen)
    >>> m.value("hailstream_state_cache_lookups_total", outcome="hit"), m.value("hailstream_state_cache_bytes")
    (7.0, 300.0)
    """
    if cache is None:
        metrics.state_cache_entries.set(0)
        metrics.state_cache_bytes.set(0)
        return None
    base = before if before is not None and before.get("version") == cache["version"] else {}
    for outcome, field in zip(STATE_CACHE_OUTCOMES, ("hits", "misses"), strict=True):
        new = int(cache[field]) - int(base.get(field, 0))
        if new > 0:
            metrics.state_cache_lookups.labels(outcome=outcome).inc(new)
    metrics.state_cache_entries.set(int(cache["entries"]))
    metrics.state_cache_bytes.set(int(cache["bytes"]))
    return cache


def observe_lag(metrics: Metrics, lags: Mapping[int, int | float]) -> None:
    """Set the consumer lag (messages) of each partition of the interactions topic."""
    for partition, lag in lags.items():
        metrics.consumer_lag.labels(partition=str(int(partition))).set(max(0.0, float(lag)))


def observe_drift(
    metrics: Metrics,
    states: Iterable[DriftStateLike],
    detections: Iterable[DetectionLike] = (),
    now: float | None = None,
) -> None:
    """Export drift detector states (``DriftMonitor.states()``) and count new ``detections`` (the
    records ``update`` returned since the last call).

    >>> from stream.observe.drift import AccuracyDrift, Detection
    >>> m = Metrics(); acc = AccuracyDrift()
    >>> observe_drift(m, acc.states(), [Detection("accuracy", 10, 0.1, 0.5)], now=1.0)
    >>> m.value("hailstream_drift_detections_total", detector="accuracy")
    1.0
    """
    for s in states:
        metrics.drift_statistic.labels(detector=s.detector).set(s.statistic)
        metrics.drift_window.labels(detector=s.detector).set(s.window)
    t = time.time() if now is None else now
    for d in detections:
        metrics.drift_detections.labels(detector=d.detector).inc()
        metrics.drift_last_detection.labels(detector=d.detector).set(t)


def set_model(
    metrics: Metrics, version: str | int, vocab_items: int | None = None, swapped: bool = False, now: float | None = None
) -> None:
    """Record the live model version (and its vocabulary size, padding excluded); ``swapped``
    counts a hot swap (not the first load)."""
    metrics.model_version.set(version_number(version))
    metrics.model_loaded.set(time.time() if now is None else now)
    if vocab_items is not None:
        metrics.vocabulary_items.set(vocab_items)
    if swapped:
        metrics.model_swaps.inc()


def count_trigger(metrics: Metrics, reason: str) -> None:
    """Count a fine-tune start; ``reason`` is one of :data:`TRIGGER_REASONS`."""
    if reason not in TRIGGER_REASONS:
        raise StreamError(f"fine-tune trigger reason must be one of {', '.join(TRIGGER_REASONS)}, not {reason!r}")
    metrics.finetune_triggers.labels(reason=reason).inc()


def observe_finetune(
    metrics: Metrics,
    outcome: str,
    seconds: float,
    loss: float | None = None,
    candidate_hr: float | None = None,
    live_hr: float | None = None,
) -> None:
    """Record a finished fine-tune: ``outcome`` (one of :data:`FINETUNE_OUTCOMES`), its wall time,
    final training loss and the validation HR@k of the candidate and of the live model."""
    if outcome not in FINETUNE_OUTCOMES:
        raise StreamError(f"fine-tune outcome must be one of {', '.join(FINETUNE_OUTCOMES)}, not {outcome!r}")
    metrics.finetunes.labels(outcome=outcome).inc()
    metrics.finetune_duration.observe(max(0.0, float(seconds)))
    if loss is not None:
        metrics.finetune_loss.set(loss)
    if candidate_hr is not None:
        metrics.finetune_validation_hr.labels(scorer="candidate").set(candidate_hr)
    if live_hr is not None:
        metrics.finetune_validation_hr.labels(scorer="live").set(live_hr)
