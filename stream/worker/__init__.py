"""The worker (``hailstream worker``): Faust app and table, the agent, the batch logic, the online
recommender, prequential scoring and hot swap."""

from stream._lazy import lazy_exports

__all__ = [
    "run_worker", "make_app", "process_batch", "Source", "BatchResult", "BatchStats",
    "OnlineRecommender", "OnlineBaselines", "Prequential", "HotSwapper", "WorkerRuntime", "WorkerMonitor",
]
__getattr__ = lazy_exports(__name__, {
    "run_worker": "app", "make_app": "app", "process_batch": "batch", "Source": "batch",
    "BatchResult": "batch", "BatchStats": "batch", "OnlineRecommender": "recommender",
    "OnlineBaselines": "recommender", "Prequential": "prequential", "HotSwapper": "hotswap",
    "WorkerRuntime": "runtime", "WorkerMonitor": "monitor",
})
