"""The Faust app of the stream worker: topics, the per-user table, ONE thin agent, and
:func:`run_worker` to run it programmatically (no ``faust worker`` command line).

The agent only moves bytes: it takes micro-batches (``settings.batch_size`` events or
``settings.batch_timeout`` seconds), hands them to :func:`stream.worker.process_batch` and writes
what comes back: table values (with their changelog records), predictions and dead letters, all
sent without waiting per message (delivery is confirmed by Faust's flush before each offset
commit, so at-least-once holds). Faust settings follow BROKER.md (fast group joins, pre-created
topics, earliest offset reset, no exactly-once, web server off and bound to 127.0.0.1).

Live counters: :attr:`WorkerRuntime.stats` in-process, and a JSON file rewritten every second
when ``stats_path`` is given (:func:`stream.worker.read_stats` reads it).

Operations (issues 3 and 4), set up by :func:`run_worker`: Prometheus metrics on
``settings.metrics_bind:metrics_port`` (:class:`stream.monitor.WorkerMonitor`, fed per batch in the
batch thread, plus consumer lag from the fetch high watermark once a second); drift detections
logged, counted and published on the model-updates topic for the trainer; hot swap of announced
model versions (:class:`stream.hotswap.HotSwapper` in a model-updates reader thread); and at
start-up the model store's live version when it is newer than ``--checkpoint``. With
``--timeline PATH`` the run's timeline is recorded there (:mod:`stream.timeline`, drawn by
``hailstream report``).

Run from a shell: ``python -m stream.app --checkpoint model.safetensors --stats stats.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import faust
import torch
from faust.types import TP

from stream.changelog import read_changelog
from stream.control import CONTROL_KEY, drift_message
from stream.drift import Detection
from stream.errors import StreamError
from stream.hotswap import newer_in_store
from stream.metrics import Metrics, MetricsServer, serve_metrics
from stream.online import OnlineRecommender
from stream.records import dead_letter
from stream.runtime import WorkerRuntime, build_runtime
from stream.settings import Settings
from stream.timeline import DEFAULT_EVERY, Timeline
from stream.updates import ControlListener
from stream.worker import (
    INTERNAL_ERROR,
    BatchResult,
    Source,
    process_batch,
)

log = logging.getLogger(__name__)

TABLE_NAME = "user-state"
PRODUCER_LINGER_S = 0.005


def changelog_topic(settings: Settings) -> str:
    """Name of the user-state table's changelog topic (Faust's ``<app_id>-<table>-changelog``).

    >>> changelog_topic(Settings(app_id="hs"))
    'hs-user-state-changelog'
    """
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def fetch_wait_ms(settings: Settings) -> int:
    """How long a fetch may wait on the broker for new data: the batch timeout (10..500 ms).

    >>> fetch_wait_ms(Settings(batch_timeout=0.05))
    50
    """
    return int(round(1000 * min(max(settings.batch_timeout, 0.01), 0.5)))


def tune_fetch_wait(app: faust.App, ms: int) -> bool:
    """Shorten the consumer's fetch wait; True when applied.

    Faust hard-codes aiokafka's ``fetch_max_wait_ms=1500``, and Tansu holds a fetch for that long
    when no data is there when it arrives, even if data comes meanwhile: at low rates that alone
    costs ~0.4 s (p50) to ~0.75 s (p99) of event -> prediction latency (measured here; 7 ms / 18
    ms at 20 ms). The value lives on aiokafka's fetcher, read for each fetch request, so setting
    it once the consumer has started takes effect at the next fetch.
    """
    fetcher = getattr(getattr(getattr(app.consumer, "_thread", None), "_consumer", None), "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    fetcher._fetch_max_wait_ms = ms
    return True


def make_app(settings: Settings, runtime: WorkerRuntime | None = None, *, datadir: Path | str | None = None) -> faust.App:
    """The Faust app with BROKER.md's fast-start settings, the topics (raw bytes), the changelogged
    per-user table and, when ``runtime`` is given, the agent and the stats timer.

    ``datadir`` is Faust's data directory (default: a new temporary directory that is left
    behind; :func:`run_worker` makes and removes its own)."""
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_urls(),
        broker_credentials=settings.faust_broker_credentials(),
        broker_session_timeout=2.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=2.0,
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_linger=PRODUCER_LINGER_S,
        web_enabled=False,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_bind,
        store="memory://",
        datadir=str(datadir) if datadir is not None else tempfile.mkdtemp(prefix="hailstream-faust-"),
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        autodiscover=False,
    )
    interactions = app.topic(
        settings.interactions_topic, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    table = app.Table(
        TABLE_NAME,
        default=None,
        partitions=settings.partitions,
        # JSON both ways; no value_type: Faust would try to rebuild a Record from each dict on
        # recovery (value_type=dict fails there), while None gives the plain dict back.
        key_type=str,
        help="per-user state: last max_seq_len item ids, last published top-k, last applied offset",
    )

    @table.on_recover
    async def complete_recovery() -> None:
        # Faust stops restoring at the high watermark that ListOffsets reports, and Tansu reports
        # less than the real end (BROKER.md): the newest values of many users would be lost on
        # every restart. Read the rest of the changelog (up to the fetch high watermark, which
        # is right) before the stream resumes.
        if not tune_fetch_wait(app, fetch_wait_ms(settings)):
            log.warning("cannot shorten the consumer fetch wait (Faust/aiokafka internals changed?): "
                        "expect up to 1.5 s more latency at low event rates")
        topic = changelog_topic(settings)
        actives = app.assignor.assigned_actives()
        partitions = sorted({tp.partition for tp in actives if tp.topic in (topic, settings.interactions_topic)})
        if not partitions:
            return
        # Where Faust's own restore stopped (re-reading one record is harmless: last value wins).
        restored = getattr(getattr(app.tables, "recovery", None), "active_highwaters", {})
        start = {p: max(0, int(restored.get(TP(topic, p), 0)) - 1) for p in partitions}
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, read_changelog, settings, topic, start)
        for key, value in records:
            if value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = value
        log.info("changelog catch-up: %d records after Faust's recovery on partitions %s", len(records), partitions)

    if runtime is None:
        return app

    predictions_topic = settings.predictions_topic
    dead_letter_topic = settings.dead_letter_topic

    def on_sent(fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            runtime.send_errors += 1
            msg = repr(fut.exception())
            if msg != runtime._last_error:  # one log line per distinct error, not per message
                runtime._last_error = msg
                log.error("a produced message failed: %s", msg)

    def get_state(user: str) -> dict[str, Any] | None:
        value = table.data.get(user)
        return value if isinstance(value, dict) else None

    def run_batch(batch: list[Source]) -> tuple[BatchResult, list[Detection]]:
        return process_and_observe(runtime, settings, batch, get_state)

    drift_source = f"{settings.app_id}:{os.getpid()}"

    @app.agent(interactions, name="hailstream-worker")
    async def hailstream_worker(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        producer = app.producer
        # take_events (not take) keeps each message's topic/partition/offset; it is defined on the
        # concrete Stream only, hence the cast.
        batches = cast("faust.Stream[Any]", stream).take_events(settings.batch_size, within=settings.batch_timeout)
        async for events in batches:
            batch = [
                Source(e.message.value, e.message.topic, e.message.partition, e.message.offset, e.message.timestamp)
                for e in events
            ]
            for s in batch:
                if s.offset >= runtime.positions.get(s.partition, -1):
                    runtime.positions[s.partition] = s.offset + 1
            try:
                if runtime.executor is not None:
                    result, found = await loop.run_in_executor(runtime.executor, run_batch, batch)
                else:
                    result, found = run_batch(batch)
            except Exception as exc:  # process_batch isolates events; this is a last line of defence
                log.exception("a batch of %d events failed; dead-lettering it", len(batch))
                detail = f"{type(exc).__name__}: {exc}"
                for s in batch:
                    fut = await producer.send(
                        dead_letter_topic, None,
                        dead_letter(s.raw, INTERNAL_ERROR, detail, s.topic, s.partition, s.offset),
                        None, None, None,
                    )
                    fut.add_done_callback(on_sent)  # type: ignore[attr-defined]
                runtime.stats.count_internal_errors(len(batch))
                continue
            sent_from = time.perf_counter()
            for user, upd in result.updates.items():
                # Write the store directly and send the changelog record to the partition of
                # the event that produced it: Faust's own __setitem__ would take the partition
                # of the stream's *current* event, which in a batch may belong to another user.
                table.data[user] = upd.value
                table.send_changelog(upd.partition, user, upd.value)
            for key, value in result.predictions:
                fut = await producer.send(predictions_topic, key, value, None, None, None)
                fut.add_done_callback(on_sent)  # type: ignore[attr-defined]
            for dkey, dvalue in result.dead_letters:
                fut = await producer.send(dead_letter_topic, dkey, dvalue, None, None, None)
                fut.add_done_callback(on_sent)  # type: ignore[attr-defined]
            for d in found:  # a trigger for the trainer
                fut = await producer.send(
                    settings.model_updates_topic, CONTROL_KEY,
                    drift_message(d.detector, d.at_event, d.value, d.baseline, source=drift_source), None, None, None,
                )
                fut.add_done_callback(on_sent)  # type: ignore[attr-defined]
                runtime.drift_published += 1
            while runtime.outbox:  # rollbacks decided by the post-swap guard
                fut = await producer.send(settings.model_updates_topic, CONTROL_KEY, runtime.outbox.pop(0),
                                          None, None, None)
                fut.add_done_callback(on_sent)  # type: ignore[attr-defined]
            runtime.stats.add_busy("send", time.perf_counter() - sent_from)
            runtime.stats.add(result)

    if runtime.monitor is not None:
        monitor = runtime.monitor

        @app.timer(1.0)
        async def observe_lag() -> None:
            # The fetch responses' high watermark (ListOffsets under-reports it, BROKER.md) minus
            # the next offset to process; partitions with nothing processed yet are left out.
            lags = {}
            with contextlib.suppress(Exception):  # no assignment yet, a rebalance under way
                for tp in app.consumer.assignment():
                    if tp.topic != settings.interactions_topic or tp.partition not in runtime.positions:
                        continue
                    hw = app.consumer.highwater(tp)
                    if hw is not None:
                        lags[tp.partition] = max(0, hw - runtime.positions[tp.partition])
            monitor.observe_lag(lags)

    if runtime.stats_path is not None:

        @app.timer(runtime.stats_interval)
        async def write_stats_file() -> None:
            try:
                runtime.write_stats()
            except OSError as e:  # a full disk must not stop the worker
                log.warning("cannot write worker stats to %s: %s", runtime.stats_path, e)

    return app


def process_and_observe(
    runtime: WorkerRuntime, settings: Settings, batch: Sequence[Source], get_state: Callable[[str], Any]
) -> tuple[BatchResult, list[Detection]]:
    """The agent's work on one batch, off the event loop: :func:`process_batch`, then the monitor
    (metrics, drift) and the timeline; returns the result and the batch's drift detections."""
    started = time.perf_counter()
    swapper = runtime.swapper
    result = process_batch(batch, get_state, runtime.recommender, runtime.baselines, runtime.prequential, settings,
                           guard=swapper.guard if swapper is not None else None)
    if result.verdict is not None and swapper is not None:
        msg = swapper.roll_back(result.verdict, source=f"{settings.app_id}:{os.getpid()}")
        if msg is not None:
            runtime.outbox.append(msg)
    found: list[Detection] = []
    if runtime.monitor is not None:
        try:
            found = runtime.monitor.after_batch(result.stats, time.perf_counter() - started)
        except Exception:  # observability must never stop predictions
            log.exception("observing a batch failed")
    if runtime.timeline is not None:
        record_timeline(runtime, result, found)
    return result, found


