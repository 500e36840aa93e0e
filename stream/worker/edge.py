"""Edge pieces of the worker's batch logic (:mod:`stream.worker.batch`): the input message as the
agent got it (:class:`Source`), the applied-position check that survives a new broker or topic
(:func:`applied_check`), and a traceback log that cannot flood (:class:`RateLimitedLog`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, NamedTuple

#: At most one traceback per reason in this many seconds (a poison message repeated must not flood the log).
TRACEBACK_EVERY_S = 60.0


class Source(NamedTuple):
    """One input message as the agent got it. ``timestamp`` is the Kafka message time (unix
    seconds), used only to measure event -> prediction latency."""

    raw: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None
    #: the message key; None = not checked (tests, tools), ``b""`` = a null key (a dead letter)
    key: bytes | None = None

    @classmethod
    def of(cls, message: Any) -> Source:
        """From a Kafka message (Faust's ``event.message``)."""
        key = message.key
        return cls(message.value, message.topic, message.partition, message.offset, message.timestamp,
                   b"" if key is None else bytes(key))


class RateLimitedLog:
    """Log a traceback at most once per ``key`` (a reason) every ``every`` seconds; the others
    become a count in the next one."""

    def __init__(self, logger: logging.Logger, every: float = TRACEBACK_EVERY_S) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def exception(self, key: str, msg: str, *args: Any) -> bool:
        """``logger.exception`` when due (True), else counted (False)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._suppressed[key] += 1
                return False
            self._last[key] = now
            skipped = self._suppressed.pop(key, 0)
        if skipped:
            msg += f" ({skipped} more like it in the last {self.every:g} s, not shown)"
        self.logger.exception(msg, *args)
        return True


def applied_check(state: dict[str, Any] | None, src: Source, epoch: str | None) -> str:
    """``"new"`` (apply the event), ``"applied"`` (a redelivery: skip it) or ``"reset"`` (the
    stored position is from another epoch of the topic: apply it). A stored position without an
    epoch (older state) or an unknown current epoch compares offsets only.

    >>> applied_check({"off": [0, 5, "A"]}, Source(b"", "t", 0, 3), "A")
    'applied'
    >>> applied_check({"off": [0, 5, "A"]}, Source(b"", "t", 0, 3), "B")
    'reset'
    """
    off = state.get("off") if state else None
    if not off or int(off[0]) != src.partition or src.offset > int(off[1]):
        return "new"
    stored = off[2] if len(off) > 2 else None
    if epoch is not None and stored is not None and stored != epoch:
        return "reset"
    return "applied"


