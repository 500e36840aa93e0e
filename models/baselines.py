"""Non-neural baselines that every results table carries (DESIGN §4), River-shaped.

Each baseline learns from ordered events with ``learn_one(user, item)``, or from a split with
``fit(split)``; scores every item for a batch (``scores``, a :class:`models.evaluate.Scorer`), and
gives a fast top-k for one user (``predict_one``, used per event by the stream worker). Items are
indices of the split's (growable) vocabulary; ``n_rows`` grows on demand as new items arrive.
Ranking is always full (every item gets a score): popularity breaks ties and fills in, and the
remaining ties go to the lower item index, as in :mod:`models.metrics`.

``predict_one`` never builds that full row for Popularity, Markov and UserFrequency: their rows
are "evidence on a few items, popularity below", so it ranks the evidence items and fills up from
an all-time popularity order that :class:`RankedItems` keeps sorted incrementally (one binary
search and one list shift per changed count). The answer equals ranking the full row
(:meth:`Baseline.predict_one_full`, tested on real events); NearestDistance still ranks a row.

- :class:`Popularity` — global counts, or counts over the most recent ``window`` events.
- :class:`Markov` — first-order item -> next-item transition counts of the same user.
- :class:`UserFrequency` — the user's own most frequent items, then most recent, then popular.
- :class:`NearestDistance` — POIs nearest (haversine) to the last check-in (POI data only).

>>> m = Markov()
>>> for user, item in [("u", 1), ("u", 2), ("v", 1), ("v", 2), ("v", 3), ("u", 1)]:
...     m.learn_one(user, item)
>>> m.predict_one("u", [3, 1], k=3)   # after 1: 2 (twice); then popularity: 1 (3x) before 3 (1x)
[2, 1, 3]
>>> UserFrequency().fit_events([("u", 3), ("v", 2), ("v", 2)]).predict_one("x", [1, 3, 1, 4], k=4)
[1, 4, 3, 2]
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from models.data import Interactions
from models.errors import ModelsError
from models.metrics import top_k_row
from models.splits import SequenceSplit

EARTH_RADIUS_KM = 6371.0088

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
        self._last: dict[Hashable, int] = {}
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
        self._last[user] = item

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        """Subclass hook, called before the shared counts and the user's last item are updated."""

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
            return self._last.get(user)
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
            self._grow(int(max(history)) + 1)
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
        items = np.fromiter(evidence.keys(), dtype=np.int64, count=n)
        scores = self._counts[items] / (self._max_count + 1.0)
        scores += np.fromiter(evidence.values(), dtype=np.float64, count=n)
        ranked = _top_of(items, scores, k)
        if n < k:
            ranked += [i for i in self._popular_order(k + n) if i not in evidence][: k - n]
        return ranked

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Popularity(Baseline):
    """Most popular items: all-time counts, or counts over the last ``window`` events (ties: all-time
    counts, then index).

    >>> p = Popularity(window=2).fit_events([("u", 1), ("u", 1), ("v", 2), ("v", 3)])
    >>> p.predict_one("anyone", k=3)
    [2, 3, 1]
    """

    name = "popularity"

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ModelsError(f"window must be a positive number of events or None, got {window}")
        self.window = window
        self.needs_time_order = window is not None
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._recent: deque[int] = deque()
        self._window_counts = np.zeros(1, dtype=np.float64)
        self._window_rank = RankedItems()  # by (window count, all-time count): see _window_keys

    def _grow(self, rows: int) -> None:
        if rows > self.n_rows:
            self._window_counts = np.concatenate([self._window_counts, np.zeros(rows - self.n_rows)])
        super()._grow(rows)

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        if self.window is None:
            return
        if len(self._recent) == self.window:
            gone = self._recent.popleft()
            self._window_counts[gone] -= 1.0
            self._window_rank.touch(gone)
        self._recent.append(item)
        self._window_counts[item] += 1.0
        self._window_rank.touch(item)

    def _window_key(self, item: int) -> int:
        # The row is window count + all-time count / (max + 1): lexicographic in (window count,
        # all-time count) as long as counts stay below 2**26, so one integer key orders it.
        return (int(self._window_counts[item]) << 32) + int(self._counts[item])

    def _predict_fast(self, user: Hashable, history: History | None, k: int) -> list[int] | None:
        if self.window is None:
            return self._popular_order(k)
        return self._window_rank.top(self.n_rows, self._window_key, k)

    def _row(self) -> np.ndarray:
        if self.window is None:
            return self._counts.copy()
        return self._window_counts + self._pop_frac()

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        return np.tile(self._row(), (len(users), 1))

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        # One row shared by every user: a broadcast view instead of B copies.
        self._fit_width(histories)
        row = self._row()
        row[0] = -np.inf
        return torch.from_numpy(row).unsqueeze(0).expand(len(users), -1)

    def __repr__(self) -> str:
        return f"Popularity(window={self.window})"


