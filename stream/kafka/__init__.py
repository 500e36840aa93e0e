"""Kafka plumbing shared by every process: the embedded broker, topics, the changelog reader and
the model-updates reader. Nothing here knows about models or Faust agents."""

from stream._lazy import lazy_exports

__all__ = [
    "EmbeddedBroker", "wait_for_broker", "run_broker",
    "ensure_topics", "delete_topics", "run_topics",
    "read_changelog",
    "ControlListener",
]
__getattr__ = lazy_exports(__name__, {
    "EmbeddedBroker": "broker", "wait_for_broker": "broker", "run_broker": "broker",
    "ensure_topics": "topics", "delete_topics": "topics", "run_topics": "topics",
    "read_changelog": "changelog",
    "ControlListener": "model_updates",
})
