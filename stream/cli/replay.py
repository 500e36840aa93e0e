"""Replay a data set onto the interactions topic, in timestamp order, keyed by user (DESIGN §5).

Each event becomes ``{"user_id", "item_id", "ts", "event_id": "<dataset>:<row>", ["lat", "lon"],
"kind"}`` where ``<row>`` is the event's index in the time-sorted data set (stable across runs and
across ``--from-block`` selections, so ids never collide), and ``kind`` is ``"checkin"`` for data
with coordinates (POI check-ins) and ``"click"`` otherwise.

Backfill (DESIGN §4): ``backfill`` publishes, before the replay and as fast as the producer goes, the
past the replay leaves out (:func:`backfill_rows`; the training block with ``--from-block T1``)
marked ``"backfill": true``; the worker applies them to the users' histories and the baselines
without scoring or predicting them, so that model and baselines see the same past at the first
scored event.

Pacing: ``speed`` replays event time ``speed`` times faster than real time; ``max_rate`` caps the
average publication rate (events/s, averaged from the start). Both may be combined; neither means
as fast as the producer goes. :func:`generate_load` reuses the same publisher as a load generator.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.data import Interactions
from stream.errors import BrokerError, SettingsError, StreamError
from stream.kafka.clients import make_producer, security_kwargs
from stream.settings import Settings

_PROGRESS_EVERY = 1000


def _block_key(label: str) -> tuple[str, int, str]:
    """Natural order of block labels, so T10 sorts after T9."""
    m = re.fullmatch(r"(.*?)(\d+)", label)
    return (m.group(1), int(m.group(2)), "") if m else (label, -1, label)


def block_rows(events: Interactions, first_block: str) -> np.ndarray:
    """Row indices (ascending = time order) of the events whose block is ``first_block`` or later,
    for ``hailstream replay --from-block T1``; pass them as ``replay(..., rows=...)`` so event ids
    keep the rows' indices in the full data set. Blocks of the bundled Foursquare data overlap in
    time (a trajectory belongs to the block it starts in), so this is a filter, not a suffix.

    >>> from models.data import Interactions
    >>> ev = Interactions("x", np.array(["u"] * 4, dtype=object), np.array(list("abcd"), dtype=object),
    ...                   np.arange(4.0), block=np.array(["T0", "T1", "T0", "T2"]))
    >>> block_rows(ev, "T1").tolist()
    [1, 3]
    """
    if events.block is None:
        raise SettingsError(
            f"data set {events.name!r} has no blocks, so --from-block cannot apply; it works with "
            "foursquare-nyc (blocks T0..T5), or use --start/--limit"
        )
    labels = sorted({str(b) for b in events.block.tolist()}, key=_block_key)
    if first_block not in labels:
        raise SettingsError(f"block {first_block!r} not in data set {events.name!r}; its blocks are {', '.join(labels)}")
    keep = labels[labels.index(first_block):]
    return np.flatnonzero(np.isin(events.block, keep))


def backfill_rows(n_rows: int, selected: np.ndarray, n: int | None) -> np.ndarray:
    """The rows ``backfill=n`` publishes before the replay of ``selected`` (row indices, ascending):
    the rows of the data set (``n_rows`` of them, in time order) that are not replayed and come
    before the last replayed one, the newest ``n`` of them (None = all of them, 0 = none).

    >>> backfill_rows(10, np.array([4, 5, 6]), None).tolist()
    [0, 1, 2, 3]
    >>> backfill_rows(10, np.array([1, 3, 5, 6]), 2).tolist(), backfill_rows(10, np.array([4]), 0).tolist()
    ([2, 4], [])
    """
    if n is not None and n < 0:
        raise SettingsError(f"backfill must be >= 0 events (or all), got {n}")
    selected = np.asarray(selected, dtype=np.int64)
    if len(selected) == 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    before = np.setdiff1d(np.arange(min(int(selected.max()), n_rows), dtype=np.int64), selected)
    return before if n is None else before[max(0, len(before) - n):]


class Pacer:
    """When each event may be published: a pure schedule, tested without sleeping.

    >>> p = Pacer(speed=10.0, max_rate=None, first_ts=100.0, start=0.0)
    >>> p.due(0, 100.0), p.due(1, 150.0)
    (0.0, 5.0)
    >>> Pacer(speed=None, max_rate=4.0, first_ts=0.0, start=1.0).due(8, 0.0)
    3.0
    """

    def __init__(self, speed: float | None, max_rate: float | None, first_ts: float, start: float) -> None:
        if speed is not None and not speed > 0:
            raise SettingsError(f"replay speed must be > 0 (an event-time speed-up factor), got {speed!r}")
        if max_rate is not None and not max_rate > 0:
            raise SettingsError(f"replay max rate must be > 0 events/s, got {max_rate!r}")
        self.speed = speed
        self.max_rate = max_rate
        self.first_ts = first_ts
        self.start = start

    @property
    def paced(self) -> bool:
        return self.speed is not None or self.max_rate is not None

    def due(self, n: int, ts: float) -> float:
        """Wall-clock time (same clock as ``start``) at which the ``n``-th event (0-based, event
        time ``ts``) may go."""
        t = self.start
        if self.speed is not None:
            t = max(t, self.start + (ts - self.first_ts) / self.speed)
        if self.max_rate is not None:
            t = max(t, self.start + n / self.max_rate)
        return t


@dataclass(frozen=True)
class PublishResult:
    """What a publication run achieved."""

    published: int
    seconds: float

    @property
    def rate(self) -> float:
        """Events per second, including the final flush."""
        return self.published / self.seconds if self.seconds > 0 else float("inf")


def _json_str(cache: dict[str, str], s: str) -> str:
    enc = cache.get(s)
    if enc is None:
        enc = cache[s] = json.dumps(s, ensure_ascii=False)
    return enc


def _messages(
    events: Interactions, rows: np.ndarray, prefix: str, ids: np.ndarray | None = None,
    ts_offset: np.ndarray | None = None, backfill: bool = False,
) -> Iterator[tuple[bytes, bytes, float]]:
    """(key, value, ts) per selected row; event ids number ``ids`` (default: the rows); with
    ``backfill`` every message is marked ``"backfill": true``.

    Hand-rolled JSON, exactly what ``json.dumps`` gives (ids JSON-escaped once per distinct value,
    floats via ``repr`` as ``json`` does): generic encoding was a fifth of the publish cost. Columns
    become Python lists once: numpy scalar access per event would cost more than the encoding."""
    ts_arr = events.ts[rows] if ts_offset is None else events.ts[rows] + ts_offset
    if not np.isfinite(ts_arr).all():
        raise StreamError(f"data set {events.name!r} has non-finite timestamps; fix or drop those rows")
    users = events.users[rows].tolist()
    items = events.items[rows].tolist()
    ts = ts_arr.tolist()
    idx = (rows if ids is None else ids).tolist()
    geo = events.lat is not None and events.lon is not None
    lat = events.lat[rows].tolist() if geo else []  # type: ignore[index]
    lon = events.lon[rows].tolist() if geo else []  # type: ignore[index]
    tail = (',"kind":"checkin"' if geo else ',"kind":"click"') + (',"backfill":true}' if backfill else "}")
    pre = json.dumps(prefix, ensure_ascii=False)[1:-1]
    ucache: dict[str, str] = {}
    icache: dict[str, str] = {}
    isfinite = math.isfinite
    for j in range(len(idx)):
        u = str(users[j])
        t = float(ts[j])
        head = (
            f'{{"user_id":{_json_str(ucache, u)},"item_id":{_json_str(icache, str(items[j]))},'
            f'"ts":{t!r},"event_id":"{pre}:{idx[j]}"'
        )
        if geo and isfinite(lat[j]) and isfinite(lon[j]):
            head += f',"lat":{float(lat[j])!r},"lon":{float(lon[j])!r}'
        yield u.encode(), (head + tail).encode(), t


def _publish(
    messages: Iterator[tuple[bytes, bytes, float]],
    total: int,
    settings: Settings,
    topic: str,
    pacer_args: tuple[float | None, float | None],
    first_ts: float,
    progress: bool,
    producer: Any,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> PublishResult:
    pacer = Pacer(pacer_args[0], pacer_args[1], first_ts, 0.0)  # validates before connecting
    owned = producer is None
    if owned:
        producer = make_producer(settings)
    failures: list[BaseException] = []
    on_error = failures.append
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="ev", desc=f"replay → {topic}", smoothing=0.1)
    t0 = pacer.start = clock()
    n = 0
    try:
        for key, value, ts in messages:
            if pacer.paced:
                wait = pacer.due(n, ts) - clock()
                if wait > 0.001:  # below a millisecond, sleeping costs more than it paces
                    sleep(wait)
            try:
                producer.send(topic, value=value, key=key).add_errback(on_error)
            except Exception as e:
                raise BrokerError(f"cannot publish to {topic!r} on {settings.bootstrap_servers}: {e}") from e
            n += 1
            if bar is not None and n % _PROGRESS_EVERY == 0:
                bar.update(_PROGRESS_EVERY)
        try:
            producer.flush()
        except Exception as e:
            raise BrokerError(f"flushing {n} events to {topic!r} failed: {e}") from e
        seconds = clock() - t0
    finally:
        if bar is not None:
            bar.update(n - bar.n)
            bar.close()
        if owned:
            with contextlib.suppress(Exception):
                producer.close(timeout=5)
    if failures:
        raise BrokerError(
            f"{len(failures)} of {n} events were not delivered to {topic!r}: {failures[0]!r}; "
            "check the broker log and that the topic exists"
        )
    return PublishResult(n, seconds)


def replay(
    events: Interactions,
    settings: Settings,
    speed: float | None = None,
    max_rate: float | None = None,
    progress: bool = True,
    start: int = 0,
    limit: int | None = None,
    *,
    rows: np.ndarray | None = None,
    topic: str | None = None,
    producer: Any = None,
    event_id_prefix: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    backfill: int | None = 0,
) -> int:
    """Publish ``events`` (time-sorted, as :func:`models.data.load_dataset` returns them) to
    ``topic`` (default ``settings.interactions_topic``) and return how many were published, all
    flushed and acknowledged (a delivery failure raises :class:`BrokerError`).

    ``rows`` selects row indices (e.g. :func:`block_rows`); ``start``/``limit`` then skip and cap
    within the selection. Event ids are ``f"{event_id_prefix or events.name}:{row}"``. ``producer``
    is an existing kafka-python producer to reuse (flushed, not closed); ``clock``/``sleep`` exist
    for tests. ``backfill`` events (:func:`backfill_rows`: the newest ``backfill`` rows before the
    replay that it leaves out; None = all of them) go first, unpaced, marked ``"backfill": true``;
    they are not counted in the returned number.
    """
    if start < 0 or (limit is not None and limit < 0):
        raise SettingsError(f"replay start and limit must be >= 0, got start={start} limit={limit}")
    sel = np.arange(len(events)) if rows is None else np.asarray(rows, dtype=np.int64)
    end = len(sel) if limit is None else min(len(sel), start + limit)
    sel = sel[start:end]
    if len(sel) == 0:
        return 0
    prefix = event_id_prefix or events.name
    first_ts = float(events.ts[sel[0]])
    past = backfill_rows(len(events), sel, backfill)
    Pacer(speed, max_rate, first_ts, 0.0)  # refuse bad pacing before the backfill goes out
    owned = producer is None and len(past) > 0
    if owned:
        producer = make_producer(settings)
    try:
        if len(past):
            _publish(_messages(events, past, prefix, backfill=True), len(past), settings,
                     topic or settings.interactions_topic, (None, None), float(events.ts[past[0]]), progress,
                     producer, clock, sleep)
        return _publish(
            _messages(events, sel, prefix), len(sel), settings, topic or settings.interactions_topic,
            (speed, max_rate), first_ts, progress, producer, clock, sleep,
        ).published
    finally:
        if owned:
            with contextlib.suppress(Exception):
                producer.close(timeout=5)


def generate_load(
    events: Interactions,
    settings: Settings,
    n: int,
    rate: float | None = None,
    *,
    topic: str | None = None,
    producer: Any = None,
    event_id_prefix: str | None = None,
    progress: bool = False,
) -> PublishResult:
    """Publish ``n`` events at a target ``rate`` (events/s; ``None`` = as fast as possible),
    cycling through ``events`` if ``n`` exceeds them, and return the achieved rate.

    Each pass over the data is shifted forward in event time by the data's span, so timestamps
    keep increasing. Event ids are ``f"{prefix}:{i}"`` for i = 0..n-1 with a fresh random prefix
    per run (unless given), so a load run never collides with a replay's ids.
    """
    if n < 0:
        raise SettingsError(f"load size must be >= 0 events, got {n}")
    if len(events) == 0 or n == 0:
        return PublishResult(0, 0.0)
    prefix = event_id_prefix or f"load-{uuid.uuid4().hex[:8]}"
    m = len(events)
    rows = np.arange(n) % m
    span = float(events.ts[-1] - events.ts[0]) + 1.0
    offsets = (np.arange(n) // m) * span
    msgs = _messages(events, rows, prefix, ids=np.arange(n), ts_offset=offsets)
    return _publish(
        msgs, n, settings, topic or settings.interactions_topic, (None, rate), float(events.ts[0]),
        progress, producer, time.monotonic, time.sleep,
    )


def run_replay(
    dataset: str,
    settings: Settings | None = None,
    speed: float | None = None,
    max_rate: float | None = None,
    from_block: str | None = None,
    start: int = 0,
    limit: int | None = None,
    progress: bool = True,
    create_topics: bool = True,
    backfill: int | None = 0,
) -> int:
    """``hailstream replay DATASET``: load a data set (name or path; ``settings.data_dir`` for the
    bundled ones), create the topics if missing, publish, print a summary; returns the number of
    events published (``backfill``: the past before them first, see :func:`replay`). Errors are :class:`~stream.errors.StreamError` /
    :class:`~models.errors.DataError` with messages for the user."""
    from models.data import load_dataset
    from stream.kafka.broker import wait_for_broker
    from stream.kafka.topics import ensure_topics

    settings = settings or Settings.from_env()
    events = load_dataset(dataset, settings.data_dir)
    rows = block_rows(events, from_block) if from_block is not None else None
    wait_for_broker(settings.bootstrap_list, timeout=10.0, client_kwargs=security_kwargs(settings))
    if create_topics:
        ensure_topics(settings)
    past = 0
    if backfill != 0:
        sel = np.arange(len(events)) if rows is None else rows
        past = len(backfill_rows(len(events), sel[start:len(sel) if limit is None else start + limit], backfill))
    t0 = time.monotonic()
    n = replay(events, settings, speed=speed, max_rate=max_rate, progress=progress, start=start, limit=limit, rows=rows,
               backfill=backfill)
    dt = time.monotonic() - t0
    rate = f"{(n + past) / dt:,.0f} events/s" if dt > 0 else "instant"
    first = f"{past:,} backfill events (history and baselines only, not scored), then " if past else ""
    print(f"published {first}{n:,} events of {events.name} to {settings.interactions_topic} in {dt:.1f} s ({rate})",
          flush=True)
    return n


def run_load(
    dataset: str,
    n: int,
    rate: float | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    create_topics: bool = True,
) -> PublishResult:
    """``hailstream load DATASET N [--rate R]``: publish ``n`` events cycled from the data set at a
    target rate and print the achieved rate (see :func:`generate_load`)."""
    from models.data import load_dataset
    from stream.kafka.broker import wait_for_broker
    from stream.kafka.topics import ensure_topics

    settings = settings or Settings.from_env()
    events = load_dataset(dataset, settings.data_dir)
    wait_for_broker(settings.bootstrap_list, timeout=10.0, client_kwargs=security_kwargs(settings))
    if create_topics:
        ensure_topics(settings)
    res = generate_load(events, settings, n, rate, progress=progress)
    target = f" (target {rate:,.0f})" if rate else ""
    print(f"published {res.published:,} events in {res.seconds:.1f} s: {res.rate:,.0f} events/s{target}", flush=True)
    return res

