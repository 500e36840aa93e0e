"""The online recommender that owns the live model version, and the online baselines.

:class:`OnlineRecommender` turns micro-batches of item-id histories into top-k lists with ONE
forward pass of the live :class:`~models.hail.HAIL` model per batch. The live (model, vocabulary,
version) triple is one immutable :class:`LiveModel`; :meth:`OnlineRecommender.swap` replaces it in
a single reference assignment, so a batch always runs against one consistent version and a swap
never waits for inference (the hot-swap of issue "lifecycle" builds on it).

:class:`OnlineBaselines` keeps popularity (recent window), first-order Markov and user-frequency
baselines learning from every event (River-shaped ``learn_one`` / ``predict_one``, with their own
growing vocabulary) for the prequential comparison with the model.

>>> import torch
>>> from models.hail import HAIL, HailConfig
>>> from models.vocab import ItemVocab
>>> vocab = ItemVocab(["a", "b", "c"])
>>> rec = OnlineRecommender(HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows), vocab, "v1")
>>> out = rec.recommend_batch([["a", "b"], ["zzz"]], k=2)   # "zzz" is unknown: a cold history
>>> len(out[0][0]), out[1]                                    # no fallback given: nothing to offer
(2, ([], []))
>>> b = OnlineBaselines(popularity_window=10)
>>> for user, item in [("u", "a"), ("u", "b"), ("v", "a")]:
...     b.learn_one(user, item)
>>> b.predict_one("u", ["a", "b"], k=2)["popularity"], b.popular(1)[0]
(['a', 'b'], ['a'])
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.baselines import Baseline, Markov, Popularity, UserFrequency
from models.capacity import ItemCapacity
from models.hail import HAIL
from models.incremental import IncrementalScorer
from models.trainer import left_pad
from models.vocab import ItemVocab
from stream.errors import StreamError

Ranked = tuple[list[str], list[float]]
"""A top-k answer: (item ids best first, their scores)."""

Fallback = Callable[[int], Ranked]
"""Gives a top-k for histories the model cannot read (no known item), e.g. :meth:`OnlineBaselines.popular`."""

BASELINE_NAMES = ("popularity", "markov", "user-frequency")


@dataclass(frozen=True)
class LiveModel:
    """One model version: the network, the vocabulary its rows index, and its version label."""

    model: HAIL
    vocab: ItemVocab
    version: str


def _check(model: HAIL, vocab: ItemVocab, version: str) -> LiveModel:
    if vocab.rows > model.n_rows:
        raise StreamError(
            f"model version {version!r} has {model.n_rows} item rows but its vocabulary needs "
            f"{vocab.rows}: grow the model first (model.grow(vocab.rows)) and fine-tune it"
        )
    if not str(version):
        raise StreamError("a model version label must be a non-empty string")
    model.eval()
    return LiveModel(model, vocab, str(version))


class OnlineRecommender:
    """Top-k next items for histories of external item ids, with the live model version.

    ``peer`` picks one peer network (default: the mean of all peers' log-probabilities);
    ``fallback`` answers histories with no item the live vocabulary knows (a new user whose first
    items are new): without one they get an empty list. Never raises on unknown ids.

    ``length_buckets`` > 1 sorts a batch by history length and runs that many forward passes,
    each padded to its own longest history: when lengths vary (a young stream, many new users)
    this cuts the padding the model computes on (measured on the first 20k Foursquare events with
    2 SASRec peers: 1 -> 2 -> 3 buckets = 1.0 -> 1.5 -> 1.8x the events per CPU second). The
    answers do not change (up to float rounding).

    ``state_cache`` > 0 turns on incremental inference (:mod:`models.incremental`) for models
    that have an exact incremental state (GRU4Rec peers, or SASRec peers with positions from the
    start; with or without the copy output): up to that many sequences' encoder states are cached
    (LRU; ``state_cache_bytes`` also bounds their bytes), so a history that extends a cached one by
    an item costs one encoder step. The cache belongs to one live version: a swap (and a grown item
    table) starts an empty one. Other models (SASRec with positions from the end, BERT4Rec) ignore
    it and are re-encoded in full. The answers do not change (up to float rounding).

    The model handed to :meth:`swap` (or the constructor) must not be trained further in place:
    train a copy and swap that in.
    """

    def __init__(
        self,
        model: HAIL,
        vocab: ItemVocab,
        version: str,
        *,
        peer: int | None = None,
        fallback: Fallback | None = None,
        length_buckets: int = 1,
        state_cache: int = 0,
        state_cache_bytes: int | None = None,
    ) -> None:
        if state_cache < 0:
            raise StreamError(f"state_cache must be >= 0 (0 = no incremental inference), not {state_cache}")
        if length_buckets < 1:
            raise StreamError(f"length_buckets must be >= 1 (1 = one forward pass per batch), not {length_buckets}")
        self._live = _check(model, vocab, version)
        self.length_buckets = length_buckets
        self._swap_lock = threading.Lock()
        self.peer = peer
        self.fallback = fallback
        self.state_cache = state_cache
        self.state_cache_bytes = state_cache_bytes
        self._scorer: tuple[LiveModel, IncrementalScorer] | None = None

    def incremental(self, live: LiveModel | None = None) -> IncrementalScorer | None:
        """The incremental scorer of ``live`` (default: the live version), or None when the cache is
        off or the model has no exact incremental state. A new version gets a new, empty cache."""
        live = live or self._live
        if not self.state_cache or not IncrementalScorer.supports(live.model):
            return None
        current = self._scorer
        if current is None or current[0] is not live:
            current = (live, IncrementalScorer(live.model, self.state_cache, self.peer, self.state_cache_bytes))
            self._scorer = current
        return current[1]

    def cache_stats(self) -> dict[str, Any] | None:
        """The incremental cache of the version last served incrementally (``version``, ``entries``,
        ``bytes``, ``hits``, ``misses`` since that version's first batch), or None when nothing has
        been. Right after a swap that is still the previous version's cache: it holds its memory until
        the new version's first batch replaces it."""
        current = self._scorer
        if current is None:
            return None
        inc = current[1]
        return {"version": current[0].version, "entries": len(inc), "bytes": inc.state_bytes,
                "hits": inc.hits, "misses": inc.misses}

    @property
    def live(self) -> LiveModel:
        """The current (model, vocab, version): read it once to work on one consistent version."""
        return self._live

    @property
    def version(self) -> str:
        return self._live.version

    def swap(self, model: HAIL, vocab: ItemVocab, version: str) -> LiveModel:
        """Install a new model version atomically (callable from any thread); returns the previous one.

        Batches already running finish with the version they started with; the next batch uses
        the new one.
        """
        new = _check(model, vocab, version)
        with self._swap_lock:
            old, self._live = self._live, new
        return old

    def encode(self, histories: Sequence[Sequence[str]], live: LiveModel | None = None) -> list[np.ndarray]:
        """Histories as index arrays of the live vocabulary, unknown ids dropped, each cut to the
        model's ``max_len`` most recent items."""
        live = live or self._live
        max_len = live.model.config.max_len
        out = []
        for h in histories:
            idx = live.vocab.lookup(h)
            idx = idx[idx > 0]
            out.append(idx[-max_len:])
        return out

    def _groups(self, warm: list[int], encoded: list[np.ndarray]) -> list[list[int]]:
        if self.length_buckets == 1 or len(warm) < 2:
            return [warm]
        by_length = sorted(warm, key=lambda n: len(encoded[n]))
        return [[int(n) for n in g] for g in np.array_split(np.asarray(by_length), self.length_buckets) if len(g)]

    def recommend_batch_versioned(self, histories: Sequence[Sequence[str]], k: int) -> tuple[str, list[Ranked]]:
        """Like :meth:`recommend_batch`, also returning the version that produced the answers."""
        if k < 1:
            raise StreamError(f"k must be >= 1, not {k}; set HAILSTREAM_TOP_K")
        live = self._live
        encoded = self.encode(histories, live)
        warm = [n for n, e in enumerate(encoded) if e.size]
        out: list[Ranked] = [([], [])] * len(histories)
        if warm:
            rows = live.vocab.rows
            ids = live.vocab.to_list()
            scorer = self.incremental(live)
            groups = [warm] if scorer is not None else self._groups(warm, encoded)
            for group in groups:
                rows_in = [encoded[n] for n in group]
                if scorer is not None:
                    scores, indices = scorer.top_k(rows_in, min(k, live.model.n_rows - 1))
                    self._answers(out, group, scores, indices, ids, rows)
                    continue
                # Pad to the longest history of the group, not to max_len: the encoders' output
                # does not depend on the padding length, and attention costs grow with its square.
                seqs = left_pad(rows_in, max(len(r) for r in rows_in))
                with torch.inference_mode():  # lighter than recommend's own no_grad
                    scores, indices = live.model.recommend(seqs, k, peer=self.peer)
                self._answers(out, group, scores, indices, ids, rows)
        if len(warm) < len(histories) and self.fallback is not None:
            cold_answer = self.fallback(k)
            for n in range(len(histories)):
                if not encoded[n].size:
                    out[n] = cold_answer
        return live.version, out

    @staticmethod
    def _answers(
        out: list[Ranked], group: list[int], scores: torch.Tensor, indices: torch.Tensor, ids: list[str], rows: int
    ) -> None:
        for n, srow, irow in zip(group, scores.tolist(), indices.tolist(), strict=True):
            # A model may have more rows than its vocabulary names (grown ahead): skip those.
            pairs = [(ids[i - 1], s) for i, s in zip(irow, srow, strict=True) if 0 < i < rows]
            out[n] = ([p[0] for p in pairs], [p[1] for p in pairs])

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int) -> list[Ranked]:
        """Top-``k`` (item ids, scores) after each history (external ids, oldest first), from ONE
        forward pass over the whole batch (or ``length_buckets`` passes). Scores are the model's
        mean log-probabilities (or the chosen peer's)."""
        return self.recommend_batch_versioned(histories, k)[1]

    def predict_one(self, history: Sequence[str], k: int = 10) -> list[str]:
        """River-shaped single prediction: the top-``k`` item ids after ``history``."""
        return self.recommend_batch([history], k)[0][0]

    def __repr__(self) -> str:
        return f"OnlineRecommender(version={self.version!r}, items={len(self._live.vocab)})"


class OnlineBaselines:
    """Popularity (last ``popularity_window`` events), Markov and user-frequency baselines that
    learn from every event and predict per event, for the prequential comparison.

    Items are mapped through the baselines' own vocabulary, so they know every item the stream
    has shown, including those the live model has never seen. ``sample_every`` > 1 predicts only
    for users whose id hashes into a 1-in-``sample_every`` sample (learning still sees every
    event). The last prediction per user and baseline is kept here (:meth:`previous`) so the next
    event of that user can be scored against it.

    Bounded state and O(1) work per event, whatever the stream's length:

    - ``max_users`` (0 = unbounded): per-user state of the least recently seen users beyond it is
      dropped (they start cold again);
    - ``max_items`` (0 = unbounded): the vocabulary keeps that many items; a new item beyond it
      takes the index of the least recently seen one (:class:`models.capacity.ItemCapacity`),
      whose counts and transitions are forgotten first (``forget_item``);
    - ``max_next`` (0 = unbounded): successors kept per item by the Markov baseline (the least
      frequent goes, see :class:`models.baselines.Markov`);
    - user-frequency ranks the history it is given (the table's sequence) and keeps no per-user
      counts of its own;
    - a prediction ranks only evidence items (the user's history, at most ``max_next``
      successors) and takes the rest from incrementally sorted popularity orders
      (:class:`models.baselines.RankedItems`), never a sort of the vocabulary; so does
      :meth:`popular`.

    >>> b = OnlineBaselines(popularity_window=10, max_items=2, max_next=1)
    >>> for user, item in [("u", "a"), ("u", "b"), ("u", "a"), ("v", "c")]:   # "c" takes b's index
    ...     b.learn_one(user, item)
    >>> len(b.vocab), "b" in b.vocab, b.predict_one("u", ["a", "b"], k=2)["markov"]
    (2, False, ['a', 'c'])
    """

    def __init__(
        self,
        popularity_window: int | None = 1000,
        names: Sequence[str] = BASELINE_NAMES,
        sample_every: int = 1,
        max_users: int = 0,
        max_items: int = 0,
        max_next: int = 0,
    ) -> None:
        unknown = sorted(set(names) - set(BASELINE_NAMES))
        if unknown:
            raise StreamError(f"unknown baselines {unknown}; choose from {BASELINE_NAMES}")
        if sample_every < 1:
            raise StreamError(f"sample_every must be >= 1 (1 = every user), not {sample_every}")
        if max_users < 0 or max_items < 0 or max_next < 0:
            raise StreamError(f"max_users, max_items and max_next must be >= 0 (0 = unbounded), not "
                              f"{max_users}, {max_items}, {max_next}")
        self._items = ItemCapacity(capacity=max_items or None)
        self.vocab: ItemVocab = self._items.vocab
        self.max_items = max_items
        self.sample_every = sample_every
        self._popularity = Popularity(window=popularity_window)
        made: dict[str, Baseline] = {"popularity": self._popularity, "markov": Markov(max_next or None),
                                     "user-frequency": UserFrequency(count_users=False)}
        self._models = {n: made[n] for n in names}
        # Fallback popularity is used even when "popularity" is not one of the compared names.
        self._learners = list(self._models.values())
        if self._popularity not in self._learners:
            self._learners.append(self._popularity)
        self._previous: dict[str, dict[str, list[str]]] = {}
        # users in order of their last event, for the max_users cap (0 = unbounded)
        self.max_users = max_users
        self._recent: dict[str, None] = {}
        self._events = 0
        self._popular_cache: tuple[int, int, Ranked] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._models)

    @property
    def events(self) -> int:
        """Events learned so far."""
        return self._events

    def sampled(self, user: str) -> bool:
        """Whether ``user`` is in the prediction sample (always true with ``sample_every=1``)."""
        return self.sample_every == 1 or zlib.crc32(user.encode()) % self.sample_every == 0

    def learn_one(self, user: str, item: str, lat: float | None = None, lon: float | None = None) -> None:
        """Learn one event (in stream order)."""
        admission = self._items.observe(item)
        idx = admission.index
        if admission.evicted is not None:
            for m in self._learners:
                m.forget_item(idx)
        for m in self._learners:
            m.learn_one(user, idx, lat, lon)
        self._events += 1
        if self.max_users:
            recent = self._recent
            recent.pop(user, None)
            recent[user] = None
            while len(recent) > self.max_users:  # forget the least recently seen user
                old = next(iter(recent))
                del recent[old]
                self._previous.pop(old, None)
                for m in self._learners:
                    m.forget(old)

    def predict_one(self, user: str, history: Sequence[str], k: int = 10, remember: bool = True) -> dict[str, list[str]]:
        """Each baseline's top-``k`` item ids after ``history`` (oldest first; the user's latest
        items, as the model sees them). With ``remember`` the lists become :meth:`previous`."""
        hist = self.vocab.lookup(history)
        hist = hist[hist > 0]
        out = {name: self.vocab.ids_of(m.predict_one(user, hist, k)) for name, m in self._models.items()}
        if remember:
            self._previous[user] = out
        return out

    def previous(self, user: str) -> dict[str, list[str]] | None:
        """The lists predicted after ``user``'s previous event, or None (cold)."""
        return self._previous.get(user)

    def popular(self, k: int) -> Ranked:
        """The ``k`` most popular items of the recent window (ids, counts): the cold-start answer.

        Cached until the next :meth:`learn_one`, so a batch of cold users costs one ranking.
        """
        cache = self._popular_cache
        if cache is not None and cache[0] == self._events and cache[1] == k:
            return cache[2]
        if self._events == 0:
            answer: Ranked = ([], [])
        else:
            pop = self._popularity
            top = pop.predict_one(None, None, k)  # the incrementally sorted order: O(k), not a row sort
            answer = (self.vocab.ids_of(top), [pop.score_of(i) for i in top])
        self._popular_cache = (self._events, k, answer)
        return answer

    def baseline(self, name: str) -> Baseline:
        """The underlying :mod:`models.baselines` object (for inspection)."""
        return self._models[name]

    def __repr__(self) -> str:
        return f"OnlineBaselines({', '.join(self.names)}; {self._events} events, {len(self.vocab)} items)"