def record_timeline(runtime: WorkerRuntime, result: BatchResult, found: Sequence[Detection]) -> None:
    """Feed the runtime's timeline one processed batch (in the batch thread). A failing timeline
    (a full disk) is logged once and closed: the worker keeps serving without it."""
    timeline = runtime.timeline
    if timeline is None:
        return
    swap = runtime.swapper.last_swap if runtime.swapper is not None else None
    reason = swap.get("reason") if swap and swap.get("version") == result.model_version else None
    try:
        timeline.after_batch(result.stats.events, result.model_version, runtime.prequential, found, reason)
    except (OSError, StreamError, ValueError) as e:
        log.error("cannot write the timeline %s (%s); the worker goes on WITHOUT it", timeline.path, e)
        runtime.timeline = None
        with contextlib.suppress(OSError):
            timeline.close()


def load_recommender(
    checkpoint_path: Path | str, *, peer: int | None = None, length_buckets: int = 1
) -> OnlineRecommender:
    """An :class:`OnlineRecommender` serving a checkpoint written by ``models.checkpoint``; the
    version is the checkpoint's ``meta["version"]``, else its file name."""
    from models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    version = str(ckpt.meta.get("version") or Path(checkpoint_path).stem)
    return OnlineRecommender(ckpt.model, ckpt.vocab, version, peer=peer, length_buckets=length_buckets)


