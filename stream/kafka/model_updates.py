"""A reader of the model-updates topic for long-running processes (worker, trainer).

The topic is the log of what to serve: :class:`ModelUpdatesReader` reads it *from the beginning*
(kafka-python, no consumer group, every partition assigned), so that the reader learns the
current state without trusting ``seek_to_end`` (ListOffsets under-reports the end on some brokers,
BROKER.md). Messages older than the reader's start ("history": before the position first reached
the fetch high watermark, and produced before the reader started) and new ones ("live": read after
catching up, or stamped at or after the reader's start, so a signal sent while the reader is still
reading the history is not mistaken for history) are both passed to the handler, flagged, so that
each process decides: the worker applies only the newest historical model announcement, and only
when it is newer than what it serves; the trainer ignores historical drift signals.

Runs in a daemon thread (:meth:`ModelUpdatesReader.start`), stopped by :meth:`ModelUpdatesReader.stop`;
a broker outage is logged and retried, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from stream.kafka.clients import make_consumer
from stream.messages import ControlMessage, parse_control
from stream.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[ControlMessage, bool], None]
"""``handler(message, live)``: ``live`` is False for messages from before the reader caught up."""


class ModelUpdatesReader:
    """Reads ``settings.model_updates_topic`` from the beginning and calls ``handler`` per valid
    control message (see :mod:`stream.messages`); once the history is read, :attr:`caught_up` is set
    and ``on_caught_up()`` is called (from the reader's thread)."""

    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        on_caught_up: Callable[[], None] | None = None,
        poll_ms: int = 200,
        name: str = "model-updates",
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.on_caught_up = on_caught_up
        self.poll_ms = poll_ms
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.messages = 0
        self.errors = 0
        self.started_at = time.time()
        # partition -> (last offset handed to the handler, newest record time seen there)
        self._handled: dict[Any, tuple[int, int]] = {}

    def start(self) -> ModelUpdatesReader:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> ModelUpdatesReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _consumer(self) -> Any:
        from kafka import TopicPartition

        consumer = make_consumer(self.settings)
        topic = self.settings.model_updates_topic
        deadline = time.monotonic() + 30
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.5)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            consumer.close()
            raise RuntimeError(f"topic {topic!r} does not exist; create it (hailstream topics)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                consumer = self._consumer()
            except Exception as e:
                log.warning("model-updates reader cannot start (%s); retrying in %.0f s", e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            try:
                self._loop(consumer)
                return
            except Exception as e:  # the broker went away: start over (history is re-read, flagged)
                log.warning("model-updates reader failed (%s); reconnecting", e)
                self._stop.wait(backoff)
            finally:
                consumer.close()

    def _loop(self, consumer: Any) -> None:
        tps = list(consumer.assignment())
        self.caught_up.clear()  # a reconnect re-reads the history: flag it as such again
        while not self._stop.is_set():
            batch = consumer.poll(timeout_ms=self.poll_ms)
            live = self.caught_up.is_set()
            for tp, records in batch.items():
                for r in records:
                    if not self._unseen(tp, r):
                        continue  # re-read after a reconnect: already handled
                    msg = parse_control(r.value)
                    if msg is None:
                        continue
                    self.messages += 1
                    try:
                        self.handler(msg, live or self._produced_since_start(r))
                    except Exception:
                        self.errors += 1
                        log.exception("handling a model-updates message failed: %s", msg)
            if not live and all(self._at_end(consumer, tp) for tp in tps):
                self.caught_up.set()
                if self.on_caught_up is not None:
                    try:
                        self.on_caught_up()
                    except Exception:
                        self.errors += 1
                        log.exception("applying the model-updates history failed")

    def _unseen(self, tp: Any, record: Any) -> bool:
        """Whether ``record`` was not handed to the handler yet (and remember it). A reconnect
        re-reads the partition: records at or before the last handled offset and no newer than
        anything seen there are skipped; a topic recreated on a new broker restarts its offsets,
        but its records are newer, so they are handled.

        >>> from collections import namedtuple
        >>> R = namedtuple("R", "offset timestamp")
        >>> reader = ModelUpdatesReader.__new__(ModelUpdatesReader); reader._handled = {}
        >>> [reader._unseen(0, r) for r in (R(0, 100), R(1, 200), R(0, 100), R(1, 200), R(0, 300))]
        [True, True, False, False, True]
        """
        last, newest = self._handled.get(tp, (-1, -1))
        stamp = getattr(record, "timestamp", None)
        stamp = stamp if isinstance(stamp, int) else -1
        if record.offset <= last and stamp <= newest:
            return False
        self._handled[tp] = (record.offset, max(newest, stamp))
        return True

    def _produced_since_start(self, record: Any) -> bool:
        stamp = getattr(record, "timestamp", None)  # milliseconds (CreateTime), or -1/None when unknown
        return stamp is not None and stamp >= 0 and stamp / 1000.0 >= self.started_at

    @staticmethod
    def _at_end(consumer: Any, tp: Any) -> bool:
        hw = consumer.highwater(tp)  # from fetch responses: right even where ListOffsets is not
        return hw is not None and consumer.position(tp) >= hw
