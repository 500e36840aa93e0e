"""Reading a Faust table's changelog topic to its real end (see :func:`read_changelog`)."""

from __future__ import annotations

import json
import time
from typing import Any

from stream.errors import StreamError
from stream.kafka.clients import make_consumer
from stream.settings import Settings


def read_changelog(
    settings: Settings, topic: str, start: dict[int, int], timeout: float = 60.0
) -> list[tuple[str, dict[str, Any] | None]]:
    """(key, value) of every record of ``topic``'s partitions from ``start[partition]`` to the end,
    in offset order per partition, JSON-decoded (None = deleted). The end is the high watermark of
    the fetch responses (ListOffsets under-reports it on Tansu). Raises :class:`StreamError` when
    the end is not reached within ``timeout`` seconds."""
    from kafka import TopicPartition

    consumer = make_consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        out: list[tuple[str, dict[str, Any] | None]] = []
        deadline = time.monotonic() + timeout
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                raise StreamError(
                    f"could not read changelog {topic} to its end within {timeout:g} s; is the broker overloaded?"
                )
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    out.append((json.loads(r.key), None if r.value is None else json.loads(r.value)))
            for tp in list(pending):
                hw = consumer.highwater(tp)
                # highwater is None until a fetch response for tp came back
                if hw is not None and consumer.position(tp) >= hw:
                    pending.discard(tp)
        return out
    finally:
        consumer.close()
