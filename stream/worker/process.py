"""The worker process (``hailstream worker``): load the model, set up operations (metrics, drift,
hot swap of announced versions, the model store's newer live version at start-up, the timeline),
run the Faust app of :mod:`stream.worker.app` until SIGTERM/SIGINT, and shut everything down.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faust
import torch

from stream.errors import StreamError
from stream.kafka.model_updates import ModelUpdatesReader
from stream.lifeline import arm_exit_deadline, stop_self, watch_parent
from stream.observe.metrics import Metrics, MetricsServer, serve_metrics
from stream.observe.timeline import Timeline
from stream.settings import Settings
from stream.worker.app import make_app
from stream.worker.hotswap import newer_in_store
from stream.worker.recommender import OnlineRecommender
from stream.worker.runtime import WorkerRuntime, build_runtime

log = logging.getLogger(__name__)


def load_recommender(
    checkpoint_path: Path | str, *, peer: int | None = None, length_buckets: int = 1, state_cache: int = 0,
    state_cache_mb: int | None = None,
) -> OnlineRecommender:
    """An :class:`OnlineRecommender` serving a checkpoint written by ``models.checkpoint``; the
    version is the checkpoint's ``meta["version"]``, else its file name."""
    from models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    version = str(ckpt.meta.get("version") or Path(checkpoint_path).stem)
    return OnlineRecommender(
        ckpt.model, ckpt.vocab, version, peer=peer, length_buckets=length_buckets, state_cache=state_cache,
        state_cache_bytes=None if state_cache_mb is None else state_cache_mb << 20,
    )


class _BoundedWorker(faust.Worker):
    """A Faust worker whose stop on SIGTERM/SIGINT is bounded (:func:`stream.lifeline.arm_exit_deadline`):
    with the broker gone, Faust's own stop retries for a minute and more."""

    before_exit: Callable[[], None] | None = None

    def _on_sigterm(self) -> None:
        arm_exit_deadline(before_exit=self.before_exit)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        arm_exit_deadline(before_exit=self.before_exit)
        super()._on_sigint()


def run_worker(
    settings: Settings,
    *,
    recommender: OnlineRecommender | None = None,
    ensure: bool = True,
    setup: Callable[[faust.App, WorkerRuntime], None] | None = None,
    operations: bool = True,
) -> WorkerRuntime:
    """Run the worker in this process until SIGTERM/SIGINT; returns the runtime (final counters).

    Everything comes from ``settings.worker`` (:class:`~stream.settings.WorkerSettings`): it serves
    ``checkpoint``, or an already built ``recommender`` (``peer`` and ``length_buckets`` apply to a
    loaded checkpoint only; see :class:`OnlineRecommender`). Must run in the main thread (signal
    handlers). ``threads`` bounds torch's intra-op threads. With ``ensure`` the topics and the
    table's changelog are created first (``settings.partitions``). The ``stats_file``, when set, is
    rewritten every second and once more on shutdown. Baselines (``baselines``,
    ``baseline_sample_every``) feed the prequential comparison; their state is bounded and their
    work per event does not grow with the vocabulary (see
    :class:`~stream.worker.recommender.OnlineBaselines`). ``setup(app,
    runtime)`` runs before the worker starts: the place to add agents or timers.

    With ``operations`` (the default) the worker also serves ``/metrics`` on
    ``settings.metrics_bind:worker.metrics_port`` (0 picks a free port; the URL is in the stats file),
    detects drift, hot-swaps versions announced on the model-updates topic, and starts with the
    model store's (``settings.model_dir``) live version when it is newer than the checkpoint.

    ``timeline`` appends the run's timeline there (:mod:`stream.observe.timeline`: windowed
    prequential values every ``timeline_every`` events, drift detections, version changes), what
    ``hailstream report`` draws; without it nothing is recorded.
    """
    from stream.kafka.topics import ensure_worker_topics

    ws = settings.worker
    if recommender is None and ws.checkpoint is None:
        raise StreamError("the worker needs a model: set --checkpoint (HAILSTREAM_CHECKPOINT)")
    settings.configure_logging()
    torch.set_num_threads(max(1, ws.threads))
    if recommender is None:
        assert ws.checkpoint is not None
        recommender = load_recommender(
            ws.checkpoint, peer=ws.peer, length_buckets=ws.length_buckets, state_cache=ws.state_cache,
            state_cache_mb=ws.state_cache_mb,
        )
    if ensure:
        ensure_worker_topics(settings)
    metrics: Metrics | None = None
    server: MetricsServer | None = None
    listener: ModelUpdatesReader | None = None
    if operations:
        newer = newer_in_store(settings.model_dir, recommender.version)
        if newer is not None:
            info, ckpt = newer
            log.info("model store %s has %s, newer than %s: serving it", settings.model_dir, info.label,
                     recommender.version)
            recommender.swap(ckpt.model, ckpt.vocab, info.label)
        metrics = Metrics(process="worker", app_id=settings.app_id)
    runtime = build_runtime(
        settings, recommender, baselines=ws.baselines, baseline_sample_every=ws.baseline_sample_every,
        stats_path=ws.stats_file, metrics=metrics,
    )
    from stream.kafka.topics import topic_epoch

    runtime.epoch = topic_epoch(settings)
    log.info("input topic epoch: %s", runtime.epoch or "unknown (offsets only)")
    if ws.timeline is not None:
        runtime.timeline = Timeline(ws.timeline, ws.timeline_every, version=recommender.version)
    if metrics is not None and runtime.swapper is not None:
        try:
            server = serve_metrics(metrics, ws.metrics_port, settings.metrics_bind)
            runtime.metrics_url = server.url
            log.info("worker metrics on %s", server.url)
        except StreamError as e:  # predictions matter more than their monitoring: keep going
            log.error("%s; the worker runs WITHOUT a /metrics endpoint", e)
        listener = ModelUpdatesReader(settings, runtime.swapper.on_message, runtime.swapper.on_caught_up,
                                   name="worker-model-updates").start()
    own_datadir = tempfile.TemporaryDirectory(prefix="hailstream-faust-") if ws.datadir is None else None
    app = make_app(settings, runtime, datadir=own_datadir.name if own_datadir is not None else ws.datadir)
    if setup is not None:
        setup(app, runtime)
    worker = _BoundedWorker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False,
    )
    worker.before_exit = runtime.write_stats
    watch_parent(lambda: stop_self(before_exit=runtime.write_stats))
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

