"""Prequential (test-then-learn) accuracy of one scorer on a stream (DESIGN §4).

Before an event updates anything, it is scored against the top-k list that was published after the
same user's previous event. An event whose user has no earlier prediction is *cold*: counted
separately, never as a miss. One :class:`Prequential` per scorer (the live model and each baseline),
so their numbers are comparable event by event.

>>> p = Prequential(k=3, window=2)
>>> p.update(None, "a") is None                     # first event of a user: cold
True
>>> p.update(["a", "b", "c"], "b")                  # hit at rank 2
(1.0, 0.6309297535714575, 0.5)
>>> p.update(["x"], "b")                            # miss
(0.0, 0.0, 0.0)
>>> s = p.summary()
>>> s["n"], s["cold"], s["hr@3"], s["mrr@3"], s["window_n"]
(2, 1, 0.5, 0.25, 2)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from models.metrics import topk_metrics
from stream.errors import StreamError

EventScore = tuple[float, float, float]
"""(hit, ndcg, reciprocal rank) of one event, each in [0, 1]."""


def score_event(predicted: Sequence[str], actual: str, k: int) -> EventScore:
    """Hit, NDCG and reciprocal rank of ``actual`` within the first ``k`` of ``predicted``: the
    offline definitions (:func:`models.metrics.topk_metrics`) applied to one published list.

    >>> score_event(["a", "b"], "a", 10)
    (1.0, 1.0, 1.0)
    >>> score_event(["a", "b"], "b", 1)
    (0.0, 0.0, 0.0)
    """
    return topk_metrics(predicted[:k], actual)


class Prequential:
    """Running HR@k / NDCG@k / MRR@k over the whole stream and over the last ``window`` scored events.

    River-shaped: :meth:`update` per event, :meth:`summary` (or the properties) to read. Cold events
    (``predicted is None``) are counted in :attr:`cold` and excluded from every rate.
    """

    def __init__(self, k: int = 10, window: int = 1000) -> None:
        if k < 1:
            raise StreamError(f"prequential k must be >= 1, not {k}; use the published top-k (settings.top_k)")
        if window < 1:
            raise StreamError(f"prequential window must be >= 1 event, not {window}")
        self.k = k
        self.window = window
        self._n = 0
        self._cold = 0
        self._sums = [0.0, 0.0, 0.0]
        self._recent: deque[EventScore] = deque()
        self._wsums = [0.0, 0.0, 0.0]

    def update(self, predicted: Sequence[str] | None, actual: str) -> EventScore | None:
        """Score one event; returns (hit, ndcg, rr), or None when the event is cold."""
        if predicted is None:
            self._cold += 1
            return None
        s = score_event(predicted, actual, self.k)
        self._n += 1
        for i in range(3):
            self._sums[i] += s[i]
            self._wsums[i] += s[i]
        self._recent.append(s)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            for i in range(3):
                self._wsums[i] -= old[i]
        return s

    @property
    def n(self) -> int:
        """Scored (non-cold) events."""
        return self._n

    @property
    def cold(self) -> int:
        """Events with no earlier prediction for their user."""
        return self._cold

    def _rate(self, total: float, n: int) -> float:
        # Window sums are maintained by add/subtract; clamp the float residue so a rate never
        # reads as -1e-17 or 1.0000000000000002 on a dashboard.
        return min(1.0, max(0.0, total / n)) if n else 0.0

    @property
    def hr(self) -> float:
        return self._rate(self._sums[0], self._n)

    @property
    def ndcg(self) -> float:
        return self._rate(self._sums[1], self._n)

    @property
    def mrr(self) -> float:
        return self._rate(self._sums[2], self._n)

    def window_values(self) -> tuple[int, float, float, float]:
        """(n, hr, ndcg, mrr) over the last ``window`` scored events."""
        n = len(self._recent)
        hr, ndcg, mrr = (self._rate(v, n) for v in self._wsums)
        return n, hr, ndcg, mrr

    def summary(self) -> dict[str, float | int]:
        """Totals and window values, keyed like offline evaluation (``hr@10``, ``ndcg@10``, ``mrr@10``)."""
        k = self.k
        wn, whr, wndcg, wmrr = self.window_values()
        return {
            "k": k,
            "n": self._n,
            "cold": self._cold,
            f"hr@{k}": self.hr,
            f"ndcg@{k}": self.ndcg,
            f"mrr@{k}": self.mrr,
            "window_n": wn,
            f"window_hr@{k}": whr,
            f"window_ndcg@{k}": wndcg,
            f"window_mrr@{k}": wmrr,
        }

    def __repr__(self) -> str:
        return f"Prequential(k={self.k}, n={self._n}, cold={self._cold}, hr={self.hr:.4f})"
