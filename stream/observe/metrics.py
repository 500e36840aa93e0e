"""Every Prometheus metric of hailstream, declared once (DESIGN §6), and the helpers that feed them.

Names are ``hailstream_<what>_<unit>`` (counters end in ``_total``, durations in ``_seconds``,
shares in ``_ratio``). Labels come from a closed set (:data:`ALLOWED_LABELS`): never a user or an
item, so the number of series stays bounded whatever the traffic. Each :class:`Metrics` lives in
its own ``CollectorRegistry`` (not prometheus_client's global one), so a process, or a test, can
build as many as it likes.

They are fed through :mod:`stream.observe.feed` (one call per event of interest).
:func:`serve_metrics` exposes ``/metrics`` over HTTP (127.0.0.1 unless told otherwise), and
:func:`declared_metric_names` lists every sample name the exposition can contain, for the tests
that check dashboards and alert rules.

>>> m = Metrics(process="worker")
>>> m.value("hailstream_events_consumed_total"), m.value("hailstream_model_version")
(0.0, 0.0)
>>> "hailstream_prediction_latency_seconds_bucket" in declared_metric_names(m.registry)
True
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)

from stream.errors import StreamError
from stream.records import INTERNAL_ERROR, REASONS

PREFIX = "hailstream_"
#: The only label names a hailstream metric may carry (an Info metric's keys excepted).
ALLOWED_LABELS = frozenset({"reason", "scorer", "detector", "partition", "outcome", "process"})
#: Dead-letter reasons exported (as 0) before the first one happens: the parser's reasons and the
#: worker's own failure code.
DEAD_LETTER_REASONS = (*REASONS, INTERNAL_ERROR)
#: How a fine-tune ends.
FINETUNE_OUTCOMES = ("promoted", "rejected", "failed")
#: What starts a fine-tune.
TRIGGER_REASONS = ("schedule", "events", "drift", "manual")
#: why a served version was rolled back: the worker's post-swap guard (stream.worker.guard)
ROLLBACK_REASONS = ("guard",)
#: why a worker refused an announced model (stream.worker.hotswap)
REFUSAL_REASONS = ("unsigned", "bad_signature", "outside_store", "bad_checkpoint")
#: how an incremental-inference cache lookup ends (models.incremental): a cached state stepped, or a full encode
STATE_CACHE_OUTCOMES = ("hit", "miss")
#: Detector names of :class:`stream.observe.drift.DriftMonitor` with default names.
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
        self.position_resets = Counter(
            "hailstream_position_resets_total",
            "Events at or before a user's last applied position stored under another epoch of the input topic "
            "(a new broker or a recreated topic): processed, not skipped.",
            registry=r,
        )
        self.users_evicted = Counter(
            "hailstream_states_evicted_total",
            "States dropped from the worker's table by the max_users cap (least recently updated first).",
            registry=r,
        )
        self.model_refusals = Counter(
            "hailstream_model_refusals_total",
            "Model announcements a worker refused to serve, by reason (unsigned, bad_signature, outside_store, "
            "bad_checkpoint).",
            ["reason"], registry=r,
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

        self.state_cache_lookups = Counter(
            "hailstream_state_cache_lookups_total",
            "Histories scored with incremental inference, by outcome: hit (stepped from a cached encoder "
            "state) or miss (encoded in full). Stays 0 when the cache is off or the model has no exact state.",
            ["outcome"], registry=r,
        )
        self.state_cache_entries = Gauge(
            "hailstream_state_cache_entries", "Encoder states cached for the live model version.", registry=r
        )
        self.state_cache_bytes = Gauge(
            "hailstream_state_cache_bytes",
            "Bytes of the cached encoder states of the live version (what HAILSTREAM_STATE_CACHE_MB bounds).",
            registry=r,
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

        # --- drift (stream.observe.drift) ------------------------------------------------------------
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
        for reason in REFUSAL_REASONS:
            self.model_refusals.labels(reason=reason)
        for reason in TRIGGER_REASONS:
            self.finetune_triggers.labels(reason=reason)
        for det in DRIFT_DETECTORS:
            self.drift_detections.labels(detector=det)
        for outcome in STATE_CACHE_OUTCOMES:
            self.state_cache_lookups.labels(outcome=outcome)

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


class MetricsServer:
    """A running ``/metrics`` endpoint (prometheus_client's own server): :attr:`port` (the real one
    when 0 was asked), :attr:`url`, :meth:`close` (also a context manager)."""

    def __init__(self, server: Any, thread: threading.Thread, bind: str) -> None:
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
    """Serve the registry's metrics at ``http://bind:port/metrics`` from a daemon thread
    (``prometheus_client.start_http_server``: threaded, IPv4 or IPv6, no log line per scrape).

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
    try:
        server, thread = start_http_server(port, addr=bind, registry=reg)
    except OSError as e:
        raise StreamError(
            f"cannot serve metrics on {bind}:{port}: {e}; set HAILSTREAM_METRICS_PORT to a free port "
            "(0 picks one) or HAILSTREAM_METRICS_BIND to an address of this host"
        ) from e
    thread.name = f"metrics-{server.server_address[1]}"
    return MetricsServer(server, thread, bind)
