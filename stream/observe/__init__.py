"""Observability: Prometheus metrics (declarations, feeding, /metrics), drift detectors, the run
timeline and its report. Fed by the worker and the trainer; never imports them."""

from stream._lazy import lazy_exports

__all__ = [
    "Metrics", "serve_metrics", "observe_batch", "observe_prequential", "observe_drift", "set_model",
    "DriftMonitor", "AccuracyDrift", "InputDrift", "Detection", "Timeline", "read_timeline", "report_command",
]
__getattr__ = lazy_exports(__name__, {
    "Metrics": "metrics", "serve_metrics": "metrics", "observe_batch": "feed", "observe_prequential": "feed",
    "observe_drift": "feed", "set_model": "feed", "DriftMonitor": "drift", "AccuracyDrift": "drift",
    "InputDrift": "input_drift", "Detection": "detection", "Timeline": "timeline", "read_timeline": "timeline",
    "report_command": "report",
})
