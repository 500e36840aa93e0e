"""Item 5: per-user state is bounded on an endless stream of new users (the RSS curve is in bench/)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stream.settings import Settings
from stream.worker.batch import Source, new_prequential, process_batch
from stream.worker.recommender import OnlineBaselines
from stream.worker.runtime import WorkerRuntime
from stream.worker.sink import FaustSink
from stream.worker.stats import WorkerStats
from tests.stream.worker.test_batch import EchoRecommender

pytestmark = pytest.mark.reliability


class _Table:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog: list[tuple[int, str, Any]] = []

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))


def test_the_table_and_the_baselines_keep_at_most_max_users() -> None:
    cap = 100
    settings = Settings(top_k=3, max_users=cap)
    table = _Table()
    runtime = WorkerRuntime(EchoRecommender(), None, {}, WorkerStats({}))  # type: ignore[arg-type]
    sink = FaustSink(None, table, runtime, settings.worker.max_users)
    baselines = OnlineBaselines(50, max_users=cap)
    preq = new_prequential(3, baselines)
    for b in range(20):  # 2,000 events, each of a new user
        batch = [Source(json.dumps({"user_id": f"u{i}", "item_id": f"i{i % 7}", "ts": 1.0}).encode(), "in", i % 4, i)
                 for i in range(100 * b, 100 * b + 100)]
        out = process_batch(batch, sink.get_state, EchoRecommender(), baselines, preq, settings)  # type: ignore[arg-type]
        for user, upd in out.updates.items():
            sink.put_state(user, upd.partition, upd.value)
        assert len(out.predictions) == 100
    assert len(table.data) == cap and list(table.data)[-1] == "u1999"  # the most recent stay
    assert runtime.stats.evicted == 2000 - cap
    tombstones = [c for c in table.changelog if c[2] is None]
    assert len(tombstones) == 2000 - cap and tombstones[0][:2] == (0, "u0")  # to the user's own partition
    assert len(baselines._previous) <= cap and len(baselines._recent) == cap
    for m in baselines._learners:
        assert len(m._last) <= cap
        assert len(getattr(m, "_user_items", {})) <= cap


def test_a_recently_updated_user_is_kept() -> None:
    table = _Table()
    runtime = WorkerRuntime(EchoRecommender(), None, {}, WorkerStats({}))  # type: ignore[arg-type]
    sink = FaustSink(None, table, runtime, 2)
    for user in ("a", "b", "a", "c"):
        sink.put_state(user, 0, {"items": [user], "off": [0, 1]})
    assert list(table.data) == ["a", "c"]
