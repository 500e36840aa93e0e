"""The Kafka client factory (no broker): the producer's partitioner, the consumer settings."""

from __future__ import annotations

import pytest

from stream.errors import BrokerError
from stream.kafka.clients import FAST_GROUP, _CachedKeyPartitioner, consumer_kwargs, make_producer
from stream.settings import Settings


def test_cached_partitioner_matches_kafka_default() -> None:
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3}

        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3}

    cached, default, cluster = _CachedKeyPartitioner(), DefaultPartitioner(), Cluster()
    for i in range(200):
        key = str(i).encode()
        for _ in range(2):  # second call is served from the cache
            assert cached.partition("t", key, key, b"", b"", cluster) == default.partition("t", key, key, b"", b"", cluster)
    assert cached.partition("t", None, None, b"", b"", cluster) in {0, 1, 2, 3}


def test_consumer_kwargs_pass_security_and_join_groups_fast() -> None:
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    plain = consumer_kwargs(s)
    assert plain["group_id"] is None and plain["enable_auto_commit"] is False and "session_timeout_ms" not in plain
    assert plain["sasl_plain_password"] == "p" and plain["bootstrap_servers"] == ["127.0.0.1:9092"]
    grouped = consumer_kwargs(s, group_id="g", enable_auto_commit=True)
    assert grouped["group_id"] == "g" and grouped["auto_offset_reset"] == "earliest" and grouped["enable_auto_commit"]
    assert FAST_GROUP.items() <= grouped.items()


def test_an_unreachable_broker_says_what_to_do() -> None:
    with pytest.raises(BrokerError, match="HAILSTREAM_BOOTSTRAP_SERVERS"):
        make_producer(Settings(bootstrap_servers="127.0.0.1:1"), max_block_ms=500, request_timeout_ms=500,
                      api_version_auto_timeout_ms=500)
