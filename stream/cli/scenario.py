"""Replay scenarios: a real shift injected mid-stream (``hailstream demo --drift``).

:func:`remap_after` renames the items of the replayed rows from a position on by a fixed, seeded
permutation of the data set's POIs (:func:`item_permutation`): the same users at the same times,
visiting the same places under other ids, as if a later block of the data came from a catalogue
whose ids were re-assigned. Every renamed id is a real POI id the model knows, so the vocabulary
does not change, but whatever the model learned about an id (its popularity, the transitions to
and from it) is now wrong: its accuracy collapses until it is fine-tuned on the new ids, while the
frequency baselines recover by themselves as the users' histories refill. The item popularity
distribution moves too (the input drift detector sees it); the coordinates (``lat``/``lon``)
stay those of the original place.

>>> import numpy as np
>>> from models.data import Interactions
>>> ev = Interactions("x", np.array(["u"] * 4, dtype=object), np.array(list("abab"), dtype=object), np.arange(4.0))
>>> perm = item_permutation(ev.items, seed=1)
>>> sorted(perm) == sorted(perm.values()) == ["a", "b"] and all(k != v for k, v in perm.items())
True
>>> remap_after(ev, np.arange(4), at=2, seed=1).items.tolist()
['a', 'b', 'b', 'a']
>>> drift_position(10, None), drift_position(10, 3)
(5, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from models.data import Interactions
from stream.errors import SettingsError

DEFAULT_SEED = 7


def item_permutation(items: Iterable[object], seed: int = DEFAULT_SEED) -> dict[str, str]:
    """A seeded permutation of the distinct ``items`` without fixed points (every id is renamed):
    the ids in a random order, each mapped to the next one (a single cycle). Deterministic for a
    given set of ids and seed."""
    distinct = sorted({str(i) for i in items})
    if len(distinct) < 2:
        raise SettingsError(f"a remap needs at least 2 distinct items, the data has {len(distinct)}")
    order = [distinct[j] for j in np.random.default_rng(seed).permutation(len(distinct)).tolist()]
    return {a: b for a, b in zip(order, order[1:] + order[:1], strict=True)}


def drift_position(n_rows: int, drift_at: int | None) -> int:
    """Where the shift starts among ``n_rows`` replayed rows: ``drift_at``, or the middle."""
    at = n_rows // 2 if drift_at is None else int(drift_at)
    if not 0 < at < n_rows:
        raise SettingsError(
            f"--drift-at must be inside the replayed stream (1..{n_rows - 1} events), not {at}; "
            "lower it or raise --limit"
        )
    return at


def remap_after(events: Interactions, rows: np.ndarray, at: int, seed: int = DEFAULT_SEED) -> Interactions:
    """A copy of ``events`` whose rows ``rows[at:]`` (row indices into ``events``, in replay order)
    carry renamed items (:func:`item_permutation` over all the items of ``events``); the other
    rows, users, times and coordinates are unchanged, so ``replay(copy, settings, rows=rows)``
    publishes the same event ids as without the shift."""
    post = np.asarray(rows, dtype=np.int64)[at:]
    mapping = item_permutation(events.items.tolist(), seed)
    items = events.items.copy()
    items[post] = np.array([mapping[str(i)] for i in items[post].tolist()], dtype=object)
    return dataclasses.replace(events, items=items)
