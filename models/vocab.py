"""A growable item vocabulary: external string ids <-> dense indices.

Index 0 is reserved for padding, so item indices start at 1 and an embedding table for the
vocabulary has ``vocab.rows`` rows. Indices are never reused or reordered, which is what lets an
embedding table grow without touching the rows it already learned.

>>> v = ItemVocab(["a", "b"])
>>> v.add("c"), v.add("a"), len(v), v.rows
(3, 1, 3, 4)
>>> v.index("b"), v.index("zzz"), v.id_of(3)
(2, None, 'c')
>>> v.lookup(["c", "nope", "a"]).tolist()
[3, 0, 1]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

from models.errors import ModelsError

PAD = 0


class ItemVocab:
    """Maps external item ids (str) to indices 1..n; 0 is padding / unknown."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = ["<pad>"]
        self._index: dict[str, int] = {}
        for item in ids:
            self.add(item)

    def add(self, item: str) -> int:
        """Return the index of ``item``, adding it at the end if it is new."""
        idx = self._index.get(item)
        if idx is None:
            idx = len(self._ids)
            self._index[item] = idx
            self._ids.append(item)
        return idx

    def add_many(self, items: Iterable[str]) -> np.ndarray:
        """Add every id (in order) and return their indices as an int64 array."""
        return np.fromiter((self.add(i) for i in items), dtype=np.int64)

    def index(self, item: str) -> int | None:
        """The index of ``item``, or None if it is unknown."""
        return self._index.get(item)

    def lookup(self, items: Iterable[str]) -> np.ndarray:
        """Indices of ``items`` as int64, with 0 (padding) for unknown ids."""
        # map() over the dict's own get: no Python frame per id (a per-event path of the worker)
        return np.fromiter(map(self._index.get, items, repeat(PAD)), dtype=np.int64)

    def id_of(self, idx: int) -> str:
        """The external id of index ``idx`` (1..n)."""
        if not 1 <= idx < len(self._ids):
            raise ModelsError(f"item index {idx} is outside the vocabulary (1..{len(self._ids) - 1})")
        return self._ids[idx]

    def ids_of(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """External ids of many indices."""
        ids = self._ids
        idx = indices.tolist() if isinstance(indices, np.ndarray) else [int(i) for i in indices]
        if idx and not 1 <= min(idx) <= max(idx) < len(ids):  # one check for the lot (a per-event path)
            bad = next(i for i in idx if not 1 <= i < len(ids))
            raise ModelsError(f"item index {bad} is outside the vocabulary (1..{len(ids) - 1})")
        return [ids[i] for i in idx]

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __len__(self) -> int:
        """Number of items, padding excluded."""
        return len(self._ids) - 1

    @property
    def rows(self) -> int:
        """Rows an embedding table needs: items + padding."""
        return len(self._ids)

    def to_list(self) -> list[str]:
        """Item ids in index order (index 1 first), for serialisation."""
        return self._ids[1:]

    @classmethod
    def from_list(cls, ids: Sequence[str]) -> ItemVocab:
        """Inverse of :meth:`to_list`; refuses duplicates."""
        vocab = cls(ids)
        if len(vocab) != len(ids):
            raise ModelsError("vocabulary list has duplicate ids; the checkpoint or file is corrupt")
        return vocab

    def __repr__(self) -> str:
        return f"ItemVocab({len(self)} items)"
