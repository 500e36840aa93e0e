"""The worker (``hailstream worker``): Faust app and table, the thin agent, the batch pipeline and its
sink, the batch logic, the online recommender, prequential scoring, hot swap and the process."""

from stream._lazy import lazy_exports

__all__ = [
    "run_worker", "load_recommender", "make_app", "handle_batch", "BatchOutcome", "Sink", "FaustSink", "deliver",
    "process_batch", "Source", "BatchResult", "BatchStats", "OnlineRecommender", "OnlineBaselines", "Prequential",
    "HotSwapper", "newer_in_store", "WorkerRuntime", "build_runtime", "WorkerMonitor", "WorkerStats",
]
__getattr__ = lazy_exports(__name__, {
    "run_worker": "process", "load_recommender": "process", "make_app": "app", "handle_batch": "pipeline",
    "BatchOutcome": "pipeline", "Sink": "sink", "FaustSink": "sink", "deliver": "sink", "process_batch": "batch",
    "Source": "batch", "BatchResult": "batch", "BatchStats": "batch", "OnlineRecommender": "recommender",
    "OnlineBaselines": "recommender", "Prequential": "prequential", "HotSwapper": "hotswap",
    "newer_in_store": "hotswap", "WorkerRuntime": "runtime", "build_runtime": "runtime", "WorkerMonitor": "monitor",
    "WorkerStats": "stats",
})
