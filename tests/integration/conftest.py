"""Fixtures for tests against a real Kafka-wire broker (the embedded Tansu).

- ``broker`` (session): one :class:`EmbeddedBroker` for the whole run; yields its bootstrap
  address ("127.0.0.1:PORT") and stops it at the end.
- ``fresh_settings`` (function): :class:`Settings` pointing at that broker with unique topic names
  and app id (uuid suffix), topics created; the topics are deleted afterwards because the broker
  has no retention (messages stay in memory until their topic goes).
- ``settings_factory`` (function): the same with overrides (``settings_factory(partitions=2)``),
  as many as a test needs.
- ``consume``: a helper that reads a topic from the beginning until it has N messages.

Mark integration tests with ``pytestmark = pytest.mark.integration``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stream.kafka.broker import EmbeddedBroker
from stream.kafka.clients import make_consumer
from stream.kafka.topics import delete_topics, ensure_topics
from stream.settings import Settings


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    b = EmbeddedBroker(log_dir=tmp_path_factory.mktemp("broker"))
    b.start()
    # Tell the suite's process guard (tests/conftest.py) this long-lived broker is intended.
    allowed: set[int] = getattr(request.config, "hailstream_allowed_pids", set())
    request.config.hailstream_allowed_pids = allowed | {b.pid}  # type: ignore[attr-defined]
    try:
        yield b.bootstrap
    finally:
        b.stop()


def unique_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with topic names and app id unique to this call, on ``bootstrap``."""
    tag = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "interactions_topic": f"it-{tag}.interactions",
        "predictions_topic": f"it-{tag}.predictions",
        "dead_letter_topic": f"it-{tag}.dead-letter",
        "model_updates_topic": f"it-{tag}.model-updates",
        "app_id": f"it-{tag}",
    }
    fields.update(overrides)
    return Settings.from_env({}, **fields)


@pytest.fixture
def settings_factory(broker: str) -> Iterator[Callable[..., Settings]]:
    """``settings_factory(create=True, **overrides)`` -> unique :class:`Settings` on the session
    broker (overrides e.g. ``partitions=2``), topics created unless ``create=False``; every
    topic of every settings made is deleted at teardown."""
    made: list[Settings] = []

    def _make(create: bool = True, **overrides: Any) -> Settings:
        s = unique_settings(broker, **overrides)
        made.append(s)
        if create:
            ensure_topics(s)
        return s

    try:
        yield _make
    finally:
        for s in made:
            delete_topics(s)


@pytest.fixture
def fresh_settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Unique settings on the session broker, the four topics created (deleted afterwards)."""
    return settings_factory()


@pytest.fixture
def consume() -> Callable[..., list[Any]]:
    """``consume(settings, topic, n, timeout=30.0, settle=0.0)`` -> the ConsumerRecords of
    ``topic`` read from the beginning (all partitions, via a consumer group with the fast session
    settings of BROKER.md) until ``n`` arrived, then ``settle`` more seconds to catch extras (so a
    test can assert "exactly n"); fails the test if fewer than ``n`` arrive within ``timeout``."""

    def _consume(settings: Settings, topic: str, n: int, timeout: float = 30.0, settle: float = 0.0) -> list[Any]:
        consumer = make_consumer(settings, topic, group_id=f"it-consumer-{uuid.uuid4().hex[:8]}")
        out: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while len(out) < n and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    out.extend(records)
            settle_until = time.monotonic() + settle
            while time.monotonic() < settle_until:
                for records in consumer.poll(timeout_ms=200).values():
                    out.extend(records)
        finally:
            consumer.close()
        if len(out) < n:
            pytest.fail(f"only {len(out)} of {n} messages arrived on {topic} within {timeout:g} s")
        return out

    return _consume


def read_topic(settings: Settings, topic: str, min_n: int = 0, timeout: float = 20.0) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the beginning, no consumer group): polls until
    ``min_n`` records arrived and then three polls in a row came back empty, or ``timeout`` passed."""
    from kafka import TopicPartition

    consumer = make_consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        idle = 0
        while time.monotonic() < deadline and (len(out) < min_n or idle < 3):
            batch = consumer.poll(timeout_ms=300)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        consumer.close()
