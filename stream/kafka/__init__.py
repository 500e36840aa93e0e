"""Kafka plumbing shared by every process: the client factory, topics, the embedded broker, the
changelog reader and the model-updates reader. Nothing here knows about models or Faust agents."""

from stream._lazy import lazy_exports

__all__ = [
    "make_producer", "make_consumer", "EmbeddedBroker", "wait_for_broker", "run_broker",
    "ensure_topics", "delete_topics", "run_topics", "changelog_topic", "read_changelog", "ModelUpdatesReader",
]
__getattr__ = lazy_exports(__name__, {
    "make_producer": "clients", "make_consumer": "clients",
    "EmbeddedBroker": "broker", "wait_for_broker": "broker", "run_broker": "broker",
    "ensure_topics": "topics", "delete_topics": "topics", "run_topics": "topics", "changelog_topic": "topics",
    "read_changelog": "changelog", "ModelUpdatesReader": "model_updates",
})
