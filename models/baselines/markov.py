"""First-order item -> next-item transitions (Markov chain)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from models.baselines.base import Baseline, History


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
