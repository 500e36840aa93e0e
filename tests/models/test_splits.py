import numpy as np
import pytest

from models.data import Interactions, load_dataset
from models.errors import DataError
from models.splits import leave_last_out
from tests.data import needs_nyc

pytestmark = needs_nyc


@pytest.fixture(scope="module")
def nyc():
    return load_dataset("foursquare-nyc")


def test_split_holds_out_the_last_two_events_of_each_user(nyc):
    split = leave_last_out(nyc)
    per_user: dict[str, list[tuple[float, int]]] = {}
    idx = split.vocab.lookup(nyc.items.tolist())
    for u, i, t in zip(nyc.users.tolist(), idx.tolist(), nyc.ts.tolist(), strict=True):
        per_user.setdefault(u, []).append((t, i))
    for n, u in enumerate(split.user_ids):
        events = per_user[u]
        times = [t for t, _ in events]
        assert times == sorted(times), "events of a user must be in time order"
        items = [i for _, i in events]
        if len(items) >= 3:
            # the held-out interactions are exactly the two last ones, and only they are held out
            assert split.train[n].tolist() == items[:-2]
            assert (split.valid_target[n], split.test_target[n]) == (items[-2], items[-1])
        else:
            assert split.test_target[n] == 0 and split.train[n].tolist() == items


def test_no_held_out_interaction_leaks_into_training(nyc):
    split = leave_last_out(nyc)
    n_train = split.n_train_interactions
    n_held = 2 * len(split.eval_users)
    assert n_train + n_held == len(nyc)
    # the validation target is the last event before the test target: training never extends past it
    for u in split.eval_users[:200]:
        hist = split.history(int(u), "test")
        assert hist[-1] == split.valid_target[u]
        assert len(hist) == len(split.train[u]) + 1


def test_vocabulary_covers_all_items_and_coordinates(nyc):
    split = leave_last_out(nyc)
    assert len(split.vocab) == nyc.n_items == 4988
    assert split.item_coords is not None and split.item_coords.shape == (split.vocab.rows, 2)
    assert np.isnan(split.item_coords[0]).all() and not np.isnan(split.item_coords[1:]).any()


def test_empty_data_is_a_clear_error():
    empty = Interactions("e", np.array([], dtype=object), np.array([], dtype=object), np.array([]))
    with pytest.raises(DataError, match="empty"):
        leave_last_out(empty)
