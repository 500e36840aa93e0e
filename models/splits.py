"""Chronological leave-last-out split (DESIGN §4).

Per user, in time order: last interaction = test, second-to-last = validation, the rest = training.
Users with fewer than 3 interactions keep all of them in training and are not evaluated. The item
vocabulary covers every item of the data set (full ranking over all items), in order of first
appearance.

>>> from models.data import Interactions
>>> import numpy as np
>>> ev = Interactions("t", np.array(["u", "u", "u", "u", "v"], dtype=object),
...                   np.array(["a", "b", "a", "c", "b"], dtype=object), np.arange(5.0))
>>> s = leave_last_out(ev)
>>> s.user_ids, [t.tolist() for t in s.train], s.valid_target.tolist(), s.test_target.tolist()
(['u', 'v'], [[1, 2], [2]], [1, 0], [3, 0])
>>> s.eval_users.tolist(), s.history(0, "test").tolist()
([0], [1, 2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.data import Interactions
from models.errors import DataError
from models.vocab import PAD, ItemVocab

Stage = Literal["valid", "test"]


@dataclass
class SequenceSplit:
    """Per-user training sequences and held-out targets, as item indices of ``vocab``.

    ``train[u]`` is user u's training sequence (int64); ``valid_target[u]``/``test_target[u]`` are
    item indices, 0 for users that are not evaluated. ``item_coords`` is ``[vocab.rows, 2]`` (lat,
    lon of each item's first appearance; NaN for padding) when the data has coordinates.
    """

    name: str
    vocab: ItemVocab
    user_ids: list[str]
    train: list[np.ndarray]
    valid_target: np.ndarray
    test_target: np.ndarray
    item_coords: np.ndarray | None = None

    @property
    def eval_users(self) -> np.ndarray:
        """Indices of the users that have validation and test targets."""
        return np.flatnonzero(self.test_target != PAD)

    def history(self, user: int, stage: Stage) -> np.ndarray:
        """Input sequence when predicting ``stage``'s target: train for valid, train+valid for test."""
        if stage == "valid":
            return self.train[user]
        if stage == "test":
            return np.append(self.train[user], self.valid_target[user])
        raise DataError(f"stage must be 'valid' or 'test', not {stage!r}")

    def target(self, stage: Stage) -> np.ndarray:
        return self.valid_target if stage == "valid" else self.test_target

    @property
    def n_train_interactions(self) -> int:
        return int(sum(len(t) for t in self.train))


def leave_last_out(events: Interactions, min_len: int = 3) -> SequenceSplit:
    """Split ``events`` (already time-ordered) per user; see the module docstring."""
    if len(events) == 0:
        raise DataError("cannot split an empty data set")
    vocab = ItemVocab()
    item_idx = vocab.add_many(events.items.tolist())
    coords = None
    if events.lat is not None and events.lon is not None:
        coords = np.full((vocab.rows, 2), np.nan)
        first = np.unique(item_idx, return_index=True)[1]
        coords[item_idx[first], 0] = events.lat[first]
        coords[item_idx[first], 1] = events.lon[first]

    per_user: dict[str, list[int]] = {}
    for u, i in zip(events.users.tolist(), item_idx.tolist(), strict=True):
        per_user.setdefault(u, []).append(i)

    user_ids = list(per_user)
    train: list[np.ndarray] = []
    valid = np.zeros(len(user_ids), dtype=np.int64)
    test = np.zeros(len(user_ids), dtype=np.int64)
    for n, u in enumerate(user_ids):
        seq = per_user[u]
        if len(seq) >= min_len:
            train.append(np.asarray(seq[:-2], dtype=np.int64))
            valid[n], test[n] = seq[-2], seq[-1]
        else:
            train.append(np.asarray(seq, dtype=np.int64))
    return SequenceSplit(events.name, vocab, user_ids, train, valid, test, coords)
