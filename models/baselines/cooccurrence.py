"""Item neighbours: what appeared near the user's latest items in anyone's sequence.

A Markov chain counts only ``a → b`` one step apart and reads the row of the latest item. On
sparse purchase data that throws signal away: Amazon Beauty's timestamps are days, so the order of
same-day purchases is arbitrary (44% of consecutive pairs tie), and the item two steps back still
says much about the next one. This counter keeps, for each item, weighted counts of the items
``d`` steps after it (``lags[d - 1]``) and, at ``backward`` times that weight, before it; a
prediction adds the rows of the user's last ``len(recent)`` items, weighted by ``recent``
(latest first); popularity breaks ties (2 was bought twice). ``CoOccurrence(lags=(1,),
backward=0, recent=(1,))`` ranks as :class:`Markov`.
On Beauty the defaults reach test NDCG@10 0.0428 against Markov's 0.0303, and 0.0434 with the
settings chosen on validation by bench/cooccurrence_grid.py (bench/RESULTS.md). The model's neighbour output
(:mod:`models.transitions`) reads the same kind of table.

>>> c = CoOccurrence(lags=(1.0, 0.5), backward=0.5, recent=(1.0, 0.5))
>>> for user, item in [("u", 1), ("u", 2), ("u", 3), ("v", 4), ("v", 2)]:
...     c.learn_one(user, item)
>>> c.neighbours(2)   # 1 before it (reversed: half), 3 after it, 4 before it (half)
{1: 0.5, 3: 1.0, 4: 0.5}
>>> c.predict_one("x", [4, 2], k=4)   # 3: 1; then 1, 4 (row of 2) and 2 (row of 4, half): 0.5 each
[3, 2, 1, 4]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from models.baselines.base import Baseline, History, _top_of
from models.errors import ModelsError

#: the popularity tie-break, scaled below the smallest weight a neighbour can add
_TIE = 1e-6
#: the default settings (also the model's neighbour output, :data:`models.transitions.NEIGHBOURS`):
#: the best Beauty validation NDCG@10 of a first, coarse grid; bench/cooccurrence_grid.py varies them
LAGS, BACKWARD, RECENT = (1.0, 0.5), 0.5, (1.0, 0.6, 0.2)


class CoOccurrence(Baseline):
    """Weighted item-neighbour counts; see the module docstring. Rows are unbounded."""

    name = "co-occurrence"

    def __init__(self, lags: Sequence[float] = LAGS, backward: float = BACKWARD, recent: Sequence[float] = RECENT) -> None:
        self.lags, self.backward, self.recent = tuple(map(float, lags)), float(backward), tuple(map(float, recent))
        if not self.lags or not self.recent or min(*self.lags, *self.recent, self.backward) < 0:
            raise ModelsError(f"lags and recent must be non-empty and every weight >= 0: {self!r}")
        self._depth = max(len(self.lags), len(self.recent))
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._rows: dict[int, dict[int, float]] = {}
        self._seen_in: dict[int, set[int]] = {}  # item -> rows that hold it (for forget_item)
        self._tail: dict[Hashable, list[int]] = {}  # user -> last items, oldest first, generation-tagged

    def neighbours(self, item: int) -> dict[int, float]:
        """A copy of ``item``'s neighbour weights (for inspection)."""
        return dict(self._rows.get(int(item), {}))

    def _add(self, a: int, b: int, w: float) -> None:
        if w:
            row = self._rows.setdefault(a, {})
            row[b] = row.get(b, 0.0) + w
            self._seen_in.setdefault(b, set()).add(a)

    def _live(self, tagged: list[int]) -> list[int]:
        return [item for item in map(self._untag, tagged) if item is not None]

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        tail = self._tail.setdefault(user, [])
        before = self._live(tail)
        for d, v in enumerate(self.lags, 1):
            if len(before) >= d:
                self._add(before[-d], item, v)
                self._add(item, before[-d], v * self.backward)
        tail.append(self._tag(item))
        del tail[: -self._depth]

    def forget(self, user: Hashable) -> None:
        super().forget(user)
        self._tail.pop(user, None)

    def forget_item(self, item: int) -> None:
        item = int(item)
        for other in self._rows.pop(item, {}):
            holders = self._seen_in.get(other)
            if holders is not None:
                holders.discard(item)
        for holder in self._seen_in.pop(item, ()):
            row = self._rows.get(holder)
            if row is not None:
                row.pop(item, None)
        super().forget_item(item)

    def _latest(self, user: Hashable, history: History | None) -> list[int]:
        """The user's last ``len(recent)`` items, latest first."""
        items = self._live(self._tail.get(user, [])) if history is None else [int(i) for i in history]
        return items[::-1][: len(self.recent)]

    def _evidence(self, user: Hashable, history: History | None) -> dict[int, float]:
        out: dict[int, float] = {}
        for w, item in zip(self.recent, self._latest(user, history), strict=False):
            if not w:
                continue
            for other, v in self._rows.get(item, {}).items():
                out[other] = out.get(other, 0.0) + w * v
        return out

    def _predict_fast(self, user: Hashable, history: History | None, k: int) -> list[int] | None:
        evidence = self._evidence(user, history)
        items = np.fromiter(evidence.keys(), dtype=np.int64, count=len(evidence))
        scores = np.fromiter(evidence.values(), dtype=np.float64, count=len(evidence))
        ranked = _top_of(items, scores + _TIE * self._pop_frac()[items], k) if len(items) else []
        if len(ranked) < k:
            ranked += [i for i in self._popular_order(k + len(ranked)) if i not in evidence][: k - len(ranked)]
        return ranked

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        rows = np.tile(_TIE * self._pop_frac(), (len(users), 1))
        for r, (user, hist) in enumerate(zip(users, histories, strict=True)):
            evidence = self._evidence(user, hist)
            if evidence:
                rows[r, np.fromiter(evidence.keys(), dtype=np.int64)] += np.fromiter(evidence.values(), dtype=np.float64)
        return rows

    def __repr__(self) -> str:
        return f"CoOccurrence(lags={self.lags}, backward={self.backward}, recent={self.recent})"