class Markov(Baseline):
    """First-order transitions: after item a, the items that followed a (same user) most often;
    popularity ranks the rest (and everything, for a last item never seen before)."""

    name = "markov"

    def _reset(self) -> None:
        super()._reset()
        self._trans: dict[int, dict[int, int]] = {}

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        prev = self._last.get(user)
        if prev is not None:
            nxt = self._trans.setdefault(prev, {})
            nxt[item] = nxt.get(item, 0) + 1

    def _predict_fast(self, user: Hashable, history: History | None, k: int) -> list[int] | None:
        last = self._last_item(user, history)
        nxt = self._trans.get(last) if last is not None else None
        if not nxt:
            return self._popular_order(k)
        return self._evidence_then_popular(nxt, k)

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        rows = np.tile(self._pop_frac(), (len(users), 1))
        for r, (user, hist) in enumerate(zip(users, histories, strict=True)):
            last = self._last_item(user, hist)
            nxt = self._trans.get(last) if last is not None else None
            if nxt:
                idx = np.fromiter(nxt.keys(), dtype=np.int64, count=len(nxt))
                rows[r, idx] += np.fromiter(nxt.values(), dtype=np.float64, count=len(nxt))
        return rows


class UserFrequency(Baseline):
    """The user's own items, most frequent first; ties by most recent, and every other item after
    them by popularity. With a history the history is the evidence; without, what
    :meth:`learn_one` saw of the user (unbounded, unlike a truncated sequence)."""

    name = "user-frequency"

    def _reset(self) -> None:
        super()._reset()
        self._step = 0
        self._user_items: dict[Hashable, dict[int, list[int]]] = {}  # item -> [count, last step]

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        self._step += 1
        stats = self._user_items.setdefault(user, {}).setdefault(item, [0, 0])
        stats[0] += 1
        stats[1] = self._step

    def _evidence(self, user: Hashable, hist: History | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, counts, last seen) of the user's own items."""
        if hist is None:
            own = self._user_items.get(user, {})
            items = np.fromiter(own.keys(), dtype=np.int64, count=len(own))
            stats = np.array(list(own.values()), dtype=np.int64).reshape(-1, 2)
            return items, stats[:, 0], stats[:, 1]
        h = np.asarray(hist, dtype=np.int64)
        h = h[h > 0]
        items, counts = np.unique(h, return_counts=True)
        # First index in the reversed history = last position in the history.
        last = len(h) - 1 - np.unique(h[::-1], return_index=True)[1]
        return items, counts, last

    def _predict_fast(self, user: Hashable, history: History | None, k: int) -> list[int] | None:
        # The user's items score m+1..2, above every popularity fraction: they come first, in
        # (count desc, last seen desc) order, and popular items fill the rest.
        if history is None:
            own = self._user_items.get(user, {})
            stats = {i: (c, seen) for i, (c, seen) in own.items()}
        else:
            stats = {}
            for pos, i in enumerate(np.asarray(history, dtype=np.int64).tolist()):
                if i > 0:
                    stats[i] = (stats[i][0] + 1 if i in stats else 1, pos)
        ranked = sorted(stats, key=lambda i: (-stats[i][0], -stats[i][1]))
        if len(ranked) >= k:
            return ranked[:k]
        fill = [i for i in self._popular_order(k + len(ranked)) if i not in stats]
        return ranked + fill[: k - len(ranked)]

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        rows = np.tile(self._pop_frac(), (len(users), 1))
        for r, (user, hist) in enumerate(zip(users, histories, strict=True)):
            items, counts, last = self._evidence(user, hist)
            if items.size:
                order = np.lexsort((-last, -counts))  # most frequent, then most recent
                # Scores m+1 .. 2 above the popularity fractions (< 1): the user's items come first.
                rows[r, items[order]] = np.arange(items.size + 1, 1, -1, dtype=np.float64)
        return rows


def haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) from one point to many (degrees); NaN where coordinates are NaN.

    >>> round(float(haversine_km(40.7128, -74.0060, np.array([40.7306]), np.array([-73.9352]))[0]), 2)
    6.29
    """
    p1, l1 = np.radians(lat), np.radians(lon)
    p2, l2 = np.radians(lats), np.radians(lons)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


class NearestDistance(Baseline):
    """POIs nearest to the user's last check-in (haversine; the POI itself first). Equal distances
    go to the more popular POI; POIs without coordinates come last, by popularity. With no last
    check-in (or one without coordinates) it falls back to popularity.

    ``item_coords`` is ``[rows, 2]`` (lat, lon in degrees, NaN = unknown), e.g.
    ``split.item_coords``; items learned later get coordinates from ``learn_one(..., lat, lon)``.
    """

    name = "nearest-distance"

    def __init__(self, item_coords: np.ndarray | None) -> None:
        if item_coords is None:
            raise ModelsError("NearestDistance needs item coordinates (POI data with lat/lon); this data set has none")
        coords = np.asarray(item_coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ModelsError(f"item_coords must be [rows, 2] (lat, lon), got shape {coords.shape}")
        self._initial_coords = coords.copy()
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._coords = self._initial_coords.copy()
        super()._grow(self._coords.shape[0])

    def _grow(self, rows: int) -> None:
        if rows > self._coords.shape[0]:
            self._coords = np.concatenate([self._coords, np.full((rows - self._coords.shape[0], 2), np.nan)])
        super()._grow(rows)

    def _on_fit(self, split: SequenceSplit) -> None:
        if split.item_coords is not None:
            theirs = np.asarray(split.item_coords, dtype=np.float64)
            self._grow(theirs.shape[0])
            known = ~np.isnan(theirs[:, 0])
            mine = self._coords[: theirs.shape[0]]
            fill = known & np.isnan(mine[:, 0])
            mine[fill] = theirs[fill]

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        if lat is not None and lon is not None and np.isnan(self._coords[item, 0]):
            self._coords[item] = (lat, lon)

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        n = self.n_rows
        pop = self._pop_frac()
        rows = np.tile(pop, (len(users), 1))
        for r, (user, hist) in enumerate(zip(users, histories, strict=True)):
            last = self._last_item(user, hist)
            if last is None or np.isnan(self._coords[last, 0]):
                continue
            dist = haversine_km(self._coords[last, 0], self._coords[last, 1], self._coords[:, 0], self._coords[:, 1])
            dist = np.where(np.isnan(dist), np.inf, dist)
            # Rank by (distance, -popularity, index) and turn the rank into a score, so that the
            # evaluator's index tie-break never has to decide between equidistant POIs.
            order = np.lexsort((np.arange(n), -pop, dist))
            rows[r, order] = np.arange(n, 0, -1, dtype=np.float64)
        return rows

    def __repr__(self) -> str:
        return f"NearestDistance({int((~np.isnan(self._coords[:, 0])).sum())} located items)"


def default_baselines(split: SequenceSplit, popularity_window: int | None = None) -> dict[str, Baseline]:
    """The baselines of DESIGN §4 for this split (unfitted), by display name; NearestDistance only
    when the split has item coordinates, a windowed popularity only when ``popularity_window``."""
    out: dict[str, Baseline] = {"popularity": Popularity()}
    if popularity_window is not None:
        out[f"popularity@{popularity_window}"] = Popularity(window=popularity_window)
    out["markov"] = Markov()
    out["user-frequency"] = UserFrequency()
    if split.item_coords is not None:
        out["nearest-distance"] = NearestDistance(split.item_coords)
    return out
