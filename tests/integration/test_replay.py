"""Replay of real Foursquare events through the embedded broker."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from models.data import load_dataset
from stream.cli.replay import block_rows, generate_load, replay, run_replay
from stream.records import parse_interaction
from stream.settings import Settings
from tests.data import needs_nyc

pytestmark = [pytest.mark.integration, needs_nyc]

N = 2000


@pytest.fixture(scope="module")
def foursquare_head() -> Any:
    return load_dataset("foursquare-nyc").head(N)


def test_replay_arrives_complete_in_per_user_order(
    fresh_settings: Settings, consume: Callable[..., list[Any]], foursquare_head: Any
) -> None:
    ev = foursquare_head
    assert replay(ev, fresh_settings, progress=False) == N
    records = consume(fresh_settings, fresh_settings.interactions_topic, N, settle=1.0)
    assert len(records) == N  # complete, and no duplicates

    events = [parse_interaction(r.value) for r in records]
    assert sorted(e.event_id for e in events) == sorted(f"foursquare-nyc:{i}" for i in range(N))  # type: ignore[type-var]
    partition_of: dict[str, set[int]] = defaultdict(set)
    per_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r, e in zip(records, events, strict=True):
        assert r.key.decode() == e.user_id  # keyed by user
        partition_of[e.user_id].add(r.partition)
        per_user[e.user_id].append((r.offset, int(str(e.event_id).split(":")[1])))
        row = int(str(e.event_id).split(":")[1])
        assert (e.user_id, e.item_id, e.ts, e.kind) == (ev.users[row], ev.items[row], ev.ts[row], "checkin")
        assert e.lat == pytest.approx(ev.lat[row]) and e.lon == pytest.approx(ev.lon[row])
    assert all(len(p) == 1 for p in partition_of.values())  # one user, one partition
    for pairs in per_user.values():
        rows_by_offset = [row for _, row in sorted(pairs)]
        assert rows_by_offset == sorted(rows_by_offset)  # the user's events in timestamp order
    assert len({p for ps in partition_of.values() for p in ps}) == fresh_settings.partitions


def test_load_generator_reports_its_rate(
    fresh_settings: Settings, consume: Callable[..., list[Any]], foursquare_head: Any
) -> None:
    res = generate_load(foursquare_head.head(100), fresh_settings, 300, rate=None, event_id_prefix="load")
    assert res.published == 300 and res.rate > 0
    records = consume(fresh_settings, fresh_settings.interactions_topic, 300)
    assert sorted(parse_interaction(r.value).event_id for r in records) == sorted(  # type: ignore[type-var]
        f"load:{i}" for i in range(300)
    )


def test_run_replay_from_block_keeps_full_dataset_row_ids(
    fresh_settings: Settings, consume: Callable[..., list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    n = run_replay("foursquare-nyc", fresh_settings, from_block="T5", limit=300, progress=False, max_rate=1e6)
    assert n == 300
    assert "published 300 events of foursquare-nyc" in capsys.readouterr().out
    full = load_dataset("foursquare-nyc", fresh_settings.data_dir)
    rows = sorted(int(str(parse_interaction(r.value).event_id).split(":")[1])
                  for r in consume(fresh_settings, fresh_settings.interactions_topic, 300))
    assert full.block is not None and set(full.block[rows]) == {"T5"}
    assert rows == block_rows(full, "T5")[:300].tolist()
