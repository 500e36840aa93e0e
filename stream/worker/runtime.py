"""What the worker's agent needs besides the settings, independent of Faust: the live model, the
baselines, the prequential scorers, the counters, and (with metrics) the monitor and hot swap.

:func:`build_runtime` assembles one; :mod:`stream.worker.app` runs the agent around it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from stream.observe.drift import DriftMonitor
from stream.observe.feed import set_model
from stream.observe.metrics import Metrics
from stream.observe.timeline import Timeline
from stream.settings import Settings
from stream.snapshots import WorkerSnapshot, write_stats
from stream.worker.batch import new_prequential
from stream.worker.guard import SwapGuard
from stream.worker.hotswap import HotSwapper
from stream.worker.monitor import WorkerMonitor
from stream.worker.prequential import Prequential
from stream.worker.recommender import OnlineBaselines, OnlineRecommender
from stream.worker.stats import WorkerStats


@dataclass
class WorkerRuntime:
    """Everything the agent needs besides the settings: the live model, the baselines, the
    prequential scorers and the counters. ``executor`` runs the CPU-heavy batch work off the event
    loop (so fetching and producing continue meanwhile); ``None`` runs it inline."""

    recommender: OnlineRecommender
    baselines: OnlineBaselines | None
    prequential: dict[str, Prequential]
    stats: WorkerStats
    stats_path: Path | None = None
    stats_interval: float = 1.0
    executor: ThreadPoolExecutor | None = None
    send_errors: int = 0
    #: metrics and drift (None: not observed), hot swap of announced versions (None: off)
    monitor: WorkerMonitor | None = None
    swapper: HotSwapper | None = None
    metrics_url: str | None = None
    #: next offset to process per interactions partition (for the consumer lag)
    positions: dict[int, int] = field(default_factory=dict)
    drift_published: int = 0
    #: the run's timeline file (None: not recorded); fed after every batch, in the batch thread
    timeline: Timeline | None = None
    #: the input topic's epoch (:func:`stream.kafka.topics.topic_epoch`), refreshed by a timer
    epoch: str | None = None
    _last_error: str = field(default="", repr=False)

    def snapshot(self) -> WorkerSnapshot:
        """The counters as a :class:`~stream.snapshots.WorkerSnapshot` (what the stats file holds)."""
        snap = WorkerSnapshot(**self.stats.to_dict(), send_errors=self.send_errors,
                              live_model_version=self.recommender.version, metrics_url=self.metrics_url,
                              state_cache=self.recommender.cache_stats())
        if self.swapper is not None:
            snap.swaps, snap.swap_failures = self.swapper.swaps, self.swapper.failures
            snap.last_swap = self.swapper.last_swap
            snap.rollbacks = self.swapper.rollbacks
            snap.guard_verdicts = list(self.swapper.verdicts)
            run = self.swapper.guard.current if self.swapper.guard is not None else None
            snap.guard = None if run is None else {**run.partial("running").to_dict(), "served": run.served}
        if self.monitor is not None:
            snap.drift = {"detections": [x.to_dict() for x in self.monitor.detections[-20:]],
                          "published": self.drift_published,
                          "states": [s.__dict__ for s in self.monitor.drift.states()]}
        return snap

    def write_stats(self) -> None:
        if self.stats_path is not None:
            write_stats(self.stats_path, self.snapshot().to_dict())


def build_runtime(
    settings: Settings,
    recommender: OnlineRecommender,
    *,
    baselines: bool = True,
    baseline_sample_every: int = 1,
    popularity_window: int = 1000,
    prequential_window: int = 1000,
    stats_path: Path | str | None = None,
    offload: bool = True,
    metrics: Metrics | None = None,
) -> WorkerRuntime:
    """A :class:`WorkerRuntime` with fresh baselines and prequential scorers. When the recommender
    has no cold-start fallback, the baselines' recent popularity becomes it. With ``metrics``, the
    batches are observed (metrics, drift detection) and announced versions are hot-swapped in."""
    ws = settings.worker
    online = (OnlineBaselines(popularity_window, sample_every=baseline_sample_every, max_users=ws.max_users,
                              max_items=ws.baseline_max_items, max_next=ws.baseline_max_next) if baselines else None)
    if online is not None and recommender.fallback is None:
        recommender.fallback = online.popular
    preq = new_prequential(settings.top_k, online, prequential_window)
    runtime = WorkerRuntime(
        recommender,
        online,
        preq,
        WorkerStats(preq),
        Path(stats_path) if stats_path is not None else None,
        executor=ThreadPoolExecutor(1, thread_name_prefix="hailstream-batch") if offload else None,
    )
    if metrics is not None:
        drift = DriftMonitor.configured(ws.adwin_delta, ws.drift_min_drop, ws.drift_min_effect, ws.drift_persistence)
        runtime.monitor = WorkerMonitor(metrics, preq, drift, cache_stats=recommender.cache_stats)
        guard = None
        if ws.guard_events > 0:
            guard = SwapGuard(ws.guard_events, ws.guard_min_events, ws.guard_tolerance, ws.guard_confidence)
        runtime.swapper = HotSwapper(recommender, metrics, guard, model_dir=settings.model_dir,
                                     key=settings.signing_key())
        set_model(metrics, recommender.version, len(recommender.live.vocab))
    return runtime
