"""The sink (issue 12 delivery order, issue 14 batched produce), without a broker: :func:`deliver`
settles the outputs before it stores the states, and :class:`FaustSink` produces record batches
per partition, in order, with fallbacks and retries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from stream.settings import Settings
from stream.worker.batch import Source, Update, new_prequential, process_batch
from stream.worker.pipeline import BatchOutcome
from stream.worker.runtime import WorkerRuntime
from stream.worker.sink import FaustSink, SinkError, deliver
from stream.worker.stats import WorkerStats
from tests.fakes import ListSink
from tests.stream.worker.test_batch import EchoRecommender

SETTINGS = Settings(top_k=3)


def _runtime() -> WorkerRuntime:
    return WorkerRuntime(EchoRecommender(), None, {}, WorkerStats({}))  # type: ignore[arg-type]


def _done(value: Any = None, exc: BaseException | None = None) -> asyncio.Future:
    fut: asyncio.Future = asyncio.get_running_loop().create_future()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
    return fut


def test_deliver_settles_every_output_before_it_stores_a_state() -> None:
    sink = ListSink()
    outcome = BatchOutcome(
        updates={"u": Update(0, {"items": ["a"]}), "v": Update(1, {"items": ["b"]})},
        predictions=[(b"u", b"p1"), (b"v", b"p2")], dead_letters=[(None, b"d")], signals=[b"s"], rollbacks=[b"r"],
    )
    asyncio.run(deliver(outcome, sink, SETTINGS, _runtime()))
    s = SETTINGS
    assert sink.calls == [("send", s.predictions_topic), ("send", s.predictions_topic), ("send", s.dead_letter_topic),
                          ("send", s.model_updates_topic), ("send", s.model_updates_topic), ("settle",),
                          ("state", "u"), ("state", "v"), ("settle",)]


def test_deliver_through_a_list_sink_keeps_the_batch_logic_whole() -> None:
    sink, runtime = ListSink(), _runtime()
    batch = [Source(json.dumps({"user_id": f"u{i % 3}", "item_id": f"i{i}", "ts": 1.0 + i}).encode(), "in", i % 2, i)
             for i in range(9)]
    out = process_batch(batch, sink.get_state, EchoRecommender(), None, new_prequential(3), SETTINGS)  # type: ignore[arg-type]
    asyncio.run(deliver(BatchOutcome(out.updates, out.predictions, out.dead_letters, result=out), sink, SETTINGS, runtime))
    assert len(sink.sent) == 9 and sorted(sink.states) == ["u0", "u1", "u2"]
    assert sink.states["u0"]["items"] == ["i0", "i3", "i6"] and runtime.stats.predictions == 9


class _Batch:
    def __init__(self, cap: int) -> None:
        self.cap, self.records, self.closed = cap, [], False

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: Any, headers: Any = ()) -> Any:
        if self.closed or len(self.records) >= self.cap:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class _Producer:
    """Faust's aiokafka Producer in miniature: ``_producer`` has create_batch/send_batch unless
    ``batching`` is false; the partition of a key is ``int(key) % 4``."""

    def __init__(self, batching: bool = True, cap: int = 3, fail: Callable[[int], bool] = lambda n: False) -> None:
        self.batches: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.singles: list[tuple[str, int | None, bytes | None, bytes | None]] = []
        self.fail, self.requests = fail, 0
        inner = SimpleNamespace(partitions_for=self._partitions_for)
        if batching:
            inner.create_batch = lambda: _Batch(cap)
            inner.send_batch = self._send_batch
        self._producer = inner

    async def _partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def key_partition(self, topic: str, key: bytes) -> Any:
        return SimpleNamespace(topic=topic, partition=int(key) % 4)

    async def _send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future:
        assert batch.closed
        self.requests += 1
        self.batches.append((topic, partition, batch.records))
        return _done(exc=RuntimeError("broker said no") if self.fail(self.requests) else None)

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, ts: Any,
                   headers: Any) -> asyncio.Future:
        self.requests += 1
        self.singles.append((topic, partition, key, value))
        return _done(exc=RuntimeError("broker said no") if self.fail(self.requests) else None)


class _Table:
    key_serializer = value_serializer = "json"

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog: list[tuple[int, str, Any]] = []
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "cl", as_future_message=self._future_message)

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))  # Faust's buffer; its future is not awaited here

    @staticmethod
    def _future_message(*, key: Any, value: Any, partition: int, key_serializer: str, value_serializer: str) -> Any:
        enc = None if value is None else json.dumps(value).encode()
        return SimpleNamespace(message=SimpleNamespace(key=json.dumps(key).encode(), value=enc, headers={}))


def _sink(producer: _Producer) -> FaustSink:
    app = SimpleNamespace(producer=producer, conf=SimpleNamespace(producer_threaded=False), in_transaction=False)
    return FaustSink(app, _Table(), _runtime())


def test_predictions_go_out_as_record_batches_per_partition_in_event_order() -> None:
    producer = _Producer(cap=3)
    sink = _sink(producer)

    async def run() -> None:
        for i in range(10):  # users 0..4, two events each
            await sink.send("preds", str(i % 5).encode(), f"e{i}".encode())
        await sink.settle()

    asyncio.run(run())
    assert not producer.singles
    per_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for topic, part, records in producer.batches:
        assert topic == "preds" and 1 <= len(records) <= 3
        assert all(int(k) % 4 == part for k, _ in records)  # the partition Faust would choose
        per_partition.setdefault(part, []).extend(records)
    # users 0 and 4 share partition 0: their events in input order
    assert [v for _, v in per_partition[0]] == [b"e0", b"e4", b"e5", b"e9"]
    assert [v for _, v in per_partition[1]] == [b"e1", b"e6"]
    assert len(producer.batches) == 5  # partition 0: 3 + 1 records, 1, 2, 3: one each


def test_changelog_records_are_batched_on_the_event_partition_after_the_outputs() -> None:
    producer = _Producer()
    sink = _sink(producer)
    outcome = BatchOutcome(updates={"7": Update(2, {"items": ["a"]})}, predictions=[(b"7", b"p")])
    asyncio.run(deliver(outcome, sink, SETTINGS, _runtime()))
    assert [(t, p) for t, p, _ in producer.batches] == [(SETTINGS.predictions_topic, 3), ("cl", 2)]
    assert producer.batches[1][2] == [(b'"7"', b'{"items": ["a"]}')]
    assert sink.table.data == {"7": {"items": ["a"]}}


def test_without_record_batches_every_message_is_sent_on_its_own() -> None:
    producer = _Producer(batching=False)
    sink = _sink(producer)
    outcome = BatchOutcome(updates={"7": Update(2, {"items": ["a"]})}, predictions=[(b"7", b"p"), (b"8", b"q")])
    asyncio.run(deliver(outcome, sink, SETTINGS, _runtime()))
    assert [(t, p, k) for t, p, k, _ in producer.singles] == [
        (SETTINGS.predictions_topic, None, b"7"), (SETTINGS.predictions_topic, None, b"8")]
    assert sink.table.changelog == [(2, "7", {"items": ["a"]})]  # through the table's own send_changelog


def test_a_failed_batch_is_sent_again_and_counted() -> None:
    producer = _Producer(fail=lambda n: n == 1)
    sink = _sink(producer)

    async def run() -> None:
        await sink.send("preds", b"1", b"x")
        await sink.settle()

    asyncio.run(run())
    assert producer.batches == [("preds", 1, [(b"1", b"x")])] and producer.singles == [("preds", 1, b"1", b"x")]
    assert sink.runtime.send_errors == 1


def test_a_send_that_keeps_failing_stops_the_delivery() -> None:
    producer = _Producer(fail=lambda n: True)
    sink = _sink(producer)
    outcome = BatchOutcome(updates={"1": Update(1, {"items": ["a"]})}, predictions=[(b"1", b"x")])
    with pytest.raises(SinkError, match="could not be produced"):
        asyncio.run(deliver(outcome, sink, SETTINGS, _runtime()))
    assert not sink.table.data  # no state stored: the event will be redelivered and predicted


class _RefusingSink(ListSink):
    """A sink whose serializer refuses the states (as orjson refused numpy scalars)."""

    def put_state(self, user: str, partition: int, value: Any) -> None:
        raise TypeError("Type is not JSON serializable: numpy.float64")


@pytest.mark.parametrize("make_sink", [_RefusingSink, lambda: _sink(_Producer(fail=lambda n: True))],
                         ids=["serializer-refuses", "send-keeps-failing"])
def test_any_delivery_error_ends_the_worker_uncommitted_instead_of_crashing_the_agent(
    make_sink: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream.worker import app

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(app.os, "_exit", fake_exit)
    monkeypatch.setattr(app.logging, "shutdown", lambda: None)  # keep pytest's own log handlers open
    sink = make_sink()
    outcome = BatchOutcome(updates={"u": Update(0, {"items": ["a"]})}, predictions=[(b"u", b"p")])
    with pytest.raises(SystemExit):
        asyncio.run(app.deliver_or_exit(outcome, sink, SETTINGS, _runtime()))
    assert exits == [app.SINK_FAILED_EXIT]
