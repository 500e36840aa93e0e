"""A bounded, growable item vocabulary for endless streams, and the model surgery it needs.

New items keep arriving on a stream; a vocabulary (and the model's item tables) that only grows
would eat all memory eventually. :class:`ItemCapacity` bounds it with a least-recently-seen policy:

- an unseen item gets the next free row while ``len(vocab) < capacity`` (the table *grows*;
  :meth:`models.hail.HAIL.grow` keeps every existing row bit-identical);
- at capacity, the row of the item unseen for the longest time is *recycled*: the new id takes
  that index, and the row is re-initialised (:func:`reset_rows`) before the next fine-tune learns
  it. Items of a loaded model that the stream has not shown yet count as the oldest, in index order;
- ``min_idle`` protects recent items: when even the least-recently-seen item was seen within the
  last ``min_idle`` events (set it to the trainer's window, whose events are its training data),
  the new item is *refused* instead (counted in :attr:`ItemCapacity.refused`): it stays unknown
  to the model, which serves such histories with a fallback, until a row frees up.

Index 0 stays padding; a recycled index changes meaning, so a model must always travel with the
vocabulary it was trained with (checkpoints do). :func:`candidate_from` builds the next model from
a live one for a newer vocabulary: a copy, grown, with the rows whose item changed re-initialised.

Pure Python/PyTorch: no I/O, no clock (time is the count of observed events).

>>> cap = ItemCapacity(ItemVocab(["a", "b"]), capacity=3)
>>> cap.observe("b"), cap.observe("c")          # known; new, table grows to 3 items
(Admission(index=2, new=False, evicted=None), Admission(index=3, new=True, evicted=None))
>>> cap.observe("d")                             # full: "a" (never seen on the stream) gives its row
Admission(index=1, new=True, evicted='a')
>>> cap.vocab.to_list(), cap.vocab.index("a")
(['d', 'b', 'c'], None)
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from models.encoders import EMBEDDING_STD
from models.errors import ModelsError
from models.hail import HAIL
from models.vocab import PAD, ItemVocab


class RecyclingVocab(ItemVocab):
    """An :class:`ItemVocab` whose indices can be handed to a new id (:meth:`recycle`).

    Serialises like its parent (``to_list`` in index order), so checkpoints need nothing new.
    """

    def recycle(self, index: int, new_id: str) -> str:
        """Give ``index`` to ``new_id`` (which must be unknown); returns the id that had it."""
        if not 1 <= index < self.rows:
            raise ModelsError(f"cannot recycle index {index}: outside the vocabulary (1..{self.rows - 1})")
        if new_id in self._index:
            raise ModelsError(f"cannot recycle index {index} for {new_id!r}: it already has index {self._index[new_id]}")
        old = self._ids[index]
        del self._index[old]
        self._ids[index] = new_id
        self._index[new_id] = index
        return old

    def copy(self) -> RecyclingVocab:
        """An independent copy (the live model keeps its own while the stream goes on)."""
        out = RecyclingVocab()
        out._ids = list(self._ids)
        out._index = dict(self._index)
        return out


@dataclass(frozen=True)
class Admission:
    """What :meth:`ItemCapacity.observe` did: the item's row (0 = refused), whether the row was
    assigned just now (grown or recycled), and the id evicted to make room."""

    index: int
    new: bool
    evicted: str | None


class ItemCapacity:
    """The vocabulary of a stream, bounded to ``capacity`` items (None = unbounded) by recycling
    the rows of least-recently-seen items; see the module docstring. ``min_idle`` (events) is how
    long an item must have been unseen before its row may be recycled."""

    def __init__(self, vocab: ItemVocab | None = None, capacity: int | None = None, min_idle: int = 0) -> None:
        if capacity is not None and capacity < 1:
            raise ModelsError(f"item capacity must be >= 1 (or None for unbounded), not {capacity}")
        if min_idle < 0:
            raise ModelsError(f"min_idle must be >= 0 events, not {min_idle}")
        ids = vocab.to_list() if vocab is not None else []
        if capacity is not None and len(ids) > capacity:
            raise ModelsError(
                f"the vocabulary already has {len(ids)} items, more than the capacity {capacity}; raise the capacity"
            )
        self.vocab = RecyclingVocab(ids)
        self.capacity = capacity
        self.min_idle = int(min_idle)
        self._clock = 0
        # item id -> event count when last seen; least recently seen first. Items of the initial
        # vocabulary have not been seen on the stream: time 0, in index order.
        self._seen: OrderedDict[str, int] = OrderedDict((i, 0) for i in ids)
        self.grown = 0
        self.recycled = 0
        self.refused = 0

    @property
    def clock(self) -> int:
        """Events observed so far."""
        return self._clock

    def observe(self, item: str) -> Admission:
        """One event of ``item``: refresh its recency, or admit it (grow, recycle, or refuse)."""
        self._clock += 1
        idx = self.vocab.index(item)
        if idx is not None:
            self._seen[item] = self._clock
            self._seen.move_to_end(item)
            return Admission(idx, False, None)
        if self.capacity is None or len(self.vocab) < self.capacity:
            idx = self.vocab.add(item)
            self._seen[item] = self._clock
            self.grown += 1
            return Admission(idx, True, None)
        oldest, last_seen = next(iter(self._seen.items()))
        if self._clock - last_seen <= self.min_idle and last_seen > 0:
            self.refused += 1
            return Admission(PAD, False, None)
        del self._seen[oldest]
        idx = self.vocab.index(oldest)
        assert idx is not None
        self.vocab.recycle(idx, item)
        self._seen[item] = self._clock
        self.recycled += 1
        return Admission(idx, True, oldest)

    def observe_many(self, items: Iterable[str]) -> list[Admission]:
        return [self.observe(i) for i in items]

    def last_seen(self, item: str) -> int | None:
        """Event count at which ``item`` was last observed (0 = only known from the initial
        vocabulary), or None if it is not in the vocabulary."""
        return self._seen.get(item)

    def __repr__(self) -> str:
        cap = "unbounded" if self.capacity is None else str(self.capacity)
        return (f"ItemCapacity({len(self.vocab)}/{cap} items, grown {self.grown}, recycled {self.recycled}, "
                f"refused {self.refused})")


def changed_rows(old: ItemVocab, new: ItemVocab) -> np.ndarray:
    """Indices (ascending) present in both vocabularies whose item differs: the recycled rows a
    model trained with ``old`` must re-initialise before it serves ``new``.

    >>> v = RecyclingVocab(["a", "b", "c"]); w = v.copy(); _ = w.recycle(2, "x"); _ = w.add("y")
    >>> changed_rows(v, w).tolist()
    [2]
    """
    a, b = old.to_list(), new.to_list()
    n = min(len(a), len(b))
    return np.fromiter((i + 1 for i in range(n) if a[i] != b[i]), dtype=np.int64)


def reset_rows(model: HAIL, rows: np.ndarray | Iterable[int], seed: int = 0) -> None:
    """Re-initialise item rows of every peer in place, like new rows (normal(0, 0.02)), from a
    generator seeded by ``seed`` and the peer: a recycled row must not inherit the evicted
    item's embedding. Padding (row 0) is never touched."""
    idx = torch.as_tensor(np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64))
    if idx.numel() == 0:
        return
    if int(idx.min()) < 1 or int(idx.max()) >= model.n_rows:
        raise ModelsError(f"rows to reset must be in 1..{model.n_rows - 1}")
    for k, peer in enumerate(model.networks):
        weight = peer.item_emb.weight
        gen = torch.Generator().manual_seed(seed + 7919 * k)
        fresh = torch.randn((idx.numel(), weight.shape[1]), generator=gen, dtype=weight.dtype) * EMBEDDING_STD
        with torch.no_grad():
            weight[idx.to(weight.device)] = fresh.to(weight.device)
    if model.item_bias is not None:  # a recycled row starts with a neutral output bias too
        with torch.no_grad():
            model.item_bias[idx.to(model.item_bias.device)] = 0.0
    model.forget_transitions(idx)  # and with no transitions, to or from it


def candidate_from(live: HAIL, live_vocab: ItemVocab, vocab: ItemVocab, seed: int = 0) -> HAIL:
    """A trainable copy of ``live`` for ``vocab`` (a later state of ``live_vocab``'s stream): grown
    to ``vocab.rows`` (new rows drawn like initial ones, old rows bit-identical) with the rows
    recycled since ``live_vocab`` re-initialised. ``live`` itself is not modified."""
    model = copy.deepcopy(live)
    if vocab.rows > model.n_rows:
        model.grow(vocab.rows)
    reset_rows(model, changed_rows(live_vocab, vocab), seed)
    return model
