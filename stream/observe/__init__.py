"""Observability: Prometheus metrics, drift detectors, the run timeline and its report.
Fed by the worker and the trainer; never imports them."""

from stream._lazy import lazy_exports

__all__ = ["Metrics", "serve_metrics", "DriftMonitor", "Detection", "Timeline", "read_timeline", "report_command"]
__getattr__ = lazy_exports(__name__, {
    "Metrics": "metrics", "serve_metrics": "metrics", "DriftMonitor": "drift", "Detection": "drift",
    "Timeline": "timeline", "read_timeline": "timeline", "report_command": "report",
})
