"""First-order item -> next-item transitions (Markov chain), with a bounded table."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from models.baselines.base import Baseline, History
from models.errors import ModelsError


class Markov(Baseline):
    """First-order transitions: after item a, the items that followed a (same user) most often;
    popularity ranks the rest (and everything, for a last item never seen before).

    ``max_next`` (None = unbounded) caps the successors kept per item: a new successor of a full
    row evicts the least frequent one (ties: the one counted least recently), so the table holds
    at most ``rows x max_next`` counts and a prediction ranks at most ``max_next`` evidence items.
    Until a row reaches the cap nothing changes. The eviction scans the one full row: O(max_next),
    only when a full row gets a new successor.

    >>> m = Markov(max_next=2)
    >>> for user, item in [("u", 1), ("u", 2), ("u", 1), ("u", 2), ("v", 1), ("v", 3), ("w", 1), ("w", 4)]:
    ...     m.learn_one(user, item)
    >>> m.successors(1)          # 2 (twice) stays; 3 (once, older) gave way to 4
    {2: 2, 4: 1}
    >>> m.forget_item(2)         # its index may now go to another item
    >>> m.successors(1), m.predict_one("u", None, k=2)   # u's last item (2) is forgotten: popularity
    ({4: 1}, [1, 3])
    """

    name = "markov"

    def __init__(self, max_next: int | None = None) -> None:
        if max_next is not None and max_next < 1:
            raise ModelsError(f"max_next must be >= 1 successors per item (or None for unbounded), not {max_next}")
        self.max_next = max_next
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        # item -> {successor: count}, least recently counted successor first (for the eviction)
        self._trans: dict[int, dict[int, int]] = {}
        # successor -> items whose row holds it: forget_item removes it from those rows only
        self._preds: dict[int, set[int]] = {}

    def successors(self, item: int) -> dict[int, int]:
        """A copy of ``item``'s successor counts (for inspection)."""
        return dict(self._trans.get(int(item), {}))

    @property
    def n_transitions(self) -> int:
        """Transition counts held (at most rows x ``max_next``)."""
        return sum(len(nxt) for nxt in self._trans.values())

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        prev = self._previous(user)
        if prev is None:
            return
        nxt = self._trans.get(prev)
        if nxt is None:
            nxt = self._trans[prev] = {}
        count = nxt.pop(item, 0)
        if not count:
            if self.max_next is not None and len(nxt) >= self.max_next:
                gone = min(nxt, key=nxt.__getitem__)  # the first of the least frequent = least recent
                del nxt[gone]
                self._unlink(gone, prev)
            self._preds.setdefault(item, set()).add(prev)
        nxt[item] = count + 1  # re-inserted: the row stays in order of the last count

    def _unlink(self, successor: int, item: int) -> None:
        preds = self._preds.get(successor)
        if preds is not None:
            preds.discard(item)
            if not preds:
                del self._preds[successor]

    def forget_item(self, item: int) -> None:
        item = int(item)
        for succ in self._trans.pop(item, {}):
            self._unlink(succ, item)
        for prev in self._preds.pop(item, ()):
            row = self._trans.get(prev)
            if row is not None:
                row.pop(item, None)
                if not row:
                    del self._trans[prev]
        super().forget_item(item)

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

    def __repr__(self) -> str:
        return f"Markov(max_next={self.max_next})"
