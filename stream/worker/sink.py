"""Where a batch's outcome goes: the small :class:`Sink` interface (store a user's state, send a
message, settle) and :func:`deliver`, which writes one :class:`~stream.worker.pipeline.BatchOutcome`
through it and accounts for it. :class:`FaustSink` is the worker's (the Faust table and producer);
tests use a list-backed one (``tests/fakes.py``).

Delivery order (issue 12, "nothing lost"): a user's state holds the position of the last event
applied to it, and a redelivered event at or before it is skipped (:mod:`stream.worker.batch`).
A changelog record that reached the broker before the predictions of its events would, after a
crash, make the restarted worker skip those events: predictions lost. So :func:`deliver` sends
the outputs first, waits for the broker's acknowledgements (:meth:`Sink.settle`), then stores the
states and waits again; the agent acknowledges the batch's offsets only after that. A crash at
any point leaves at most duplicates (the events are redelivered and predicted again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from stream.errors import StreamError
from stream.messages import CONTROL_KEY
from stream.settings import Settings
from stream.worker.batch import UserState
from stream.worker.pipeline import BatchOutcome
from stream.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: Produce attempts of a message whose send failed before :meth:`FaustSink.settle` gives up.
SEND_ATTEMPTS = 3


class SinkError(StreamError):
    """Messages could not be produced; the batch's offsets must not be committed."""


