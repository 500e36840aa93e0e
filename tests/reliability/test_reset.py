"""Item 1: idempotence survives a new broker or topic; every skipped event is counted."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from stream.kafka.topics import delete_topics, ensure_topics, topic_epoch
from stream.observe.metrics import Metrics
from stream.settings import Settings
from stream.worker.batch import Source, new_prequential, process_batch
from stream.worker.pipeline import handle_batch
from stream.worker.recommender import OnlineRecommender
from stream.worker.runtime import build_runtime
from tests.stream.worker.test_batch import EchoRecommender

pytestmark = pytest.mark.reliability
SETTINGS = Settings(top_k=3)


def tiny_recommender() -> OnlineRecommender:
    from models.hail import HAIL, HailConfig
    from models.vocab import ItemVocab

    vocab = ItemVocab([f"{t}{i}" for t in "ab" for i in range(20)])
    return OnlineRecommender(HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows), vocab, "v1")


def _events(n: int, tag: str) -> list[Source]:
    return [Source(json.dumps({"user_id": f"u{i % 5}", "item_id": f"{tag}{i}", "ts": 1.0 + i}).encode(), "in", 0, i)
            for i in range(n)]


def test_a_new_epoch_at_the_same_offsets_is_processed_and_a_redelivery_is_skipped() -> None:
    table: dict[str, Any] = {}
    first = process_batch(_events(20, "a"), table.get, EchoRecommender(), None, new_prequential(3), SETTINGS, epoch="A")
    table.update({u: upd.value for u, upd in first.updates.items()})
    again = process_batch(_events(20, "a"), table.get, EchoRecommender(), None, new_prequential(3), SETTINGS, epoch="A")
    assert again.stats.duplicates == 20 and not again.predictions  # a redelivery: skipped, counted
    # A new broker: the same offsets hold other events. Every one must get its prediction.
    new = process_batch(_events(20, "b"), table.get, EchoRecommender(), None, new_prequential(3), SETTINGS, epoch="B")
    # (a reset is counted once per user: its first event under the new epoch)
    assert len(new.predictions) == 20 and new.stats.duplicates == 0 and new.stats.resets == 5


def test_skips_and_resets_reach_the_metrics_and_the_stats_file() -> None:
    metrics = Metrics(process_collector=False)
    runtime = build_runtime(SETTINGS, tiny_recommender(), metrics=metrics, offload=False, baselines=False)
    table: dict[str, Any] = {}
    for epoch, tag in (("A", "a"), ("A", "a"), ("B", "b")):
        runtime.epoch = epoch
        out = handle_batch(runtime, SETTINGS, _events(10, tag), table.get)
        assert out.result is not None
        runtime.stats.add(out.result)
        table.update({u: upd.value for u, upd in out.updates.items()})
    assert metrics.value("hailstream_duplicates_skipped_total") == 10
    assert metrics.value("hailstream_position_resets_total") == 5
    snap = runtime.snapshot()
    assert snap.duplicates_skipped == 10 and snap.position_resets == 5 and snap.predictions == 20


@pytest.mark.integration
def test_a_recreated_topic_has_another_epoch(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    before = topic_epoch(settings)
    assert before is not None and before == topic_epoch(settings)  # stable while the topic lives
    delete_topics(settings, [settings.interactions_topic])
    ensure_topics(settings)
    after = topic_epoch(settings)
    assert after is not None and after != before
