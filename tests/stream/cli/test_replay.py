"""Unit tests of the replay publisher with an in-memory producer (no broker, no sleeping)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from models.data import Interactions
from stream.cli.replay import Pacer, backfill_rows, block_rows, generate_load, replay
from stream.errors import BrokerError, SettingsError
from stream.records import Interaction, parse_interaction
from stream.settings import Settings


class _Future:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_errback(self, fn: Callable[[BaseException], Any]) -> _Future:
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushed = 0
        self.closed = False
        self.fail_every = fail_every

    def send(self, topic: str, value: bytes, key: bytes) -> _Future:
        self.sent.append((topic, key, value))
        fail = self.fail_every and len(self.sent) % self.fail_every == 0
        return _Future(RuntimeError("broker said no") if fail else None)

    def flush(self) -> None:
        self.flushed += 1

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, d: float) -> None:
        self.sleeps.append(d)
        self.now += d


def _events(geo: bool = True) -> Interactions:
    users = np.array(["u1", "u2", "u1", 'q"uote', "ü"], dtype=object)
    items = np.array(["a", "b", "c", "d\\e", "☃"], dtype=object)
    ts = np.array([10.0, 10.0, 12.5, 20.0, 30.0])
    lat = np.array([40.7, 40.8, 40.9, -41.0, 0.0]) if geo else None
    lon = np.array([-74.0, -73.9, -73.8, 174.0, 0.0]) if geo else None
    block = np.array(["T0", "T1", "T0", "T2", "T1"])
    return Interactions("fsq", users, items, ts, lat, lon, block)


SETTINGS = Settings(interactions_topic="in")


def test_publishes_every_event_in_order_keyed_by_user() -> None:
    ev, prod = _events(), FakeProducer()
    n = replay(ev, SETTINGS, progress=False, producer=prod)
    assert n == 5 and prod.flushed == 1 and not prod.closed  # a caller's producer is not closed
    assert [t for t, _, _ in prod.sent] == ["in"] * 5
    parsed = [parse_interaction(v) for _, _, v in prod.sent]
    assert [k.decode() for _, k, _ in prod.sent] == [p.user_id for p in parsed] == list(ev.users)
    assert parsed[0] == Interaction("u1", "a", 10.0, "fsq:0", 40.7, -74.0, "checkin")
    assert [p.event_id for p in parsed] == [f"fsq:{i}" for i in range(5)]
    assert [p.item_id for p in parsed] == list(ev.items)
    assert [p.ts for p in parsed] == ev.ts.tolist()


def test_hand_rolled_json_equals_json_dumps() -> None:
    prod = FakeProducer()
    replay(_events(), SETTINGS, progress=False, producer=prod)
    for _, _, v in prod.sent:
        assert v == json.dumps(json.loads(v), separators=(",", ":"), ensure_ascii=False).encode()


def test_click_kind_and_no_coordinates_without_geo() -> None:
    prod = FakeProducer()
    replay(_events(geo=False), SETTINGS, progress=False, producer=prod)
    first = json.loads(prod.sent[0][2])
    assert first["kind"] == "click" and "lat" not in first and "lon" not in first


def test_start_limit_rows_and_prefix() -> None:
    prod = FakeProducer()
    assert replay(_events(), SETTINGS, progress=False, start=1, limit=2, producer=prod) == 2
    assert [json.loads(v)["event_id"] for _, _, v in prod.sent] == ["fsq:1", "fsq:2"]
    prod = FakeProducer()
    rows = np.array([1, 3, 4])
    assert replay(_events(), SETTINGS, progress=False, rows=rows, start=1, producer=prod, event_id_prefix="x") == 2
    assert [json.loads(v)["event_id"] for _, _, v in prod.sent] == ["x:3", "x:4"]
    assert replay(_events(), SETTINGS, progress=False, start=10, producer=FakeProducer()) == 0
    with pytest.raises(SettingsError):
        replay(_events(), SETTINGS, progress=False, start=-1, producer=FakeProducer())


def test_topic_override_and_progress_bar() -> None:
    prod = FakeProducer()
    replay(_events(), SETTINGS, progress=True, producer=prod, topic="other")
    assert {t for t, _, _ in prod.sent} == {"other"}


def test_block_rows_keep_absolute_row_indices() -> None:
    ev = _events()
    assert block_rows(ev, "T1").tolist() == [1, 3, 4]
    assert block_rows(ev, "T0").tolist() == [0, 1, 2, 3, 4]
    assert block_rows(ev, "T2").tolist() == [3]
    with pytest.raises(SettingsError, match="T0, T1, T2"):
        block_rows(ev, "T9")
    no_blocks = Interactions("x", ev.users, ev.items, ev.ts)
    with pytest.raises(SettingsError, match="no blocks"):
        block_rows(no_blocks, "T1")


def test_block_rows_natural_order() -> None:
    ev = _events()
    ev = Interactions("x", ev.users, ev.items, ev.ts, block=np.array(["T9", "T10", "T2", "T10", "T9"]))
    assert block_rows(ev, "T9").tolist() == [0, 1, 3, 4]


def test_delivery_failure_raises() -> None:
    with pytest.raises(BrokerError, match="2 of 5 events were not delivered"):
        replay(_events(), SETTINGS, progress=False, producer=FakeProducer(fail_every=2))


def test_event_time_pacing() -> None:
    clock, prod = FakeClock(), FakeProducer()
    replay(_events(), SETTINGS, speed=2.0, progress=False, producer=prod, clock=clock, sleep=clock.sleep)
    # event times 10, 10, 12.5, 20, 30 at 2x: due at +0, +0, +1.25, +5, +10 s
    assert clock.sleeps == pytest.approx([1.25, 3.75, 5.0])
    assert len(prod.sent) == 5


def test_rate_cap_pacing() -> None:
    clock, prod = FakeClock(), FakeProducer()
    replay(_events(), SETTINGS, max_rate=2.0, progress=False, producer=prod, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([0.5] * 4)


def test_unpaced_never_sleeps() -> None:
    clock = FakeClock()
    replay(_events(), SETTINGS, progress=False, producer=FakeProducer(), clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_pacer_combines_speed_and_rate() -> None:
    p = Pacer(speed=1.0, max_rate=1.0, first_ts=0.0, start=0.0)
    assert p.due(5, 2.0) == 5.0 and p.due(1, 7.0) == 7.0
    for bad in (0.0, -1.0):
        with pytest.raises(SettingsError):
            Pacer(speed=bad, max_rate=None, first_ts=0.0, start=0.0)
        with pytest.raises(SettingsError):
            Pacer(speed=None, max_rate=bad, first_ts=0.0, start=0.0)


def test_generate_load_cycles_with_unique_ids_and_increasing_time() -> None:
    prod = FakeProducer()
    res = generate_load(_events(), SETTINGS, 12, producer=prod, event_id_prefix="L")
    assert res.published == 12 and res.rate > 0
    parsed = [parse_interaction(v) for _, _, v in prod.sent]
    assert [p.event_id for p in parsed] == [f"L:{i}" for i in range(12)]
    ts = [p.ts for p in parsed]
    assert all(a <= b for a, b in zip(ts, ts[1:], strict=False))
    assert [p.item_id for p in parsed[:5]] == [p.item_id for p in parsed[5:10]]
    assert generate_load(_events(), SETTINGS, 0, producer=prod).published == 0


def test_invalid_pacing_fails_before_publishing() -> None:
    prod = FakeProducer()
    with pytest.raises(SettingsError, match="speed"):
        replay(_events(), SETTINGS, speed=0.0, progress=False, producer=prod)
    assert prod.sent == []


def test_backfill_publishes_the_past_first_marked_and_unpaced() -> None:
    prod, clock = FakeProducer(), FakeClock()
    rows = np.array([1, 3, 4])  # block T1 and later; rows 0 and 2 are the training block
    n = replay(_events(), SETTINGS, max_rate=1.0, progress=False, rows=rows, producer=prod, backfill=None,
               clock=clock, sleep=clock.sleep)
    assert n == 3  # the replayed events; the backfill comes on top
    sent = [parse_interaction(v) for _, _, v in prod.sent]
    assert [(p.event_id, p.backfill) for p in sent] == [
        ("fsq:0", True), ("fsq:2", True), ("fsq:1", False), ("fsq:3", False), ("fsq:4", False)]
    assert sum(clock.sleeps) == pytest.approx(2.0)  # only the 3 replayed events are paced (1/s)
    prod = FakeProducer()
    assert replay(_events(), SETTINGS, progress=False, start=3, producer=prod, backfill=2) == 2
    assert [json.loads(v)["event_id"] for _, _, v in prod.sent] == ["fsq:1", "fsq:2", "fsq:3", "fsq:4"]
    assert [json.loads(v).get("backfill", False) for _, _, v in prod.sent] == [True, True, False, False]


def test_backfill_rows() -> None:
    assert backfill_rows(5, np.array([1, 3, 4]), None).tolist() == [0, 2]
    assert backfill_rows(5, np.array([1, 3, 4]), 1).tolist() == [2]
    assert backfill_rows(5, np.array([1, 3, 4]), 0).tolist() == []
    assert backfill_rows(5, np.array([3, 4]), 10).tolist() == [0, 1, 2]
    with pytest.raises(SettingsError, match="backfill"):
        backfill_rows(5, np.array([3]), -1)
