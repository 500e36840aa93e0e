"""Every Prometheus metric of hailstream, declared once (DESIGN §6), and the helpers that feed them.

Names are ``hailstream_<what>_<unit>`` (counters end in ``_total``, durations in ``_seconds``,
shares in ``_ratio``). Labels come from a closed set (:data:`ALLOWED_LABELS`): never a user or an
item, so the number of series stays bounded whatever the traffic. Each :class:`Metrics` lives in
its own ``CollectorRegistry`` (not prometheus_client's global one), so a process, or a test, can
build as many as it likes.

The worker and the trainer feed them with one call per event of interest, taking plain numbers:

- per micro-batch: :func:`observe_batch` (or :func:`observe_batch_stats` with the worker's
  ``BatchStats``), then :func:`observe_prequential`, :func:`observe_lag` and :func:`observe_drift`;
- on a model load or hot swap: :func:`set_model`;
- per fine-tune: :func:`count_trigger` when one is started, :func:`observe_finetune` when it ends.

:func:`serve_metrics` exposes ``/metrics`` over HTTP (127.0.0.1 unless told otherwise), and
:func:`declared_metric_names` lists every sample name the exposition can contain, for the tests
that check dashboards and alert rules.

>>> m = Metrics(process="worker")
>>> observe_batch(m, events=3, valid=2, predictions=2, dead_letters={"bad_json": 1}, latencies=[0.01, 0.02], seconds=0.004)
>>> m.value("hailstream_events_consumed_total"), m.value("hailstream_dead_letters_total", reason="bad_json")
(3.0, 1.0)
>>> set_model(m, "v12", vocab_items=4988)
>>> m.value("hailstream_model_version"), m.value("hailstream_vocabulary_items")
(12.0, 4988.0)
>>> "hailstream_prediction_latency_seconds_bucket" in declared_metric_names(m.registry)
True
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    make_wsgi_app,
)

from stream.errors import StreamError
from stream.records import REASONS

PREFIX = "hailstream_"
#: The only label names a hailstream metric may carry (an Info metric's keys excepted).
ALLOWED_LABELS = frozenset({"reason", "scorer", "detector", "partition", "outcome", "process"})
#: Dead-letter reasons exported (as 0) before the first one happens: the parser's reasons and the
#: worker's own failure code (``stream.worker.INTERNAL_ERROR``, not imported: it pulls in torch).
DEAD_LETTER_REASONS = (*REASONS, "internal_error")
#: How a fine-tune ends.
FINETUNE_OUTCOMES = ("promoted", "rejected", "failed")
#: What starts a fine-tune.
TRIGGER_REASONS = ("schedule", "events", "drift", "manual")
#: why a served version was rolled back: the worker's post-swap guard (stream.guard)
ROLLBACK_REASONS = ("guard",)
#: Detector names of :class:`stream.drift.DriftMonitor` with default names.
DRIFT_DETECTORS = ("accuracy", "input_unseen", "input_popularity")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
FINETUNE_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)

# Sample suffixes the text exposition adds to a family, by type (``_created`` is on by default in
# prometheus_client; it is harmless to list when disabled).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


class Metrics:
    """All hailstream metrics in one registry (a fresh one unless ``registry`` is given).

    ``process`` ("worker" or "trainer") fills the ``hailstream_process_info`` metric;
    ``process_collector`` adds prometheus_client's standard ``process_*`` CPU/memory metrics.
    Attributes are the metric objects; :meth:`value` reads one back (for tests and the demo).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        process: str = "worker",
        app_id: str = "hailstream",
        process_collector: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        # --- stream throughput -------------------------------------------------------------
        self.events_consumed = Counter(
            "hailstream_events_consumed_total", "Input messages taken from the interactions topic (valid or not).",
            registry=r,
        )
        self.predictions_published = Counter(
            "hailstream_predictions_published_total", "Top-k predictions sent to the predictions topic.", registry=r
        )
        self.dead_letters = Counter(
            "hailstream_dead_letters_total", "Input messages sent to the dead-letter topic, by reason.", ["reason"],
            registry=r,
        )
        self.duplicates_skipped = Counter(
            "hailstream_duplicates_skipped_total",
            "Redelivered events already applied to the user's state (at-least-once replays), skipped.",
            registry=r,
        )
        self.cold_events = Counter(
            "hailstream_cold_events_total",
            "Valid events whose user had no earlier prediction (not scored by the prequential metrics).",
            registry=r,
        )
        self.batch_processing = Histogram(
            "hailstream_batch_processing_seconds", "Wall time to process one micro-batch (validate, score, predict).",
            buckets=BATCH_SECONDS_BUCKETS, registry=r,
        )
        self.prediction_latency = Histogram(
            "hailstream_prediction_latency_seconds",
            "Event to prediction latency: from the input message's Kafka timestamp to the prediction.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "hailstream_batch_size_events", "Events per micro-batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.last_batch = Gauge(
            "hailstream_last_batch_timestamp_seconds", "Unix time the last micro-batch finished.", registry=r
        )
        self.consumer_lag = Gauge(
            "hailstream_consumer_lag_messages",
            "Messages not yet consumed on the interactions topic (high watermark - position), by partition.",
            ["partition"], registry=r,
        )

        # --- prequential accuracy (DESIGN §4) ------------------------------------------------
        self.prequential_k = Gauge(
            "hailstream_prequential_k", "The k of the prequential HR@k / NDCG@k / MRR@k (settings.top_k).", registry=r
        )
        self.window_hr = Gauge(
            "hailstream_prequential_window_hr_ratio", "HR@k over the last window of scored events, by scorer.",
            ["scorer"], registry=r,
        )
        self.window_ndcg = Gauge(
            "hailstream_prequential_window_ndcg_ratio", "NDCG@k over the last window of scored events, by scorer.",
            ["scorer"], registry=r,
        )
        self.window_mrr = Gauge(
            "hailstream_prequential_window_mrr_ratio", "MRR@k over the last window of scored events, by scorer.",
            ["scorer"], registry=r,
        )
        self.stream_hr = Gauge(
            "hailstream_prequential_hr_ratio", "HR@k over the whole stream since the process started, by scorer.",
            ["scorer"], registry=r,
        )
        self.stream_ndcg = Gauge(
            "hailstream_prequential_ndcg_ratio", "NDCG@k over the whole stream since the process started, by scorer.",
            ["scorer"], registry=r,
        )
        self.stream_mrr = Gauge(
            "hailstream_prequential_mrr_ratio", "MRR@k over the whole stream since the process started, by scorer.",
            ["scorer"], registry=r,
        )
        self.scored_events = Gauge(
            "hailstream_prequential_scored_events", "Events scored (non-cold) since the process started, by scorer.",
            ["scorer"], registry=r,
        )

        # --- drift (stream.drift) ------------------------------------------------------------
        self.drift_detections = Counter(
            "hailstream_drift_detections_total", "Drifts detected, by detector.", ["detector"], registry=r
        )
        self.drift_statistic = Gauge(
            "hailstream_drift_statistic_ratio",
            "The statistic each drift detector watches: estimated hit rate (accuracy), unseen-item share "
            "(input_unseen), Jensen-Shannon divergence of item popularity (input_popularity).",
            ["detector"], registry=r,
        )
        self.drift_window = Gauge(
            "hailstream_drift_window_events", "Events behind each drift detector's statistic.", ["detector"], registry=r
        )
        self.drift_last_detection = Gauge(
            "hailstream_drift_last_detection_timestamp_seconds", "Unix time of each detector's last detection.",
            ["detector"], registry=r,
        )

        # --- model lifecycle -----------------------------------------------------------------
        self.model_version = Gauge(
            "hailstream_model_version", "Numeric version of the live model (see version_number).", registry=r
        )
        self.model_loaded = Gauge(
            "hailstream_model_loaded_timestamp_seconds", "Unix time the live model version was loaded.", registry=r
        )
        self.model_swaps = Counter(
            "hailstream_model_swaps_total", "Hot swaps to a new model version.", registry=r
        )
        self.rollbacks = Counter(
            "hailstream_rollbacks_total",
            "Served versions rolled back to the previous one, by reason (guard: worse than it on the same events).",
            ["reason"], registry=r,
        )
        self.vocabulary_items = Gauge(
            "hailstream_vocabulary_items", "Items in the live model's vocabulary (padding excluded).", registry=r
        )
        self.finetune_triggers = Counter(
            "hailstream_finetune_triggers_total", "Fine-tunes started, by what triggered them.", ["reason"], registry=r
        )
        self.finetunes = Counter(
            "hailstream_finetunes_total", "Fine-tunes finished, by outcome (promoted, rejected, failed).", ["outcome"],
            registry=r,
        )
        self.finetune_duration = Histogram(
            "hailstream_finetune_duration_seconds", "Wall time of one fine-tune, validation included.",
            buckets=FINETUNE_BUCKETS, registry=r,
        )
        self.finetune_loss = Gauge(
            "hailstream_finetune_loss", "Training loss of the last fine-tune's final epoch.", registry=r
        )
        self.finetune_validation_hr = Gauge(
            "hailstream_finetune_validation_hr_ratio",
            "HR@k on the newest slice at the last fine-tune, for the candidate and the live model (scorer label).",
            ["scorer"], registry=r,
        )

        self.info = Info("hailstream_process", "What this process is.", registry=r)
        self.info.info({"process": process, "app_id": app_id, "version": _package_version()})
        if process_collector:
            ProcessCollector(registry=r)

        # Known label values exist from the start (as 0), so that rate() and the dashboards see a
        # series before the first event of its kind.
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for outcome in FINETUNE_OUTCOMES:
            self.finetunes.labels(outcome=outcome)
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(reason=reason)
        for reason in TRIGGER_REASONS:
            self.finetune_triggers.labels(reason=reason)
        for det in DRIFT_DETECTORS:
            self.drift_detections.labels(detector=det)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (None if it does not exist).

        >>> Metrics().value("hailstream_finetunes_total", outcome="failed")
        0.0
        """
        v = self.registry.get_sample_value(name, labels)
        return None if v is None else float(v)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("hailstream")
    except Exception:  # not installed (a source checkout on sys.path): still serve metrics
        return "unknown"


# --- feeding helpers ---------------------------------------------------------------------------


class BatchStatsLike(Protocol):
    """What :func:`observe_batch_stats` reads: the fields of ``stream.worker.BatchStats``."""

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
    """What :func:`observe_prequential` reads from ``stream.prequential.Prequential``."""

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
    """``stream.drift.DriftState``."""

    @property
    def detector(self) -> str: ...
    @property
    def statistic(self) -> float: ...
    @property
    def window(self) -> int: ...


class DetectionLike(Protocol):
    """``stream.drift.Detection``."""

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
    """:func:`observe_batch` from a ``stream.worker.BatchStats`` (``BatchResult.stats``)."""
    observe_batch(
        metrics,
        events=stats.events,
        valid=stats.valid,
        predictions=stats.predictions,
        duplicates=stats.duplicates,
        cold=stats.cold,
        dead_letters=stats.dead_letters,
        latencies=stats.latencies,
        seconds=seconds,
    )


def observe_prequential(metrics: Metrics, scorers: Mapping[str, PrequentialLike]) -> None:
    """Set the windowed and whole-stream HR/NDCG/MRR gauges of every scorer (the live model and
    each baseline; the worker's ``new_prequential`` mapping). Cheap: call it once per batch.

    >>> from stream.prequential import Prequential
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

    >>> from stream.drift import AccuracyDrift, Detection
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


_DIGITS = re.compile(r"\d+")


def version_number(version: str | int | float) -> float:
    """The number a model version string is exported as: the number itself, else its last run of
    digits (``"v12"`` -> 12, ``"ft-0007"`` -> 7), else 0 (an unversioned initial model).

    >>> version_number("v12"), version_number("ft-0007"), version_number("initial"), version_number(3)
    (12.0, 7.0, 0.0, 3.0)
    """
    if isinstance(version, int | float):
        return float(version)
    try:
        return float(version)
    except ValueError:
        runs = _DIGITS.findall(version)
        return float(runs[-1]) if runs else 0.0


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


# --- introspection -----------------------------------------------------------------------------


def declared_metric_names(registry: CollectorRegistry | Metrics) -> set[str]:
    """Every sample name the registry's text exposition can contain, whether or not a sample
    exists yet: counters with ``_total``/``_created``, histograms with ``_bucket``/``_sum``/
    ``_count``/``_created``, info metrics with ``_info``, gauges as declared."""
    reg = registry.registry if isinstance(registry, Metrics) else registry
    names: set[str] = set()
    for family in reg.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(s.name for s in family.samples)
    return names


def declared_families(registry: CollectorRegistry | Metrics) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Family name -> (type, label names) of every hailstream metric (for the naming tests)."""
    reg = registry.registry if isinstance(registry, Metrics) else registry
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in reg.collect():
        if not family.name.startswith(PREFIX):
            continue
        labels: set[str] = set()
        for s in family.samples:
            labels.update(k for k in s.labels if k not in ("le", "quantile"))
        out[family.name] = (family.type, tuple(sorted(labels)))
    return out


# --- HTTP exposition ---------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown the worker's log


class MetricsServer:
    """A running ``/metrics`` endpoint: :attr:`port` (the real one when 0 was asked),
    :attr:`url`, :meth:`close` (also a context manager)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, bind: str) -> None:
        self._server = server
        self._thread = thread
        self.bind = bind
        self.port = int(server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url})"