def run_worker(
    settings: Settings,
    checkpoint_path: Path | str | None = None,
    *,
    recommender: OnlineRecommender | None = None,
    stats_path: Path | str | None = None,
    baselines: bool = True,
    baseline_sample_every: int = 1,
    threads: int = 1,
    length_buckets: int = 1,
    peer: int | None = None,
    datadir: Path | str | None = None,
    ensure: bool = True,
    setup: Callable[[faust.App, WorkerRuntime], None] | None = None,
    operations: bool = True,
    timeline_path: Path | str | None = None,
    timeline_every: int = DEFAULT_EVERY,
) -> WorkerRuntime:
    """Run the worker in this process until SIGTERM/SIGINT; returns the runtime (final counters).

    Serves ``checkpoint_path``, or an already built ``recommender`` (``peer`` and
    ``length_buckets`` apply to a loaded checkpoint only; see :class:`OnlineRecommender`). Must run
    in the main thread (signal handlers). ``threads`` bounds torch's intra-op threads. With
    ``ensure`` the topics and the table's changelog are created first (``settings.partitions``).
    The stats file, when given, is rewritten every second and once more on shutdown. Baselines
    (``baselines``, ``baseline_sample_every``) feed the prequential comparison; they cost a full
    score row per baseline and event (see :class:`~stream.online.OnlineBaselines`). ``setup(app,
    runtime)`` runs before the worker starts: the place to add agents or timers.

    With ``operations`` (the default) the worker also serves ``/metrics`` on
    ``settings.metrics_bind:metrics_port`` (0 picks a free port; the URL is in the stats file),
    detects drift, hot-swaps versions announced on the model-updates topic, and starts with the
    model store's (``settings.model_dir``) live version when it is newer than the checkpoint.

    ``timeline_path`` appends the run's timeline there (:mod:`stream.timeline`: windowed
    prequential values every ``timeline_every`` events, drift detections, version changes), what
    ``hailstream report`` draws; without it nothing is recorded.
    """
    from stream.topics import ensure_topics

    if (checkpoint_path is None) == (recommender is None):
        raise StreamError("run_worker needs exactly one of checkpoint_path or recommender")
    settings.configure_logging()
    torch.set_num_threads(max(1, threads))
    if recommender is None:
        assert checkpoint_path is not None
        recommender = load_recommender(checkpoint_path, peer=peer, length_buckets=length_buckets)
    if ensure:
        ensure_topics(settings, {changelog_topic(settings): settings.partitions})
    metrics: Metrics | None = None
    server: MetricsServer | None = None
    listener: ControlListener | None = None
    if operations:
        newer = newer_in_store(settings.model_dir, recommender.version)
        if newer is not None:
            info, ckpt = newer
            log.info("model store %s has %s, newer than %s: serving it", settings.model_dir, info.label,
                     recommender.version)
            recommender.swap(ckpt.model, ckpt.vocab, info.label)
        metrics = Metrics(process="worker", app_id=settings.app_id)
    runtime = build_runtime(
        settings, recommender, baselines=baselines, baseline_sample_every=baseline_sample_every,
        stats_path=stats_path, metrics=metrics,
    )
    if timeline_path is not None:
        runtime.timeline = Timeline(timeline_path, timeline_every, version=recommender.version)
    if metrics is not None and runtime.swapper is not None:
        try:
            server = serve_metrics(metrics, settings.metrics_port, settings.metrics_bind)
            runtime.metrics_url = server.url
            log.info("worker metrics on %s", server.url)
        except StreamError as e:  # predictions matter more than their monitoring: keep going
            log.error("%s; the worker runs WITHOUT a /metrics endpoint", e)
        listener = ControlListener(settings, runtime.swapper.on_message, runtime.swapper.on_caught_up,
                                   name="worker-model-updates").start()
    own_datadir = tempfile.TemporaryDirectory(prefix="hailstream-faust-") if datadir is None else None
    app = make_app(settings, runtime, datadir=own_datadir.name if own_datadir is not None else datadir)
    if setup is not None:
        setup(app, runtime)
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False,
    )
    log.info("worker starting: model version %s, %s", recommender.version, settings.redacted())
    started = time.time()
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        if runtime.executor is not None:
            runtime.executor.shutdown(wait=True)
        if listener is not None:
            listener.stop()
        if runtime.monitor is not None:
            runtime.monitor.flush()
        if runtime.timeline is not None:
            with contextlib.suppress(OSError):
                runtime.timeline.finish(runtime.prequential)
        if server is not None:
            server.close()
        with contextlib.suppress(OSError):
            runtime.write_stats()
        if own_datadir is not None:
            own_datadir.cleanup()
        log.info("worker stopped after %.1f s: %d events", time.time() - started, runtime.stats.events)
    return runtime


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stream.app``: run one worker from the environment (HAILSTREAM_*) and flags."""
    ap = argparse.ArgumentParser(prog="python -m stream.app", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.safetensors) to serve")
    ap.add_argument("--stats", type=Path, default=None, help="JSON file rewritten every second with live counters")
    ap.add_argument("--bootstrap-servers", default=None)
    ap.add_argument("--app-id", default=None)
    ap.add_argument("--no-baselines", action="store_true", help="skip the baselines' prequential comparison")
    ap.add_argument("--baseline-sample-every", type=int, default=1, help="baselines predict for 1 in N users")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--length-buckets", type=int, default=1,
                    help="forward passes per batch, grouped by history length (1 = one pass)")
    ap.add_argument("--peer", type=int, default=None, help="serve one peer network instead of the ensemble")
    ap.add_argument("--datadir", type=Path, default=None, help="Faust data directory (default: a temp dir)")
    ap.add_argument("--timeline", type=Path, default=None,
                    help="append the run's timeline (JSON lines) here, for `hailstream report`")
    ap.add_argument("--timeline-every", type=int, default=DEFAULT_EVERY,
                    help="events between two accuracy points of the timeline")
    args = ap.parse_args(argv)
    settings = Settings.from_env(bootstrap_servers=args.bootstrap_servers, app_id=args.app_id)
    run_worker(
        settings, args.checkpoint, stats_path=args.stats, baselines=not args.no_baselines,
        baseline_sample_every=args.baseline_sample_every, threads=args.threads,
        length_buckets=args.length_buckets, peer=args.peer, datadir=args.datadir,
        timeline_path=args.timeline, timeline_every=args.timeline_every,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
