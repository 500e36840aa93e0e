"""The one place Kafka clients are built (kafka-python): producers and consumers with the settings'
connection and security options, and the fast group-session settings of BROKER.md.

>>> from stream.settings import Settings
>>> sorted(consumer_kwargs(Settings(), group_id="g"))[:4]
['auto_offset_reset', 'bootstrap_servers', 'enable_auto_commit', 'group_id']
"""

from __future__ import annotations

from typing import Any

from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import DefaultPartitioner

from stream.errors import BrokerError
from stream.settings import Settings

#: Producer tuning: batching gives ~10x the throughput of one request per message. kafka-python's
#: default idempotent producer (acks=all) is kept: it keeps per-partition order across retries, so
#: a user's events stay in order, and never writes a retried batch twice.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 128 * 1024,
    "max_block_ms": 30_000,
    "request_timeout_ms": 30_000,
}
#: Group members join in ~1.1 s on Tansu with these (client defaults: 5-30 s per join, BROKER.md).
FAST_GROUP: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def make_producer(settings: Settings, **overrides: Any) -> Any:
    """A kafka-python ``KafkaProducer`` with the settings' security and batching for throughput
    (``PRODUCER_DEFAULTS``; pass ``linger_ms=0`` for synchronous request/response sends). An
    unreachable broker raises :class:`BrokerError` saying what to do."""
    from kafka import KafkaProducer

    kw = {**PRODUCER_DEFAULTS, "partitioner": _CachedKeyPartitioner(), **settings.kafka_python_kwargs(), **overrides}
    try:
        return KafkaProducer(**kw)
    except Exception as e:
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: is it running? set HAILSTREAM_BOOTSTRAP_SERVERS "
            f"({type(e).__name__}: {e})"
        ) from e


def consumer_kwargs(settings: Settings, *, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a ``KafkaConsumer``: no auto-commit and no group unless ``group_id``
    is given (then the fast session settings and ``earliest`` reset); ``overrides`` win."""
    kw: dict[str, Any] = {"enable_auto_commit": False, "group_id": group_id}
    if group_id is not None:
        kw.update(auto_offset_reset="earliest", **FAST_GROUP)
    kw.update(settings.kafka_python_kwargs())
    kw.update(overrides)
    return kw


def make_consumer(settings: Settings, *topics: str, group_id: str | None = None, **overrides: Any) -> Any:
    """A kafka-python ``KafkaConsumer`` (subscribed to ``topics`` when given); see
    :func:`consumer_kwargs`. Without a group, assign partitions yourself."""
    from kafka import KafkaConsumer

    return KafkaConsumer(*topics, **consumer_kwargs(settings, group_id=group_id, **overrides))


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """The settings' security options only (no bootstrap servers), e.g. for a metadata probe."""
    kw = settings.kafka_python_kwargs()
    kw.pop("bootstrap_servers")
    return kw


class _CachedKeyPartitioner(Partitioner):
    """kafka-python's default partitioner (Java-compatible murmur2 of the key, so a user lands on
    the same partition as with any other Kafka client), memoised per key: users repeat, and the
    pure-Python hash was ~15% of the cost of a send."""

    _MAX = 1 << 20

    def __init__(self) -> None:
        self._fallback = DefaultPartitioner()
        self._cache: dict[tuple[bytes, int], int] = {}

    def partition(self, topic: str, key: Any, serialized_key: Any, value: Any, serialized_value: Any, cluster: Any) -> Any:
        if serialized_key is None:
            return self._fallback.partition(topic, key, serialized_key, value, serialized_value, cluster)
        parts = cluster.partitions_for_topic(topic)
        ck = (bytes(serialized_key), len(parts))
        p = self._cache.get(ck)
        if p is None:
            if len(self._cache) >= self._MAX:
                self._cache.clear()
            p = self._cache[ck] = self._fallback.partition(topic, key, serialized_key, value, serialized_value, cluster)
        return p
