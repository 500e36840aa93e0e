"""The recency-decayed visit counter (DESIGN §4): each past visit of the user weighs
``0.5 ** (age / half_life)``, age counted in the user's own visits (the latest = 0).

Large half-lives tend to :class:`~models.baselines.UserFrequency`, a half-life near 0 to "the last
item first". Items the user never visited come after the user's items, by popularity.
:func:`choose_half_life` picks the half-life on the validation split.

>>> d = DecayedFrequency(half_life=1.0).fit_events([("u", 1), ("u", 2), ("u", 1), ("u", 3), ("v", 4)])
>>> d.predict_one("u", k=4)        # 3: 1;  1: 0.5 + 0.125;  2: 0.25;  then popularity: 4
[3, 1, 2, 4]
>>> DecayedFrequency(half_life=100.0).predict_one("x", [1, 2, 1, 3], k=2)  # ~ frequency
[1, 3]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from models.baselines.base import Baseline, History
from models.errors import ModelsError
from models.splits import SequenceSplit


class DecayedFrequency(Baseline):
    """See the module docstring. With a history the history is the evidence; without, every
    visit :meth:`learn_one` saw of the user."""

    name = "decayed-frequency"

    def __init__(self, half_life: float = 25.0) -> None:
        if not half_life > 0:
            raise ModelsError(f"half_life must be > 0 visits, not {half_life}")
        self.half_life = float(half_life)
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._visits: dict[Hashable, list[int]] = {}

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        self._visits.setdefault(user, []).append(item)

    def forget(self, user: Hashable) -> None:
        super().forget(user)
        self._visits.pop(user, None)

    def forget_item(self, item: int) -> None:
        # Visits are plain lists: O(every user's visits). The stream worker does not run this
        # baseline; offline tables never forget items.
        item = int(item)
        for user, visits in self._visits.items():
            if item in visits:
                self._visits[user] = [i for i in visits if i != item]
        super().forget_item(item)

    def weights(self, history: History) -> tuple[np.ndarray, np.ndarray]:
        """``(items, decayed counts)`` of one history (oldest first)."""
        h = np.asarray(history, dtype=np.int64)
        h = h[h > 0]
        if h.size == 0:
            return h, np.zeros(0)
        w = 0.5 ** (np.arange(h.size - 1, -1, -1, dtype=np.float64) / self.half_life)
        items, inv = np.unique(h, return_inverse=True)
        return items, np.bincount(inv, weights=w, minlength=items.size)

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        rows = np.tile(self._pop_frac(), (len(users), 1))
        for r, (user, hist) in enumerate(zip(users, histories, strict=True)):
            items, w = self.weights(self._visits.get(user, []) if hist is None else hist)
            if items.size:
                # Above every popularity fraction (< 1); the fraction breaks exact ties.
                rows[r, items] += 1.0 + w
        return rows

    def __repr__(self) -> str:
        return f"DecayedFrequency(half_life={self.half_life:g})"


def choose_half_life(
    split: SequenceSplit, half_lives: Sequence[float] = (1, 2, 5, 10, 25, 50, 100, 200), metric: str = "ndcg@10"
) -> tuple[float, dict[float, float]]:
    """The half-life with the best validation ``metric`` (ties: the shorter one) and every
    candidate's validation score. The test split is never looked at."""
    from models.evaluate import evaluate

    scores = {}
    for h in half_lives:
        scores[float(h)] = float(evaluate(DecayedFrequency(h).fit(split), split, "valid", ks=(10,))[metric])
    best = max(scores, key=lambda h: (scores[h], -h))
    return best, scores
