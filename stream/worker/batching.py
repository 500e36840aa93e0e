"""How the worker's agent cuts its input into micro-batches: :func:`take_batches`.

Faust's ``Stream.take_events(max_, within)`` waits ``within`` seconds for a batch to fill after every
batch, and stops reading while one is handled: at half the worker's rate an event waited ~50 ms for
its batch to close and then for the batch before it (bench/RESULTS.md, issue 14). This takes the same
events, acked the same way (after the caller is done with the batch), with two changes:

- **greedy**: a batch closes as soon as nothing else is queued on the stream's channel (or it holds
  ``max_`` events), so a lone event goes at once and a burst goes as one batch;
- **double-buffered while it keeps up**: while the caller handles a batch that was not full (the
  model runs in a thread), the event loop keeps moving new events into the next one, up to
  :data:`OVERLAP`. Behind a full batch (a backlog) it does not: there latency is queueing anyway,
  and filling a whole batch beside the model looked costly on a busy 2-core machine (bench/RESULTS.md,
  within the run-to-run noise).

Events held in the next batch when their partitions are revoked fare as those in Faust's take
buffer do: they are still handled here, and the new owner gets them again from the last committed
offset (duplicates, as at-least-once allows).

Batches grow with the load by themselves: the busier the worker, the more events queue up during a
batch, the larger the next one. The structure (a stream processor that fills a buffer, passive
consumption, manual acks) follows ``faust.Stream.take_events`` (faust-streaming, BSD-3-Clause).

>>> import asyncio, faust
>>> app = faust.App("doc-batching", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
>>> app.finalize(); app.flow_control.resume()
>>> async def first_two_batches():
...     channel = app.channel()
...     stream = app.stream(aiter(channel))
...     for i in range(5):
...         await channel.send(value=i)
...     out = []
...     async for batch in take_batches(stream, max_=3, within=30.0):
...         out.append([e.value for e in batch])
...         if len(out) == 2:
...             await stream.stop()
...             return out
>>> app.loop.run_until_complete(first_two_batches())   # [3, 4] at once: no 30 s wait for a third
[[0, 1, 2], [3, 4]]
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

#: Most events moved into the next batch while the caller handles one.
OVERLAP = 64


def take_batches(stream: Any, max_: int, within: float, overlap: int = OVERLAP) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_`` Faust events of ``stream``: each as soon as it is not empty
    and nothing else is queued on the channel, or it is full (see the module docstring). ``within``
    is how often the wait wakes up to look at the stream's stop flag (and flushes what it has);
    ``overlap`` how many events fill the next batch while the caller handles one that was not full.

    The events of a batch are acked once the caller asks for the next batch (or stops), as
    ``take_events`` does: at-least-once holds if the caller settles each batch before that.
    """
    if max_ < 1:
        raise ValueError(f"max_ must be >= 1, not {max_}")
    agen = _batches(stream, max_, within, overlap)
    # Registered like Faust's own take(): the stream's stop closes a generator left behind.
    active = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(agen)
    return agen


async def _batches(stream: Any, max_: int, within: float, overlap: int) -> AsyncIterator[list[Any]]:
    queue = getattr(stream.channel, "queue", None)
    nothing_queued = queue.empty if queue is not None else (lambda: True)
    filling: list[Any] = []  # events of the next batch
    ready = asyncio.Event()  # filling has events, and nothing else is queued or it is full
    room = asyncio.Event()  # filling has room for another event
    room.set()

    limit = [max_]  # how many events `filling` may hold now (less while the caller holds a batch)

    async def add(value: Any) -> Any:
        # Strict: a full batch waits to be taken, and the next one waits at its limit.
        while len(filling) >= limit[0]:
            room.clear()
            await stream.wait(room)
            if stream.should_stop:
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches found current_event is None")
        filling.append(event)
        if len(filling) >= max_ or nothing_queued():
            ready.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked below, once the caller is done with the batch
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready, timeout=within)
            if not filling:
                ready.clear()
                continue
            batch = filling[:]
            filling.clear()
            ready.clear()
            limit[0] = min(overlap, max_) if len(batch) < max_ else 0
            if limit[0]:
                room.set()  # the next batch may fill beside this one
            try:
                yield batch
            finally:
                limit[0] = max_
                room.set()
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