class Sink(Protocol):
    """What an outcome is written to."""

    def get_state(self, user: str) -> UserState | None:
        """The user's stored state (None for a new user)."""
        ...

    def put_state(self, user: str, partition: int, value: UserState) -> None:
        """Store the user's new state; its changelog record belongs to ``partition``. The record
        is stored at the latest when the next :meth:`settle` returns."""
        ...

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Hand over one message, keyed ``key``; it is produced at the latest by the next
        :meth:`settle`, in the order of the calls per (topic, partition of the key)."""
        ...

    async def settle(self) -> None:
        """Return once every message sent and every state stored so far is acknowledged by the
        broker; raises :class:`SinkError` when some could not be produced."""
        ...


async def deliver(outcome: BatchOutcome, sink: Sink, settings: Settings, runtime: WorkerRuntime) -> None:
    """Write ``outcome`` (predictions, dead letters, drift signals, rollbacks; then the states) and
    count it. Outputs are settled before the states are stored (see the module docstring)."""
    sent_from = time.perf_counter()
    for key, value in outcome.predictions:
        await sink.send(settings.predictions_topic, key, value)
    for dkey, dvalue in outcome.dead_letters:
        await sink.send(settings.dead_letter_topic, dkey, dvalue)
    for signal in outcome.signals:  # a trigger for the trainer
        await sink.send(settings.model_updates_topic, CONTROL_KEY, signal)
    for notice in outcome.rollbacks:  # decided by the post-swap guard
        await sink.send(settings.model_updates_topic, CONTROL_KEY, notice)
    await sink.settle()
    runtime.drift_published += len(outcome.signals)
    for user, upd in outcome.updates.items():
        sink.put_state(user, upd.partition, upd.value)
    await sink.settle()
    if outcome.result is None:
        runtime.stats.count_internal_errors(outcome.failed)
        return
    runtime.stats.add_busy("send", time.perf_counter() - sent_from)
    runtime.stats.add(outcome.result)


def evict_oldest(data: Any, cap: int) -> list[tuple[str, int]]:
    """Drop the first-inserted users of the mapping ``data`` until it holds ``cap``; returns
    (user, partition of its last event) of each dropped one.

    >>> d = {"a": {"off": [1, 5]}, "b": {"off": [0, 7]}, "c": {"off": [2, 1]}}
    >>> evict_oldest(d, 2), list(d)
    ([('a', 1)], ['b', 'c'])
    """
    out: list[tuple[str, int]] = []
    while len(data) > cap:
        old = next(iter(data))
        value = data.pop(old)
        getattr(data, "_key_partition", {}).pop(old, None)  # Faust's memory store tracks recovered keys
        off = value.get("off") if isinstance(value, dict) else None
        out.append((old, int(off[0]) if off else 0))
    return out


class Out(NamedTuple):
    """One serialized message to produce (``partition`` None: the producer's partitioner picks it
    from the key, as for any Faust send)."""

    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class _InFlight:
    """A produce request not yet settled: its future and what it carried (for a retry)."""

    future: Any
    topic: str
    messages: list[Out]


def group_by_partition(messages: Sequence[Out], partition_of: Any) -> dict[int, list[Out]]:
    """``messages`` per partition, in their order (``partition_of(key)`` for the ones without one).

    >>> group_by_partition([Out(None, b"a", b"1"), Out(2, b"b", b"2"), Out(None, b"a", b"3")],
    ...                    lambda key: 0)
    {0: [Out(partition=None, key=b'a', value=b'1', headers=()), \
Out(partition=None, key=b'a', value=b'3', headers=())], 2: [Out(partition=2, key=b'b', value=b'2', headers=())]}
    """
    out: dict[int, list[Out]] = {}
    for m in messages:
        part = m.partition if m.partition is not None else partition_of(m.key)
        out.setdefault(part, []).append(m)
    return out


class FaustSink:
    """The Faust table (written directly, see :meth:`put_state`) and the app's producer.

    Messages and changelog records are queued and produced by :meth:`settle`: with Faust's
    aiokafka producer as record batches, one or more per (topic, partition), in the order they
    were queued (issue 14: one ``send_batch`` instead of one ``send`` per message), serialized
    exactly as Faust serializes them, on the partition Faust's partitioner picks for the key;
    with any other producer one ``send`` per message. A failed send is retried (up to
    :data:`SEND_ATTEMPTS`), counted in ``runtime.send_errors`` and logged once per distinct error."""

    def __init__(self, app: Any, table: Any, runtime: WorkerRuntime, max_users: int = 0) -> None:
        self.app = app
        self.table = table
        self.runtime = runtime
        self.max_users = max_users
        self._queued: dict[str, list[Out]] = {}
        self._in_flight: list[_InFlight] = []

    def get_state(self, user: str) -> UserState | None:
        value = self.table.data.get(user)
        return value if isinstance(value, dict) else None

    def put_state(self, user: str, partition: int, value: UserState) -> None:
        # Write the store directly and send the changelog record to the partition of the event
        # that produced it: Faust's own __setitem__ would take the partition of the stream's
        # *current* event, which in a batch may belong to another user.
        data = self.table.data
        if self.max_users:
            data.pop(user, None)  # re-inserted last: insertion order = least recently updated first
        data[user] = value
        self._changelog(partition, user, value)
        if self.max_users:
            for old, part in evict_oldest(data, self.max_users):
                # A tombstone, so that a restart's recovery does not bring the evicted users back.
                self._changelog(part, old, None, value_serializer="raw")
                self.runtime.stats.evicted += 1
                if self.runtime.monitor is not None:
                    self.runtime.monitor.metrics.users_evicted.inc()

    def _changelog(self, partition: int, key: str, value: Any, value_serializer: str | None = None) -> None:
        if self._batching() is None:
            # Through Faust's own buffer; the FutureMessage is settled like any send.
            fut = self.table.send_changelog(partition, key, value, value_serializer=value_serializer)
            if isinstance(fut, asyncio.Future) and hasattr(fut, "message"):
                msg: Any = getattr(fut, "message", None)  # a FutureMessage's PendingMessage
                self._in_flight.append(_InFlight(fut, self.table.changelog_topic.get_topic_name(),
                                                 [Out(partition, msg.key, msg.value, _headers(msg.headers))]))
            return
        topic = self.table.changelog_topic
        # The table's own serializers and headers: what Table.send_changelog would produce. (Its
        # sent-callback only records a RocksDB store's persisted offset; make_app uses memory://.)
        msg = topic.as_future_message(
            key=key, value=value, partition=partition, key_serializer=self.table.key_serializer,
            value_serializer=value_serializer if value_serializer is not None else self.table.value_serializer,
        ).message
        self._queued.setdefault(topic.get_topic_name(), []).append(Out(partition, msg.key, msg.value, _headers(msg.headers)))

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._queued.setdefault(topic, []).append(Out(None, key, value))

    def _batching(self) -> Any:
        """aiokafka's producer when record batches can be sent through it, else None."""
        if self.app is None:
            return None
        producer = self.app.producer
        inner = getattr(producer, "_producer", None)
        if inner is None or not (hasattr(inner, "create_batch") and hasattr(inner, "send_batch")):
            return None
        conf = getattr(self.app, "conf", None)
        # A threaded producer runs aiokafka on another loop; a transaction needs Faust's own path.
        if getattr(conf, "producer_threaded", False) or getattr(self.app, "in_transaction", False):
            return None
        return inner

    async def settle(self) -> None:
        queued, self._queued = self._queued, {}
        for topic, messages in queued.items():
            await self._produce(topic, messages)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            in_flight, self._in_flight = self._in_flight, []
            if not in_flight:
                return
            results = await asyncio.gather(*(f.future for f in in_flight), return_exceptions=True)
            failed = [(f, r) for f, r in zip(in_flight, results, strict=True) if isinstance(r, BaseException)]
            for f, exc in failed:
                self._on_error(exc, len(f.messages))
            if not failed:
                return
            if attempt == SEND_ATTEMPTS:
                n = sum(len(f.messages) for f, _ in failed)
                raise SinkError(f"{n} messages could not be produced after {SEND_ATTEMPTS} attempts "
                                f"(last error: {failed[-1][1]!r}); is the broker reachable?")
            await asyncio.sleep(0.2 * attempt)
            for f, _ in failed:  # one by one, on the partition chosen before
                for m in f.messages:
                    await self._send_one(f.topic, m)

    async def _produce(self, topic: str, messages: list[Out]) -> None:
        inner = self._batching()
        if inner is None:
            for m in messages:
                await self._send_one(topic, m)
            return
        await inner.partitions_for(topic)  # the partitioner needs the topic's metadata
        producer = self.app.producer
        for part, ms in group_by_partition(messages, lambda key: producer.key_partition(topic, key).partition).items():
            batch, chunk = inner.create_batch(), []
            for m in ms:
                if batch.append(key=m.key, value=m.value, timestamp=None, headers=list(m.headers)) is not None:
                    chunk.append(m)
                    continue
                if chunk:  # full: send it, start the next one
                    await self._send_batch(inner, batch, topic, part, chunk)
                    batch, chunk = inner.create_batch(), []
                    if batch.append(key=m.key, value=m.value, timestamp=None, headers=list(m.headers)) is not None:
                        chunk.append(m)
                        continue
                await self._send_one(topic, m._replace(partition=part))  # larger than a batch on its own
            if chunk:
                await self._send_batch(inner, batch, topic, part, chunk)

    async def _send_batch(self, inner: Any, batch: Any, topic: str, partition: int, chunk: list[Out]) -> None:
        batch.close()
        fixed = [m._replace(partition=partition) for m in chunk]
        try:
            fut = await inner.send_batch(batch, topic, partition=partition)
        except Exception as exc:  # retried by settle
            fut = _failed(exc)
        self._in_flight.append(_InFlight(fut, topic, fixed))

    async def _send_one(self, topic: str, m: Out) -> None:
        try:
            fut = await self.app.producer.send(topic, m.key, m.value, m.partition, None, list(m.headers) or None)
        except Exception as exc:  # retried by settle
            fut = _failed(exc)
        self._in_flight.append(_InFlight(fut, topic, [m]))

    def _on_error(self, exc: BaseException, n: int) -> None:
        self.runtime.send_errors += n
        msg = repr(exc)
        if msg != self.runtime._last_error:  # one log line per distinct error, not per message
            self.runtime._last_error = msg
            log.error("a produced message failed: %s", msg)


def _failed(exc: BaseException) -> asyncio.Future:
    fut: asyncio.Future = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    return fut


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    if not headers:
        return ()
    items = headers.items() if hasattr(headers, "items") else headers
    return tuple((str(k), bytes(v)) for k, v in items)
