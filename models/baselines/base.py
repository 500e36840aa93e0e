"""The shared state and protocol of every baseline: :class:`Baseline` (River-shaped ``learn_one`` /
``predict_one``, a full-ranking ``scores``), the incrementally sorted popularity order
:class:`RankedItems` and :func:`training_events` (a split's training events in time order)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from models.data import Interactions
from models.errors import ModelsError
from models.metrics import top_k_row
from models.splits import SequenceSplit

History = Sequence[int] | np.ndarray
B = TypeVar("B", bound="Baseline")


def training_events(split: SequenceSplit, events: Interactions) -> Iterator[tuple[int, int]]:
    """The split's training interactions as ``(user index, item index)`` in global time order.

    ``events`` must be the (time-ordered) data set the split was made from: per user, the first
    ``len(split.train[u])`` events are that user's training sequence.
    """
    user_index = {u: n for n, u in enumerate(split.user_ids)}
    items = split.vocab.lookup(events.items.tolist())
    seen = np.zeros(len(split.user_ids), dtype=np.int64)
    for uid, item in zip(events.users.tolist(), items.tolist(), strict=True):
        u = user_index.get(uid)
        if u is None:
            raise ModelsError(f"user {uid!r} is not in the split: pass the events the split was made from")
        pos = int(seen[u])
        seen[u] += 1
        train = split.train[u]
        if pos < len(train):
            if int(train[pos]) != item:
                raise ModelsError(
                    f"events disagree with the split at user {uid!r}, position {pos}: "
                    "pass the events the split was made from (time-ordered, unfiltered)"
                )
            yield u, item


class RankedItems:
    """Items ``1..n-1`` kept in the order of the full-row ranking: integer key descending, then
    item index ascending (the tie rule of :func:`models.metrics.top_k_row`).

    Keys change one item at a time (:meth:`touch` marks an item whose key changed; the next
    :meth:`top` moves each marked item to its place by binary search and one block shift), so
    the first items of the order cost O(changes), not a sort of the whole vocabulary per event.

    >>> keys = [0, 2, 0, 5, 2]
    >>> r = RankedItems()
    >>> for item in (1, 3, 4): r.touch(item)
    >>> r.top(5, keys.__getitem__, 4)
    [3, 1, 4, 2]
    >>> keys[2] = 3; r.touch(2); r.top(5, keys.__getitem__, 4)
    [3, 2, 1, 4]
    """

    def __init__(self) -> None:
        # Plain lists: bisect and list insert/delete (a memmove) beat numpy calls at this size.
        self._order: list[int] = []  # items by (key desc, index asc)
        self._neg: list[int] = []  # -key of _order[p], non-decreasing
        self._neg_of: list[int] = [0]  # item -> the -key it is filed under (row 0 unused)
        self._pending: set[int] = set()

    def grow(self, rows: int) -> None:
        """File the items ``len(known)..rows-1`` at key 0 (last); a new item with another key must
        also be :meth:`touch`-ed."""
        old = len(self._neg_of)
        if rows <= old:
            return
        self._order.extend(range(old, rows))
        self._neg.extend([0] * (rows - old))
        self._neg_of.extend([0] * (rows - old))

    def touch(self, item: int) -> None:
        """Mark ``item``'s key as changed; the order catches up lazily."""
        self._pending.add(item)

    def top(self, rows: int, key: Callable[[int], int], n: int) -> list[int]:
        """The first ``n`` of items ``1..rows-1`` ordered by ``key(item)`` (an int >= 0) descending."""
        self.grow(rows)
        if self._pending:
            if len(self._pending) > max(64, len(self._order) // 16):
                self._rebuild(np.array([key(i) for i in range(rows)], dtype=np.int64))
            else:
                for item in self._pending:
                    self._move(item, -key(item))
            self._pending.clear()
        return self._order[:n]

    def _rebuild(self, keys: np.ndarray) -> None:
        items = np.arange(1, keys.shape[0], dtype=np.int64)
        neg = -keys
        order = items[np.lexsort((items, neg[1:]))]
        self._order = order.tolist()
        self._neg = neg[order].tolist()
        self._neg_of = neg.tolist()

    def _move(self, item: int, neg: int) -> None:
        old = self._neg_of[item]
        if old == neg:
            return
        order, negs = self._order, self._neg
        # Within one key the items are in index order: two bisections find the item, two its place.
        lo = bisect.bisect_left(negs, old)
        p = bisect.bisect_left(order, item, lo, bisect.bisect_right(negs, old, lo))
        del order[p], negs[p]
        lo = bisect.bisect_left(negs, neg)
        q = bisect.bisect_left(order, item, lo, bisect.bisect_right(negs, neg, lo))
        order.insert(q, item)
        negs.insert(q, neg)
        self._neg_of[item] = neg


def _top_of(items: np.ndarray, scores: np.ndarray, k: int) -> list[int]:
    """Top ``k`` of ``items`` by score descending, then index ascending (as ``top_k_row``)."""
    if items.shape[0] > k:
        kth = np.partition(scores, items.shape[0] - k)[items.shape[0] - k]
        keep = scores >= kth
        items, scores = items[keep], scores[keep]
    return items[np.lexsort((items, -scores))[:k]].tolist()


class Baseline:
    """Shared state: all-time item counts (for tie-breaks and fallback) and each user's last item.

    Subclasses implement :meth:`_score_rows`; they may extend :meth:`_learn` and :meth:`_reset`.
    """

    name = "baseline"
    #: whether :meth:`fit` needs the global time order of events (a recent window does)
    needs_time_order = False

    def __init__(self) -> None:
        self._reset()

    # -- state -------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._counts = np.zeros(1, dtype=np.float64)  # row 0 = padding, never counted
        # user -> last item, tagged with the item's generation (see _tag): an index that was
        # forgotten and handed to another item no longer counts as anybody's last item
        self._last: dict[Hashable, int] = {}
        self._generation: dict[int, int] = {}  # item -> times forgotten (absent = 0); bounded by the rows
        self._max_count = 0.0
        self._popular = RankedItems()  # all-time order: the fill-up of every fast prediction

    @property
    def n_rows(self) -> int:
        """Rows of the score matrix: highest item index seen + 1 (at least the fitted vocab's rows)."""
        return int(self._counts.shape[0])

    def _grow(self, rows: int) -> None:
        if rows > self.n_rows:
            self._counts = np.concatenate([self._counts, np.zeros(rows - self.n_rows)])

    def _pop_frac(self) -> np.ndarray:
        """All-time popularity squeezed into [0, 1): a tie-breaker below any integer evidence."""
        return self._counts / (self._max_count + 1.0)

    # -- learning ------------------------------------------------------------------------------
    def learn_one(self, user: Hashable, item: int, lat: float | None = None, lon: float | None = None) -> None:
        """Learn one event (events must arrive in time order). ``lat``/``lon`` are used by
        :class:`NearestDistance` to place items it has no coordinates for; others ignore them."""
        item = int(item)
        if item < 1:
            raise ModelsError(f"item index must be >= 1 (0 is padding), got {item}")
        self._grow(item + 1)
        self._learn(user, item, lat, lon)
        self._counts[item] += 1.0
        self._max_count = max(self._max_count, self._counts[item])
        self._popular.touch(item)
        self._last[user] = self._tag(item)

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        """Subclass hook, called before the shared counts and the user's last item are updated."""

    def _tag(self, item: int) -> int:
        """``item`` with its current generation: one int (no tuple per user), the generation above bit 32."""
        gen = self._generation.get(item)
        return item if gen is None else item | (gen << 32)

    def _untag(self, tagged: int) -> int | None:
        """The item of a :meth:`_tag` value, or None when its index was forgotten since."""
        item = tagged & 0xFFFFFFFF
        return item if tagged >> 32 == self._generation.get(item, 0) else None

    def _previous(self, user: Hashable) -> int | None:
        """The user's last learned item, or None (no event, or its index was forgotten since)."""
        tagged = self._last.get(user)
        return None if tagged is None else self._untag(tagged)

    def forget(self, user: Hashable) -> None:
        """Drop everything kept about ``user`` (a bounded online state evicts its least recent
        users); the item statistics stay. Subclasses with per-user state extend it."""
        self._last.pop(user, None)

    def forget_item(self, item: int) -> None:
        """Drop everything kept about item index ``item``, so that the index can be handed to a
        new item (a bounded vocabulary recycles its least recently seen item's index): its counts
        go to 0 and it is nobody's last item any more. Subclasses with item state extend it."""
        item = int(item)
        if not 1 <= item < self.n_rows:
            return
        self._counts[item] = 0.0
        self._popular.touch(item)
        self._generation[item] = self._generation.get(item, 0) + 1

    def fit_events(self: B, pairs: Iterable[tuple[Hashable, int]]) -> B:
        """Learn ``(user, item)`` pairs in order, on top of the current state; returns self."""
        for user, item in pairs:
            self.learn_one(user, item)
        return self

    def fit(self: B, split: SequenceSplit, events: Interactions | None = None) -> B:
        """Start afresh and learn the split's training interactions, keyed by user index.

        Without ``events`` each user's sequence is learned in order, user after user (enough for
        everything but a recent window). With ``events`` (the data set the split came from) the
        training interactions are learned in global time order.
        """
        self._reset()
        self._grow(split.vocab.rows)
        self._on_fit(split)
        if events is not None:
            return self.fit_events(training_events(split, events))
        if self.needs_time_order:
            raise ModelsError(
                f"{self!r} depends on the global time order: call fit(split, events=<the Interactions "
                "the split was made from>)"
            )
        for u, seq in enumerate(split.train):
            for item in seq.tolist():
                self.learn_one(u, item)
        return self

    def _on_fit(self, split: SequenceSplit) -> None:
        """Subclass hook: take what else the split offers (e.g. item coordinates)."""

    # -- scoring -------------------------------------------------------------------------------
    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        """float64 [B, n_rows]; higher is better; column 0 is ignored."""
        raise NotImplementedError

    def _last_item(self, user: Hashable, history: History | None) -> int | None:
        if history is None:
            return self._previous(user)
        return int(history[-1]) if len(history) else None

    def _fit_width(self, histories: Sequence[History | None]) -> None:
        # Items the baseline never learned may still appear in a history (a growing vocabulary).
        top = max((int(np.max(h)) for h in histories if h is not None and len(h)), default=0)
        self._grow(top + 1)

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        """Scorer protocol: float64 tensor [B, n_rows] (column 0 = -inf) for the given histories.

        ``users`` only matters for keyed state; the histories carry the evidence.
        """
        self._fit_width(histories)
        rows = self._score_rows(list(np.asarray(users).tolist()), histories)
        rows[:, 0] = -np.inf
        return torch.from_numpy(rows)

    def predict_one(self, user: Hashable, history: History | None = None, k: int = 10) -> list[int]:
        """Top-``k`` item indices for ``user``, best first. ``history`` (oldest first) is the
        evidence; ``None`` means: use what :meth:`learn_one` learned about this user.

        Equal to ranking the full score row (:meth:`predict_one_full`), without building it."""
        if history is not None and len(history):
            top = int(history.max()) if isinstance(history, np.ndarray) else int(max(history))
            self._grow(top + 1)
        k = max(0, min(int(k), self.n_rows - 1))
        if k == 0:
            return []
        fast = self._predict_fast(user, history, k)
        if fast is not None:
            return fast
        row = self._score_rows([user], [history])[0]
        row[0] = -np.inf
        return top_k_row(row, k)

    def predict_one_full(self, user: Hashable, history: History | None = None, k: int = 10) -> list[int]:
        """The reference :meth:`predict_one`: rank a full score row (what the fast paths equal)."""
        self._fit_width([history])
        row = self._score_rows([user], [history])[0]
        row[0] = -np.inf
        return top_k_row(row, k)

    def _predict_fast(self, user: Hashable, history: History | None, k: int) -> list[int] | None:
        """Subclass hook: the top ``k`` (1 <= k < n_rows) without a full score row, or None."""
        return None

    def _popular_order(self, n: int) -> list[int]:
        """The first ``n`` items by all-time count (ties: lower index)."""
        counts = self._counts
        return self._popular.top(counts.shape[0], lambda i: int(counts[i]), n)

    def _evidence_then_popular(self, evidence: dict[int, int], k: int) -> list[int]:
        """Top ``k`` when the row is the popularity fractions (< 1) plus integer ``evidence`` >= 1 on a
        few items: the evidence items rank first (scored exactly as the row scores them), then the
        popular items fill up."""
        n = len(evidence)
        if n <= 64:  # the common case (a capped Markov row): plain Python beats numpy's per-call cost
            counts, scale = self._counts, self._max_count + 1.0
            # The same float64 arithmetic as the row: count / (max + 1) + evidence.
            scored = sorted((-(float(counts[i]) / scale + c), i) for i, c in evidence.items())
            ranked = [i for _, i in scored[:k]]
        else:
            items = np.fromiter(evidence.keys(), dtype=np.int64, count=n)
            scores = self._counts[items] / (self._max_count + 1.0)
            scores += np.fromiter(evidence.values(), dtype=np.float64, count=n)
            ranked = _top_of(items, scores, k)
        if n < k:
            ranked += [i for i in self._popular_order(k + n) if i not in evidence][: k - n]
        return ranked

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
