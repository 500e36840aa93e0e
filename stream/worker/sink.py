"""Where a batch's outcome goes: the small :class:`Sink` interface (store a user's state, send a
message) and :func:`deliver`, which writes one :class:`~stream.worker.pipeline.BatchOutcome`
through it and accounts for it. :class:`FaustSink` is the worker's (the Faust table and producer);
tests use a list-backed one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from stream.messages import CONTROL_KEY
from stream.settings import Settings
from stream.worker.batch import UserState
from stream.worker.pipeline import BatchOutcome
from stream.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What an outcome is written to."""

    def get_state(self, user: str) -> UserState | None:
        """The user's stored state (None for a new user)."""
        ...

    def put_state(self, user: str, partition: int, value: UserState) -> None:
        """Store the user's new state; its changelog record belongs to ``partition``."""
        ...

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send one message without waiting for its acknowledgement."""
        ...


async def deliver(outcome: BatchOutcome, sink: Sink, settings: Settings, runtime: WorkerRuntime) -> None:
    """Write ``outcome`` (states, predictions, dead letters, drift signals, rollbacks) and count it."""
    sent_from = time.perf_counter()
    for user, upd in outcome.updates.items():
        sink.put_state(user, upd.partition, upd.value)
    for key, value in outcome.predictions:
        await sink.send(settings.predictions_topic, key, value)
    for dkey, dvalue in outcome.dead_letters:
        await sink.send(settings.dead_letter_topic, dkey, dvalue)
    for signal in outcome.signals:  # a trigger for the trainer
        await sink.send(settings.model_updates_topic, CONTROL_KEY, signal)
    runtime.drift_published += len(outcome.signals)
    for notice in outcome.rollbacks:  # decided by the post-swap guard
        await sink.send(settings.model_updates_topic, CONTROL_KEY, notice)
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


class FaustSink:
    """The Faust table (written directly, see :meth:`put_state`) and the app's producer; a failed
    send is counted in ``runtime.send_errors`` and logged once per distinct error."""

    def __init__(self, app: Any, table: Any, runtime: WorkerRuntime, max_users: int = 0) -> None:
        self.app = app
        self.table = table
        self.runtime = runtime
        self.max_users = max_users

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
        self.table.send_changelog(partition, user, value)
        if self.max_users:
            for old, part in evict_oldest(data, self.max_users):
                # A tombstone, so that a restart's recovery does not bring the evicted users back.
                self.table.send_changelog(part, old, None, value_serializer="raw")
                self.runtime.stats.evicted += 1
                if self.runtime.monitor is not None:
                    self.runtime.monitor.metrics.users_evicted.inc()

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        fut = await self.app.producer.send(topic, key, value, None, None, None)
        fut.add_done_callback(self._on_sent)

    def _on_sent(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.runtime.send_errors += 1
            msg = repr(fut.exception())
            if msg != self.runtime._last_error:  # one log line per distinct error, not per message
                self.runtime._last_error = msg
                log.error("a produced message failed: %s", msg)
