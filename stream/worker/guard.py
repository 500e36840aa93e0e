"""The worker's post-swap guard: after a hot swap, keep the previous version for shadow scoring,
compare both on the same events, and roll back when the new version is worse.

The trainer's gate predicts live accuracy from a held-out slice; the guard checks the prediction
on the live stream. For ``events`` scored events after a swap, every prediction the new version
publishes is also computed by the previous version (the *shadow*, never published). When the
user's next event arrives, both are scored on it (per-event ``metric``@k, prequential: the same
event, the same history before it), which makes the comparison paired.

At ``looks`` evenly spaced points (after ``events / looks``, ``2 events / looks``, ... scored
pairs; none before ``min_events``) the guard computes the one-sided lower confidence bound of the
mean of ``previous - new`` (:func:`stream.trainer.gate.lower_bound`). When it exceeds ``tolerance`` (the
previous version is better by more than that, with the confidence split over the looks,
Bonferroni, so that two equally good versions are rolled back in at most ``1 - confidence`` of
the swaps) the verdict is ``rollback``; after the last look it is ``kept``. A guard whose pairs
do not arrive (users who do not come back) ends ``kept`` after ``max_served`` served events.

The guard holds at most one shadow top-k list per user served during the window (bounded by
``max_served``), and forgets everything on the next swap. Shadow predictions live in memory only:
a worker restarted during a guard window starts no guard for the version it restarts with.

>>> import torch
>>> from models.hail import HAIL, HailConfig
>>> from models.vocab import ItemVocab
>>> from stream.worker.recommender import LiveModel
>>> vocab = ItemVocab(["a", "b", "c"])
>>> m = HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows)
>>> guard = SwapGuard(events=4, min_events=4, looks=1)
>>> run = guard.start(LiveModel(m, vocab, "v2"), LiveModel(m, vocab, "v1"))
>>> for n in range(4):   # the previous version always had it right, the new one never
...     run.pair(previous_hit=1.0, new_hit=0.0)
>>> run.verdict().action, run.verdict().version, run.verdict().previous
('rollback', 'v2', 'v1')
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.metrics import TOPK_METRICS, topk_metrics
from stream.errors import StreamError
from stream.trainer.gate import lower_bound
from stream.worker.recommender import LiveModel, OnlineRecommender


@dataclass(frozen=True)
class Verdict:
    """How a guard window ended: ``action`` is ``rollback``, ``kept``, or ``replaced`` (another swap
    came before a verdict: the scores so far, for the record, never acted on); ``version`` the guarded
    (new) version, ``previous`` the one it replaced; ``n`` scored pairs; ``new``/``old`` the mean
    metric of each; ``lower`` the lower bound of ``old - new``."""

    action: str
    version: str
    previous: str
    n: int
    new: float
    old: float
    lower: float
    reason: str

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class GuardRun:
    """One guard window (after one swap). Fed from the batch thread only."""

    new: LiveModel
    previous: LiveModel
    guard: SwapGuard
    shadow: dict[str, list[str]] = field(default_factory=dict)
    new_scores: list[float] = field(default_factory=list)
    old_scores: list[float] = field(default_factory=list)
    served: int = 0
    done: Verdict | None = None
    _next_look: int = 0
    _previous_rec: OnlineRecommender = field(init=False, repr=False)  # the shadow scorer

    def __post_init__(self) -> None:
        self._next_look = self.guard.look_every
        self._previous_rec = OnlineRecommender(self.previous.model, self.previous.vocab, self.previous.version)

    def shadow_topk(self, histories: Sequence[Sequence[str]], k: int) -> list[list[str]]:
        """The previous version's top-k for a batch of histories (one forward pass)."""
        return [items for items, _ in self._previous_rec.recommend_batch(histories, k)]

    def pair(self, previous_hit: float, new_hit: float) -> None:
        """One event scored by both versions (their per-event metric)."""
        if self.done is None:
            self.old_scores.append(previous_hit)
            self.new_scores.append(new_hit)

    def score(self, previous_items: Sequence[str] | None, new_items: Sequence[str] | None, actual: str, k: int) -> None:
        """Score one event against both versions' top-k published (or shadowed) before it."""
        if previous_items is None or new_items is None:
            return
        col = TOPK_METRICS.index(self.guard.metric)
        self.pair(float(topk_metrics(list(previous_items)[:k], actual)[col]),
                  float(topk_metrics(list(new_items)[:k], actual)[col]))

    def partial(self, action: str = "replaced") -> Verdict:
        """The comparison so far (no decision): for a window cut short by another swap."""
        n = len(self.new_scores)
        new = float(np.mean(self.new_scores)) if n else 0.0
        old = float(np.mean(self.old_scores)) if n else 0.0
        return Verdict(action, self.new.version, self.previous.version, n, new, old, float("-inf"),
                       f"{action} after {n} scored pairs: {self.guard.metric}@k {new:.4f} vs {old:.4f}")

    def verdict(self) -> Verdict | None:
        """The window's verdict once one is due (checked at the looks), else None."""
        if self.done is not None:
            return self.done
        g, n = self.guard, len(self.new_scores)
        if n >= self._next_look or n >= g.events:
            self._next_look += g.look_every
            new, old = float(np.mean(self.new_scores)), float(np.mean(self.old_scores))
            low = lower_bound(np.asarray(self.old_scores) - np.asarray(self.new_scores), g.look_confidence) \
                if n >= g.min_events else float("-inf")
            if low > g.tolerance:
                self.done = Verdict("rollback", self.new.version, self.previous.version, n, new, old, low,
                                    f"{self.previous.version} beats {self.new.version} on the same {n} events: "
                                    f"{g.metric}@k {old:.4f} vs {new:.4f} (lower bound of the gap {low:+.4f} "
                                    f"> {g.tolerance:+.4f})")
            elif n >= g.events:
                self.done = Verdict("kept", self.new.version, self.previous.version, n, new, old, low,
                                    f"{self.new.version} is not worse than {self.previous.version} on {n} events: "
                                    f"{g.metric}@k {new:.4f} vs {old:.4f}")
        if self.done is None and self.served >= g.max_served:
            new = float(np.mean(self.new_scores)) if n else 0.0
            old = float(np.mean(self.old_scores)) if n else 0.0
            self.done = Verdict("kept", self.new.version, self.previous.version, n, new, old, float("-inf"),
                                f"only {n} scored pairs after {self.served} served events: kept")
        return self.done


