"""stream/cli/scenario.py: the remap shift of ``hailstream demo --drift`` on the real Foursquare data."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import load_dataset
from stream.cli.demo import split_stream
from stream.cli.scenario import drift_position, item_permutation, remap_after
from stream.errors import SettingsError
from tests.data import needs_nyc


def test_permutation_renames_every_item_deterministically() -> None:
    items = [f"p{i}" for i in range(500)]
    perm = item_permutation(items, seed=3)
    assert sorted(perm) == sorted(perm.values()) == sorted(items)  # a permutation of the same ids
    assert all(a != b for a, b in perm.items())  # none keeps its id
    assert perm == item_permutation(list(reversed(items)), seed=3)  # depends on the set, not the order
    assert perm != item_permutation(items, seed=4)
    with pytest.raises(SettingsError, match="at least 2"):
        item_permutation(["only"])


@needs_nyc
def test_remap_after_renames_only_the_rows_after_the_shift() -> None:
    ev = load_dataset("foursquare-nyc")
    _, rows = split_stream(ev)
    rows = rows[:3000]
    shifted = remap_after(ev, rows, 1000, seed=7)
    before, after = rows[:1000], rows[1000:]
    assert (shifted.items[before] == ev.items[before]).all()
    assert (shifted.items[after] != ev.items[after]).all()
    untouched = np.setdiff1d(np.arange(len(ev)), after)
    assert (shifted.items[untouched] == ev.items[untouched]).all()
    assert (shifted.users == ev.users).all() and (shifted.ts == ev.ts).all()
    # one consistent renaming: a POI visited twice after the shift gets the same new id both times
    mapping = item_permutation(ev.items.tolist(), seed=7)
    assert shifted.items[after].tolist() == [mapping[i] for i in ev.items[after].tolist()]
    assert set(shifted.items[after].tolist()) <= set(ev.items.tolist())  # real POI ids, no new ones


def test_drift_position_defaults_to_the_middle_and_refuses_the_edges() -> None:
    assert drift_position(4000, None) == 2000 and drift_position(4000, 10) == 10
    for bad in (0, 4000, 5000, -1):
        with pytest.raises(SettingsError, match="--drift-at"):
            drift_position(4000, bad)
