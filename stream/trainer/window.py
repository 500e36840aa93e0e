"""The trainer's memory of the stream: a recent window of events, per-user context, and a reservoir.

- **Window**: the last ``size`` events (and, with ``span``, none older than ``span`` seconds of
  event time before the newest). Fine-tunes train on it; its newest events *by event time* are the
  held-out slice the validation gate replays (:meth:`TrainingWindow.holdout`). Newest by time,
  not by arrival: a trainer reading several partitions gets them interleaved in whatever order
  the fetches return, and the gate's slice must not depend on that (ties keep arrival order).
- **Context**: for each user, the last ``max_len`` items that already left the window, so a
  user's window events are learned with the history that led to them (on sparse streams most
  users have one or two events in any window). At most ``max_users`` users are remembered; the
  least recently active one is forgotten first, so memory is bounded on an endless stream.
- **Reservoir**: a uniform sample (Algorithm R, seeded) of ``reservoir`` training rows
  (context + item) taken from events as they leave the window: rehearsal of older behaviour
  against forgetting.

Items are kept as external ids: the vocabulary can change (grow, recycle rows) between fine-tunes,
so ids are mapped to indices only when a fine-tune takes its data.

>>> w = TrainingWindow(size=3, max_len=2, reservoir=10)
>>> for user, item in [("u", "a"), ("u", "b"), ("v", "x"), ("u", "c"), ("v", "y")]:
...     w.add(user, item)
>>> len(w), w.sequences()                   # "a" and "b" left the window: u's context
(3, [['x', 'y'], ['a', 'b', 'c']])
>>> w.holdout(2)                            # newest two events, with the history before each
[(['a', 'b'], 'c'), (['x'], 'y')]
>>> w.sequences(exclude_newest=2)           # what a fine-tune holding out 2 events trains on
[['x']]
>>> w.reservoir_rows()                      # "b" left with context ["a"]
[['a', 'b']]
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass

from stream.errors import StreamError


@dataclass(frozen=True)
class _Event:
    user: str
    item: str
    ts: float


class TrainingWindow:
    """See the module docstring. ``seed`` drives the reservoir sampling."""

    def __init__(
        self,
        size: int = 20000,
        span: float | None = None,
        max_len: int = 50,
        reservoir: int = 0,
        max_users: int = 100_000,
        seed: int = 0,
    ) -> None:
        if size < 1 or max_len < 1 or reservoir < 0 or max_users < 1:
            raise StreamError(
                f"window size, max_len and max_users must be >= 1 and reservoir >= 0; got size={size}, "
                f"max_len={max_len}, reservoir={reservoir}, max_users={max_users}"
            )
        if span is not None and not span > 0:
            raise StreamError(f"window span must be > 0 seconds (or None), not {span!r}")
        self.size = int(size)
        self.span = span
        self.max_len = int(max_len)
        self.reservoir_size = int(reservoir)
        self.max_users = int(max_users)
        self._rng = random.Random(seed)
        self._events: deque[_Event] = deque()
        self._context: OrderedDict[str, deque[str]] = OrderedDict()
        self._reservoir: list[tuple[str, ...]] = []
        self._left = 0  # events that left the window (reservoir offers)
        self._added = 0

    def __len__(self) -> int:
        return len(self._events)

    @property
    def added(self) -> int:
        """Events added since creation."""
        return self._added

    @property
    def users(self) -> int:
        """Users whose context is remembered."""
        return len(self._context)

    @property
    def newest_ts(self) -> float | None:
        return self._events[-1].ts if self._events else None

    def add(self, user: str, item: str, ts: float = 0.0) -> None:
        """Append one event (in stream order); evicts what falls out of the window."""
        self._events.append(_Event(user, item, float(ts)))
        self._added += 1
        ctx = self._context.get(user)
        if ctx is None:
            self._context[user] = deque(maxlen=self.max_len)
            while len(self._context) > self.max_users:
                self._context.popitem(last=False)
        else:
            self._context.move_to_end(user)
        while len(self._events) > self.size:
            self._evict()
        if self.span is not None:
            horizon = float(ts) - self.span
            while len(self._events) > 1 and self._events[0].ts < horizon:
                self._evict()

    def _evict(self) -> None:
        ev = self._events.popleft()
        ctx = self._context.get(ev.user)
        if ctx is None:  # the user was forgotten (max_users): nothing to keep
            return
        if ctx and self.reservoir_size:
            self._offer((*ctx, ev.item))
        ctx.append(ev.item)

    def _offer(self, row: tuple[str, ...]) -> None:
        self._left += 1
        if len(self._reservoir) < self.reservoir_size:
            self._reservoir.append(row)
        else:
            j = self._rng.randrange(self._left)
            if j < self.reservoir_size:
                self._reservoir[j] = row

    def _walk(self) -> tuple[list[_Event], dict[str, list[str]]]:
        # The events in order, and each user's context as it was before the window's first event.
        return list(self._events), {u: list(c) for u, c in self._context.items()}

    @staticmethod
    def _newest(events: list[_Event], n: int) -> set[int]:
        # Positions of the n newest events by (event time, arrival): the held-out slice.
        if n <= 0:
            return set()
        order = sorted(range(len(events)), key=lambda i: (events[i].ts, i))
        return set(order[max(0, len(events) - n):])

    def sequences(self, exclude_newest: int = 0) -> list[list[str]]:
        """Per user with window events (ordered by first appearance): context + window items,
        without the newest ``exclude_newest`` events of the window by event time (the held-out
        slice)."""
        events, ctx = self._walk()
        held = self._newest(events, exclude_newest)
        keep = [ev for pos, ev in enumerate(events) if pos not in held]
        seqs: dict[str, list[str]] = {}
        for ev in keep:
            seq = seqs.get(ev.user)
            if seq is None:
                seq = seqs[ev.user] = list(ctx.get(ev.user, ()))
            seq.append(ev.item)
        return list(seqs.values())

    def holdout(self, n: int) -> list[tuple[list[str], str]]:
        """The newest ``n`` events by event time as (history before it, its item), in stream
        order: the history is the user's context and earlier window events (held-out ones
        included, test-then-learn), cut to ``max_len``."""
        events, ctx = self._walk()
        held = self._newest(events, n)
        hist: dict[str, list[str]] = {}
        out: list[tuple[list[str], str]] = []
        for pos, ev in enumerate(events):
            h = hist.get(ev.user)
            if h is None:
                h = hist[ev.user] = list(ctx.get(ev.user, ()))
            if pos in held:
                out.append((h[-self.max_len :], ev.item))
            h.append(ev.item)
            if len(h) > 2 * self.max_len:
                del h[: len(h) - self.max_len]
        return out

    def reservoir_rows(self) -> list[list[str]]:
        """The reservoir's rows (older context + item), each at most ``max_len + 1`` items."""
        return [list(r) for r in self._reservoir]

    def __repr__(self) -> str:
        return (f"TrainingWindow({len(self)}/{self.size} events, {self.users} users, "
                f"reservoir {len(self._reservoir)}/{self.reservoir_size})")
