"""The worker's micro-batching (stream.worker.batching.take_batches) on a real Faust stream over an
in-memory channel: batches close as soon as nothing more is queued, never exceed max_, keep order,
and the next batch fills while one is handled. Faust's own take_events is the reference it departs
from (it waits ``within`` for a partial batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import faust
import pytest

from stream.worker.batching import take_batches

Run = Callable[[Callable[[faust.App], Awaitable[Any]]], Any]
_STREAMS: list[Any] = []


@pytest.fixture
def run() -> Iterator[Run]:
    """Runs ``body(app)`` on the app's own loop (Faust streams live there), with a 20 s cap; stops
    the streams it made."""
    app = faust.App("test-batching", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    app.finalize()
    app.flow_control.resume()

    def go(body: Callable[[faust.App], Awaitable[Any]]) -> Any:
        return app.loop.run_until_complete(asyncio.wait_for(body(app), 20))

    yield go
    streams, _STREAMS[:] = _STREAMS[:], []
    app.loop.run_until_complete(asyncio.gather(*(s.stop() for s in streams)))


async def _stream_with(app: faust.App, values: list[int]) -> tuple[Any, Any]:
    channel = app.channel()
    stream = app.stream(aiter(channel))
    _STREAMS.append(stream)
    for v in values:
        await channel.send(value=v)
    return channel, stream


async def _collect(batches: Any, n: int) -> list[list[int]]:
    out: list[list[int]] = []
    async for batch in batches:
        out.append([e.value for e in batch])
        if sum(map(len, out)) >= n:
            break
    return out


def test_a_partial_batch_goes_at_once_where_take_events_waits(run: Run) -> None:
    async def body(app: faust.App) -> tuple[list[list[int]], float, float]:
        loop = asyncio.get_running_loop()
        _, stream = await _stream_with(app, list(range(7)))
        t0 = loop.time()
        ours = await _collect(take_batches(stream, 3, within=30.0), 7)
        ours_s = loop.time() - t0
        _, ref_stream = await _stream_with(app, list(range(7)))
        t0 = loop.time()
        ref = await _collect(ref_stream.take_events(3, within=1.0), 7)
        return ours + ref, ours_s, loop.time() - t0

    batches, ours_s, ref_s = run(body)
    # The same batches as Faust's take (strictly at most max_, in order) ...
    assert batches == [[0, 1, 2], [3, 4, 5], [6]] * 2
    # ... but the last, partial one is not held back for `within` (30 s here; the test's cap is 20 s)
    assert ours_s < 10.0
    assert ref_s >= 1.0  # Faust's take waited its `within` for the lone [6]


def _arrivals_while_handling(run: Run, max_: int, later: list[int], **kw: Any) -> tuple[list[list[int]], int]:
    """Events 0 and 1 form the first batch; while the caller "handles" it, ``later`` arrive. Returns
    the batches and how many events were still queued on the channel 50 ms into the handling."""

    async def body(app: faust.App) -> tuple[list[list[int]], int]:
        channel, stream = await _stream_with(app, [0, 1])
        out: list[list[int]] = []
        queued = -1
        async for batch in take_batches(stream, max_, within=30.0, **kw):
            out.append([e.value for e in batch])
            if len(out) == 1:
                for v in later:
                    await channel.send(value=v)
                await asyncio.sleep(0.05)
                queued = stream.channel.queue.qsize()
            if sum(map(len, out)) == 2 + len(later):
                break
        return out, queued

    return cast("tuple[list[list[int]], int]", run(body))


def test_the_next_batch_fills_while_one_is_handled(run: Run) -> None:
    out, queued = _arrivals_while_handling(run, 100, [2, 3, 4])
    assert queued == 0  # moved into the next batch meanwhile, not left on the channel
    assert out == [[0, 1], [2, 3, 4]]


def test_at_most_overlap_events_move_while_a_batch_is_handled(run: Run) -> None:
    out, queued = _arrivals_while_handling(run, 100, [2, 3, 4, 5, 6], overlap=2)
    # 2 moved beside the handled batch, a third waits at the door (as in Faust's take), 2 stay queued ...
    assert queued == 2
    assert out == [[0, 1], [2, 3, 4, 5, 6]]  # ... and taken into the same next batch once it was done


def test_nothing_moves_beside_a_full_batch(run: Run) -> None:
    # A full first batch (max_ 2): the worker is behind, so the next one fills only afterwards.
    out, queued = _arrivals_while_handling(run, 2, [2, 3, 4])
    assert queued == 2  # one at the door, as in Faust's take; the rest still queued
    assert out == [[0, 1], [2, 3], [4]]


def test_a_batch_size_below_one_is_refused(run: Run) -> None:
    async def body(app: faust.App) -> None:
        _, stream = await _stream_with(app, [])
        take_batches(stream, 0, within=1.0)

    with pytest.raises(ValueError, match="max_ must be >= 1"):
        run(body)
