"""The worker's Faust app: the topics (raw bytes), the changelogged per-user table, ONE thin agent
and its timers (:func:`make_app`); :func:`stream.worker.process.run_worker` runs it.

The agent only moves bytes: it takes micro-batches (:func:`stream.worker.batching.take_batches`:
whatever is queued, up to ``settings.worker.batch_size`` events), hands each to
:func:`stream.worker.pipeline.handle_batch` (off the event loop) and writes the outcome through
:class:`stream.worker.sink.FaustSink`: table values (with their changelog records), predictions,
dead letters and drift signals: outputs first, acknowledged by the broker before the states are
stored, states acknowledged before the batch's events are acked (:func:`stream.worker.sink.deliver`),
so at-least-once holds across a kill -9.
Faust settings follow BROKER.md (fast group joins, pre-created topics, earliest offset reset, no
exactly-once, web server bound to 127.0.0.1 and off unless ``settings.worker.web``: then it serves
:mod:`stream.worker.web`'s ``GET /users/<id>/recommendations``). Timers: the consumer lag from the fetch high
watermark once a second, and the stats file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TP

from stream.kafka.changelog import read_changelog
from stream.kafka.topics import TABLE_NAME, changelog_topic
from stream.settings import Settings
from stream.worker.batch import Source
from stream.worker.batching import take_batches
from stream.worker.pipeline import BatchOutcome, handle_batch
from stream.worker.runtime import WorkerRuntime
from stream.worker.sink import FaustSink, SinkError, deliver

log = logging.getLogger(__name__)

PRODUCER_LINGER_S = 0.005
#: The worker's exit status when its outputs cannot be produced (EX_SOFTWARE).
SINK_FAILED_EXIT = 70


def fetch_wait_ms(settings: Settings) -> int:
    """How long a fetch may wait on the broker for new data: the batch timeout (10..500 ms; 10 by default).

    >>> fetch_wait_ms(Settings(batch_timeout=0.05))
    50
    """
    return int(round(1000 * min(max(settings.worker.batch_timeout, 0.01), 0.5)))


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


async def deliver_or_exit(outcome: BatchOutcome, sink: FaustSink, settings: Settings, runtime: WorkerRuntime) -> None:
    """:func:`deliver`; when the outputs cannot be produced (:class:`SinkError`, or any other error
    while writing them, such as a value the serializer refuses), end the process at once."""
    try:
        await deliver(outcome, sink, settings, runtime)
    except Exception as e:
        # Any way on (the agent's restart, a clean stop) could ack and commit this batch's offsets
        # without its outputs, and a crashed agent would leave a live worker that consumes nothing:
        # stop as a kill -9 would, and let a restart redeliver the batch.
        log.critical("%s: exiting at once, without committing; a restart redelivers the batch", e,
                     exc_info=not isinstance(e, SinkError))
        with contextlib.suppress(Exception):
            runtime.write_stats()
        logging.shutdown()
        os._exit(SINK_FAILED_EXIT)


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
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_linger=PRODUCER_LINGER_S,
        web_enabled=settings.worker.web,
        web_bind=settings.worker.web_bind,
        web_port=settings.worker.web_port,
        web_host=settings.worker.web_host or settings.worker.web_bind,
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

    if settings.worker.web:
        from stream.worker.web import install_recommendations_view

        install_recommendations_view(app, table, settings)

    if runtime is None:
        return app

    sink = FaustSink(app, table, runtime, settings.worker.max_users)

    @app.agent(interactions, name="hailstream-worker")
    async def hailstream_worker(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        # Events (not values): each keeps its message's topic/partition/offset. take_events is
        # defined on the concrete Stream only, hence the cast.
        size, timeout = settings.worker.batch_size, settings.worker.batch_timeout
        batches = (take_batches(stream, size, within=max(timeout, 0.01)) if settings.worker.batch_greedy
                   else cast("faust.Stream[Any]", stream).take_events(size, within=timeout))
        async for events in batches:
            batch = [Source.of(e.message) for e in events]
            if runtime.executor is None:
                outcome = handle_batch(runtime, settings, batch, sink.get_state)
            else:
                outcome = await loop.run_in_executor(runtime.executor, handle_batch, runtime, settings, batch, sink.get_state)
            await deliver_or_exit(outcome, sink, settings, runtime)

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

    if settings.worker.epoch_refresh > 0:

        @app.timer(settings.worker.epoch_refresh)
        async def refresh_epoch() -> None:
            # A broker replaced under a running worker (or the topic recreated) starts a new epoch:
            # the stored positions of the old one must stop suppressing events (stream.worker.batch).
            from stream.kafka.topics import topic_epoch

            epoch = await asyncio.get_running_loop().run_in_executor(None, topic_epoch, settings)
            if epoch is not None and epoch != runtime.epoch:
                log.warning("input topic epoch %s -> %s (a new broker or a recreated topic)", runtime.epoch, epoch)
                runtime.epoch = epoch

    if runtime.stats_path is not None:

        @app.timer(runtime.stats_interval)
        async def write_stats_file() -> None:
            try:
                runtime.write_stats()
            except OSError as e:  # a full disk must not stop the worker
                log.warning("cannot write worker stats to %s: %s", runtime.stats_path, e)

    return app
