"""What the worker's agent needs besides the settings, independent of Faust: the live model, the
baselines, the prequential scorers, the counters, and (with metrics) the monitor and hot swap.

:func:`build_runtime` assembles one; :mod:`stream.app` runs the agent around it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.drift import DriftMonitor
from stream.guard import SwapGuard
from stream.hotswap import HotSwapper
from stream.metrics import Metrics, set_model
from stream.monitor import WorkerMonitor
from stream.online import OnlineBaselines, OnlineRecommender
from stream.prequential import Prequential
from stream.settings import Settings
from stream.timeline import Timeline
from stream.worker import WorkerStats, new_prequential, write_stats


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
    #: control messages (bytes) for the model-updates topic, sent by the agent after the batch
    outbox: list[bytes] = field(default_factory=list)
    #: the run's timeline file (None: not recorded); fed after every batch, in the batch thread
    timeline: Timeline | None = None
    _last_error: str = field(default="", repr=False)

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data (what the stats file holds)."""
        d = self.stats.to_dict()
        d["send_errors"] = self.send_errors
        d["live_model_version"] = self.recommender.version
        d["metrics_url"] = self.metrics_url
        if self.swapper is not None:
            d["swaps"] = self.swapper.swaps
            d["swap_failures"] = self.swapper.failures
            d["last_swap"] = self.swapper.last_swap
            d["rollbacks"] = self.swapper.rollbacks
            d["guard_verdicts"] = list(self.swapper.verdicts)
            run = self.swapper.guard.current if self.swapper.guard is not None else None
            d["guard"] = None if run is None else {**run.partial("running").to_dict(), "served": run.served}
        if self.monitor is not None:
            d["drift"] = {"detections": [x.to_dict() for x in self.monitor.detections[-20:]],
                          "published": self.drift_published,
                          "states": [s.__dict__ for s in self.monitor.drift.states()]}
        return d

    def write_stats(self) -> None:
        if self.stats_path is not None:
            write_stats(self.stats_path, self.snapshot())


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
    online = OnlineBaselines(popularity_window, sample_every=baseline_sample_every) if baselines else None
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
        drift = DriftMonitor.configured(settings.adwin_delta, settings.drift_min_drop, settings.drift_min_effect,
                                        settings.drift_persistence)
        runtime.monitor = WorkerMonitor(metrics, preq, drift)
        guard = None
        if settings.guard_events > 0:
            guard = SwapGuard(settings.guard_events, settings.guard_min_events, settings.guard_tolerance,
                              settings.guard_confidence)
        runtime.swapper = HotSwapper(recommender, metrics, guard)
        set_model(metrics, recommender.version, len(recommender.live.vocab))
    return runtime