class SwapGuard:
    """Starts a :class:`GuardRun` per swap (:meth:`start`, any thread); the batch thread reads
    :attr:`current`. See the module docstring for the settings."""

    def __init__(
        self,
        events: int = 1000,
        min_events: int = 200,
        tolerance: float = 0.0,
        confidence: float = 0.95,
        looks: int = 4,
        metric: str = "ndcg",
        max_served: int | None = None,
    ) -> None:
        if events < 1 or not 1 <= looks <= events or min_events < 1:
            raise StreamError(f"guard needs events >= looks >= 1 and min_events >= 1; got events={events}, "
                              f"looks={looks}, min_events={min_events}")
        if tolerance < 0 or not 0.5 <= confidence < 1:
            raise StreamError(f"guard tolerance must be >= 0 and confidence in [0.5, 1); got {tolerance}, {confidence}")
        if metric not in TOPK_METRICS:
            raise StreamError(f"guard metric must be one of {TOPK_METRICS}, not {metric!r}")
        self.events = int(events)
        self.min_events = int(min_events)
        self.tolerance = float(tolerance)
        self.confidence = float(confidence)
        self.looks = int(looks)
        self.look_every = max(1, self.events // self.looks)
        self.look_confidence = 1 - (1 - self.confidence) / self.looks
        self.metric = metric
        self.max_served = int(max_served) if max_served is not None else 20 * self.events
        self._current: GuardRun | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> GuardRun | None:
        """The running window (None when no swap is being guarded)."""
        run = self._current
        return run if run is not None and run.done is None else None

    @property
    def last(self) -> GuardRun | None:
        """The latest window, finished or not (None after :meth:`stop`)."""
        return self._current

    def start(self, new: LiveModel, previous: LiveModel) -> GuardRun:
        """Guard a swap from ``previous`` to ``new`` (replaces any running window)."""
        with self._lock:
            self._current = GuardRun(new, previous, self)
            return self._current

    def stop(self) -> None:
        with self._lock:
            self._current = None
