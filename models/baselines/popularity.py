"""Global popularity, all-time or over a recent window of events."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from models.baselines.base import Baseline, History, RankedItems
from models.errors import ModelsError


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

    def forget_item(self, item: int) -> None:
        item = int(item)
        if 1 <= item < self.n_rows and self._window_counts[item]:
            # Only when the vocabulary is smaller than the window (a bounded vocabulary evicts its
            # least recently seen item, in the window only if every item is): O(window), rare.
            self._recent = deque(i for i in self._recent if i != item)
            self._window_counts[item] = 0.0
            self._window_rank.touch(item)
        super().forget_item(item)

    def _window_key(self, item: int) -> int:
        # The row is window count + all-time count / (max + 1): lexicographic in (window count,
        # all-time count) as long as counts stay below 2**26, so one integer key orders it.
        return (int(self._window_counts[item]) << 32) + int(self._counts[item])

    def _predict_fast(self, user: Hashable, history: History | None, k: int) -> list[int] | None:
        if self.window is None:
            return self._popular_order(k)
        return self._window_rank.top(self.n_rows, self._window_key, k)

    def score_of(self, item: int) -> float:
        """``item``'s entry of the score row (what :meth:`scores` gives it), without the row."""
        item = int(item)
        count = float(self._counts[item]) if 0 < item < self.n_rows else 0.0
        if self.window is None:
            return count
        # float() on the whole: a numpy scalar in the sum would make it numpy.float64, which strict
        # JSON encoders (orjson, Faust's when installed) refuse.
        return float(self._window_counts[item] + count / (float(self._max_count) + 1.0))

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
