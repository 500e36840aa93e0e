"""The user's own most frequent items."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from models.baselines.base import Baseline, History
from models.errors import ModelsError


class UserFrequency(Baseline):
    """The user's own items, most frequent first; ties by most recent, and every other item after
    them by popularity. With a history the history is the evidence; without, what
    :meth:`learn_one` saw of the user (unbounded, unlike a truncated sequence).

    ``count_users=False`` keeps no per-user counts (only the popularity that fills the list):
    for a caller that always passes the history, as the stream worker does with the sequence
    its table holds, they would be memory that nothing reads.

    >>> uf = UserFrequency(count_users=False).fit_events([("u", 3), ("u", 3), ("v", 2)])
    >>> uf.predict_one("u", [2, 1, 2], k=3)    # the history's items, then popularity
    [2, 1, 3]
    >>> uf.predict_one("u", None, k=3)
    Traceback (most recent call last):
    ...
    models.errors.ModelsError: this UserFrequency keeps no per-user counts (count_users=False): pass the history
    """

    name = "user-frequency"

    def __init__(self, count_users: bool = True) -> None:
        self.count_users = count_users
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._step = 0
        self._user_items: dict[Hashable, dict[int, list[int]]] = {}  # item -> [count, last step]
        # item -> the step it was forgotten at: a user's entry counted before it is another item's
        # (checked lazily; finding every user holding the index would cost a scan of all users)
        self._forgotten_at: dict[int, int] = {}

    def forget(self, user: Hashable) -> None:
        super().forget(user)
        self._user_items.pop(user, None)

    def forget_item(self, item: int) -> None:
        super().forget_item(item)
        if self.count_users:
            self._forgotten_at[int(item)] = self._step

    def _stale(self, item: int, last_step: int) -> bool:
        return last_step <= self._forgotten_at.get(item, -1)

    def _own(self, user: Hashable) -> dict[int, list[int]]:
        if not self.count_users:
            raise ModelsError("this UserFrequency keeps no per-user counts (count_users=False): pass the history")
        own = self._user_items.get(user, {})
        if self._forgotten_at:
            own = {i: st for i, st in own.items() if not self._stale(i, st[1])}
        return own

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        if not self.count_users:
            return
        self._step += 1
        stats = self._user_items.setdefault(user, {}).setdefault(item, [0, 0])
        if self._forgotten_at and self._stale(item, stats[1]):
            stats[0] = 0
        stats[0] += 1
        stats[1] = self._step

    def _evidence(self, user: Hashable, hist: History | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items, counts, last seen) of the user's own items."""
        if hist is None:
            own = self._own(user)
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
            own = self._own(user)
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
