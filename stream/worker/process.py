"""The worker process (``hailstream worker``): load the model, set up operations (metrics, drift,
hot swap of announced versions, the model store's newer live version at start-up, the timeline),
run the Faust app of :mod:`stream.worker.app` until SIGTERM/SIGINT, and shut everything down.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import faust
import torch

from stream.errors import StreamError
from stream.kafka.model_updates import ControlListener
from stream.kafka.topics import changelog_topic
from stream.observe.metrics import Metrics, MetricsServer, serve_metrics
from stream.observe.timeline import DEFAULT_EVERY, Timeline
from stream.settings import Settings
from stream.worker.app import make_app
from stream.worker.hotswap import newer_in_store
from stream.worker.recommender import OnlineRecommender
from stream.worker.runtime import WorkerRuntime, build_runtime

log = logging.getLogger(__name__)


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
    score row per baseline and event (see :class:`~stream.worker.recommender.OnlineBaselines`). ``setup(app,
    runtime)`` runs before the worker starts: the place to add agents or timers.

    With ``operations`` (the default) the worker also serves ``/metrics`` on
    ``settings.metrics_bind:metrics_port`` (0 picks a free port; the URL is in the stats file),
    detects drift, hot-swaps versions announced on the model-updates topic, and starts with the
    model store's (``settings.model_dir``) live version when it is newer than the checkpoint.

    ``timeline_path`` appends the run's timeline there (:mod:`stream.observe.timeline`: windowed
    prequential values every ``timeline_every`` events, drift detections, version changes), what
    ``hailstream report`` draws; without it nothing is recorded.
    """
    from stream.kafka.topics import ensure_topics

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
    """``python -m stream.worker.app``: run one worker from the environment (HAILSTREAM_*) and flags."""
    ap = argparse.ArgumentParser(prog="python -m stream.worker.app", description=__doc__.split("\n\n")[0])
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