def serve_metrics(
    registry: CollectorRegistry | Metrics, port: int = 9464, bind: str = "127.0.0.1"
) -> MetricsServer:
    """Serve the registry's metrics at ``http://bind:port/metrics`` from a daemon thread.

    Binds 127.0.0.1 by default (``settings.metrics_bind``); only a container, where Prometheus
    scrapes over the container network, should set ``0.0.0.0``. ``port=0`` picks a free port.

    >>> import urllib.request
    >>> m = Metrics(process_collector=False)
    >>> with serve_metrics(m, port=0) as srv:
    ...     body = urllib.request.urlopen(srv.url, timeout=5).read().decode()
    >>> "hailstream_events_consumed_total 0.0" in body
    True
    """
    reg = registry.registry if isinstance(registry, Metrics) else registry
    server_class = _Server6 if ":" in bind else _Server
    try:
        server = make_server(bind, port, make_wsgi_app(reg), server_class, handler_class=_QuietHandler)
    except OSError as e:
        raise StreamError(
            f"cannot serve metrics on {bind}:{port}: {e}; set HAILSTREAM_METRICS_PORT to a free port "
            "(0 picks one) or HAILSTREAM_METRICS_BIND to an address of this host"
        ) from e
    thread = threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True)
    thread.start()
    return MetricsServer(server, thread, bind)
