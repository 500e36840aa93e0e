"""Baselines: their defining orders, full ranking, growth, scores/predict_one agreement."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from models.baselines import (
    Baseline,
    CoOccurrence,
    Markov,
    NearestDistance,
    Popularity,
    RankedItems,
    UserFrequency,
    default_baselines,
    haversine_km,
    training_events,
)
from models.data import Interactions, load_dataset
from models.errors import ModelsError
from models.evaluate import evaluate
from models.metrics import top_k
from models.splits import leave_last_out
from tests.data import needs_nyc


def toy_events(n: int = 300, n_users: int = 12, n_items: int = 20, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{x}" for x in rng.integers(0, n_users, n)], dtype=object)
    # Skewed item draws so that popularity, transitions and revisits all carry signal.
    items = np.array([f"i{x}" for x in rng.zipf(1.6, n) % n_items], dtype=object)
    lat = 40.7 + rng.random(n_items)[[int(i[1:]) for i in items]] * 0.1
    lon = -74.0 + rng.random(n_items)[[int(i[1:]) for i in items]] * 0.1
    return Interactions("toy", users, items, np.arange(n, dtype=np.float64), lat, lon)


def all_baselines(coords: np.ndarray) -> list[Baseline]:
    return [Popularity(), Popularity(window=25), Markov(), UserFrequency(), NearestDistance(coords), CoOccurrence()]


def test_popularity_counts_all_time_and_window() -> None:
    stream = [("a", 3), ("b", 3), ("a", 1), ("c", 2), ("c", 2), ("a", 2), ("b", 4)]
    p = Popularity().fit_events(stream)
    assert p.predict_one("z", k=4) == [2, 3, 1, 4]
    w = Popularity(window=3)
    for n, (u, i) in enumerate(stream):
        w.learn_one(u, i)
        recent = Counter(i for _, i in stream[max(0, n - 2) : n + 1])
        total = Counter(i for _, i in stream[: n + 1])
        want = sorted(range(1, w.n_rows), key=lambda i: (-recent[i], -total[i], i))
        assert w.predict_one("z", k=10) == want
    with pytest.raises(ModelsError, match="window"):
        Popularity(window=0)


def test_markov_uses_same_user_transitions_and_falls_back_to_popularity() -> None:
    m = Markov().fit_events([("a", 1), ("b", 5), ("a", 2), ("b", 1), ("b", 3), ("a", 1), ("a", 2)])
    # user a: 1->2, 2->1, 1->2 ; user b: 5->1, 1->3. Never 5->2 (different users).
    assert m.predict_one("q", [1], k=3) == [2, 3, 1]  # 2 (x2), 3 (x1), then popularity
    assert m.predict_one("q", [5], k=2) == [1, 2]
    assert m.predict_one("q", [4], k=3) == [1, 2, 3]  # unseen last item: popularity, ties by index
    assert m.predict_one("b", None, k=1) == [1]  # b's last learned item is 3: no successor -> popular
    assert m.predict_one("a", None, k=1) == [1]  # a's last is 2: 2->1
    s = m.scores(np.array([0, 1]), [np.array([1]), np.array([], dtype=np.int64)])
    assert torch.isfinite(s[:, 1:]).all() and s.shape == (2, 6)  # full ranking


def test_co_occurrence_counts_near_pairs_both_ways_and_reduces_to_markov() -> None:
    c = CoOccurrence(lags=(1.0, 0.5), backward=0.25, recent=(1.0, 0.5)).fit_events(
        [("a", 1), ("b", 7), ("a", 2), ("a", 3), ("b", 1)])
    # a: 1→2, 2→3 (1 each), 1→·→3 (0.5); reversed at a quarter; b: 7→1. Never 7→2 (different users).
    assert c.neighbours(1) == {2: 1.0, 3: 0.5, 7: 0.25}
    assert c.neighbours(3) == {2: 0.25, 1: 0.125}
    # after [.., 3, 1]: row of 1 (2: 1, 3: 0.5, 7: 0.25) + half the row of 3 (2: 0.125, 1: 0.0625)
    assert c.predict_one("q", [9, 3, 1], k=5) == [2, 3, 7, 1, 4]  # then unseen items by index
    # a's latest items: 3, then 2 at half weight: 3 0.5; 2 0.25 and 1 0.25 (1 is more popular)
    assert c.predict_one("a", None, k=3) == [3, 1, 2]
    c.forget_item(2)
    assert 2 not in c.neighbours(1) and c.neighbours(2) == {} and c.predict_one("a", None, k=1) == [1]  # row of 3
    ev = toy_events(seed=5)
    split = leave_last_out(ev)
    markov, plain = Markov().fit(split, events=ev), CoOccurrence((1.0,), 0.0, (1.0,)).fit(split, events=ev)
    for u in split.eval_users.tolist():
        h = split.history(u, "test")
        assert plain.predict_one(u, h, 12) == markov.predict_one(u, h, 12)
    with pytest.raises(ModelsError, match=">= 0"):
        CoOccurrence(backward=-1.0)


def test_user_frequency_orders_by_count_then_recency_then_popularity() -> None:
    uf = UserFrequency().fit_events([("x", 9), ("x", 9), ("x", 9), ("x", 8), ("y", 1), ("y", 2), ("y", 1)])
    assert uf.predict_one("n", [3, 4, 3, 5, 4, 6], k=6) == [4, 3, 6, 5, 9, 1]
    # Without a history: what learn_one saw of the user (count, then recency).
    assert uf.predict_one("y", None, k=3) == [1, 2, 9]
    assert uf.predict_one("nobody", None, k=2) == [9, 1]


def test_user_frequency_without_user_counts_ranks_histories_alike_and_keeps_no_user_state() -> None:
    ev = toy_events(400, seed=3)
    stream = [(u, int(i[1:]) + 1) for u, i in zip(ev.users.tolist(), ev.items.tolist(), strict=True)]
    counting, lean = UserFrequency(), UserFrequency(count_users=False)
    for n, (user, item) in enumerate(stream):
        counting.learn_one(user, item)
        lean.learn_one(user, item)
        hist = np.array([i for u, i in stream[max(0, n - 60): n + 1] if u == user][-8:])
        for k in (1, 5, 12):
            assert lean.predict_one(user, hist, k) == counting.predict_one(user, hist, k) == lean.predict_one_full(
                user, hist, k)
    assert not lean._user_items and counting._user_items
    with pytest.raises(ModelsError, match="pass the history"):
        lean.predict_one(stream[0][0], None, 3)


def test_nearest_distance_orders_by_haversine() -> None:
    coords = np.array([[np.nan, np.nan], [40.70, -74.00], [40.80, -74.00], [40.71, -74.00], [40.70, -74.00],
                       [np.nan, np.nan]])
    nd = NearestDistance(coords).fit_events([("u", 4), ("u", 4), ("u", 1)])
    # From item 1: itself and 4 at distance 0 (4 is more popular), then 3, then 2; 5 has no place.
    assert nd.predict_one("u", None, k=5) == [4, 1, 3, 2, 5]
    assert nd.predict_one("v", [2], k=2) == [2, 3]
    # A new item placed by learn_one's coordinates joins the ranking at its distance.
    nd.learn_one("v", 6, lat=40.79, lon=-74.0)
    assert nd.n_rows == 7 and nd.predict_one("v", [2], k=2) == [2, 6]
    assert nd.predict_one("w", [5], k=1) == [4]  # last item without coordinates: popularity
    with pytest.raises(ModelsError, match="coordinates"):
        NearestDistance(None)


def test_haversine_known_distance() -> None:
    # One degree of latitude is ~111.2 km anywhere.
    assert haversine_km(0.0, 0.0, np.array([1.0]), np.array([0.0]))[0] == pytest.approx(111.195, abs=0.01)
    assert np.isnan(haversine_km(0.0, 0.0, np.array([np.nan]), np.array([0.0]))[0])


def test_rows_grow_on_demand() -> None:
    for b in all_baselines(np.full((3, 2), 40.0)):
        b.learn_one("u", 2)
        assert b.n_rows == 3
        b.learn_one("u", 9)
        assert b.n_rows == 10
        s = b.scores(np.array([0]), [np.array([2, 12])])  # an item it never learned
        assert s.shape == (1, 13) and s[0, 0] == -np.inf
        with pytest.raises(ModelsError, match="padding"):
            b.learn_one("u", 0)


def test_predict_one_agrees_with_scores_and_ranking_is_full() -> None:
    ev = toy_events()
    split = leave_last_out(ev)
    users = split.eval_users
    hists = [split.history(int(u), "test") for u in users]
    for b in all_baselines(split.item_coords):  # type: ignore[arg-type]
        b.fit(split, events=ev)
        s = b.scores(users, hists)
        assert s.shape == (len(users), split.vocab.rows)
        assert torch.isfinite(s[:, 1:]).all()
        order = top_k(s, 10)
        for row, (u, h) in enumerate(zip(users, hists, strict=True)):
            assert b.predict_one(int(u), h, k=10) == order[row].tolist(), repr(b)


def test_fit_orders() -> None:
    ev = toy_events(seed=3)
    split = leave_last_out(ev)
    pairs = list(training_events(split, ev))
    assert len(pairs) == split.n_train_interactions
    for u in range(len(split.user_ids)):
        assert [i for uu, i in pairs if uu == u] == split.train[u].tolist()
    # Order-free baselines give the same state either way; a window needs the time order.
    for make in (Popularity, Markov, UserFrequency, CoOccurrence):
        a = make().fit(split)
        b = make().fit(split, events=ev)
        assert a.predict_one(0, split.history(0, "test"), 20) == b.predict_one(0, split.history(0, "test"), 20)
    with pytest.raises(ModelsError, match="events="):
        Popularity(window=10).fit(split)
    # fit starts afresh.
    p = Popularity().fit(split)
    p.fit(split)
    assert p._counts.sum() == split.n_train_interactions
    with pytest.raises(ModelsError, match="made from"):
        list(training_events(split, toy_events(seed=4)))


def test_default_baselines_by_data() -> None:
    split = leave_last_out(toy_events())
    assert set(default_baselines(split)) == {"popularity", "markov", "co-occurrence", "user-frequency",
                                             "nearest-distance"}
    split.item_coords = None
    assert "nearest-distance" not in default_baselines(split, popularity_window=100)
    assert "popularity@100" in default_baselines(split, popularity_window=100)


@needs_nyc
def test_reference_numbers_on_foursquare_nyc() -> None:
    """Known leave-last-out test numbers (DESIGN §4 baselines): user frequency HR@10 ~0.56 / NDCG@10
    ~0.38, popularity ~0.05 / 0.03. Loose bounds: they catch a broken ranking, not noise."""
    split = leave_last_out(load_dataset("foursquare-nyc"))
    uf = evaluate(UserFrequency().fit(split), split, "test", ks=(10,))
    pop = evaluate(Popularity().fit(split), split, "test", ks=(10,))
    assert 0.52 < uf["hr@10"] < 0.60 and 0.35 < uf["ndcg@10"] < 0.42
    assert 0.03 < pop["hr@10"] < 0.07 and 0.015 < pop["ndcg@10"] < 0.045


# -- fast predict_one (no full score row) equals the full-row ranking -------------------------------


def test_ranked_items_follow_key_desc_index_asc_under_random_updates() -> None:
    rng = np.random.default_rng(7)
    keys = np.zeros(30, dtype=np.int64)
    ranked = RankedItems()
    for step in range(600):
        if step % 50 == 0:  # the vocabulary grows (new items arrive with key 0, some touched at once)
            keys = np.concatenate([keys, np.zeros(int(rng.integers(1, 6)), dtype=np.int64)])
            if step % 100 == 0:
                keys[-1] = 3
                ranked.touch(len(keys) - 1)
        for _ in range(int(rng.integers(1, 4))):  # up and down moves, ties on purpose (small keys)
            item = int(rng.integers(1, len(keys)))
            keys[item] = max(0, keys[item] + int(rng.choice([-1, 1, 1, 2])))
            ranked.touch(item)
        if step % 7 == 0 or step > 560:
            want = (np.lexsort((np.arange(1, len(keys)), -keys[1:])) + 1).tolist()
            key = keys.tolist().__getitem__
            assert ranked.top(len(keys), key, len(keys)) == want
            assert ranked.top(len(keys), key, 5) == want[:5]


def test_many_pending_changes_rebuild_the_order() -> None:
    keys = np.arange(200, dtype=np.int64) % 7
    ranked = RankedItems()
    for i in range(1, 200):
        ranked.touch(i)
    assert ranked.top(200, lambda i: int(keys[i]), 4) == [6, 13, 20, 27]
    keys[1:] = 200 - np.arange(1, 200)
    for i in range(1, 200):
        ranked.touch(i)
    assert ranked.top(200, lambda i: int(keys[i]), 3) == [1, 2, 3]


@needs_nyc
def test_fast_predict_one_equals_full_row_on_real_nyc_events() -> None:
    """Stream real events as the worker does (learn, then predict with the latest 50 items) and
    compare with ranking the full score row, for every baseline, several k, and the
    history-less (learned state) variant."""
    events = load_dataset("foursquare-nyc").head(4000)
    ids: dict[str, int] = {}
    items = [ids.setdefault(i, len(ids) + 1) for i in events.items.tolist()]
    coords = np.full((len(ids) + 1, 2), np.nan)
    assert events.lat is not None and events.lon is not None
    lat, lon = events.lat, events.lon
    coords[items] = np.stack([lat, lon], 1)
    models = [Popularity(), Popularity(window=300), Markov(), UserFrequency(), NearestDistance(coords[:100]),
              CoOccurrence()]
    seen: dict[str, list[int]] = {}
    checked = 0
    for n, (user, item) in enumerate(zip(events.users.tolist(), items, strict=True)):
        hist = seen.setdefault(user, [])
        hist.append(item)
        for m in models:
            m.learn_one(user, item, float(lat[n]), float(lon[n]))
        if n < 3200 and n % 40:
            continue  # every event near the end, a sample before: keeps the test fast
        h = np.asarray(hist[-50:], dtype=np.int64)
        for m in models:
            for k in (1, 10, 60) if not isinstance(m, NearestDistance) else (10,):  # (its fast path is the full row)
                assert m.predict_one(user, h, k) == m.predict_one_full(user, h, k), (type(m).__name__, n, k)
            assert m.predict_one(user, None, 10) == m.predict_one_full(user, None, 10), (type(m).__name__, n)
        checked += 1
    assert checked > 800
    # k beyond the vocabulary: every item once, in full-row order
    for m in models:
        assert m.predict_one("nobody", [], 10**6) == m.predict_one_full("nobody", [], 10**6)
        assert len(m.predict_one("nobody", [], 10**6)) == m.n_rows - 1


def test_decayed_frequency_by_hand_and_limits() -> None:
    from models.baselines import DecayedFrequency, UserFrequency

    d = DecayedFrequency(half_life=2.0)
    items, w = d.weights([5, 6, 5, 7])
    # ages 3, 2, 1, 0 -> 0.5**1.5 + 0.5**0.5 for item 5, 0.5 for 6, 1 for 7
    assert items.tolist() == [5, 6, 7]
    assert w.tolist() == pytest.approx([0.5**1.5 + 0.5**0.5, 0.5, 1.0])
    assert d.predict_one("u", [5, 6, 5, 7], k=3) == [5, 7, 6]
    long = DecayedFrequency(half_life=1e6)  # no decay: the frequency order
    hist = [1, 2, 2, 3, 3, 3]
    assert long.predict_one("u", hist, k=3) == UserFrequency().predict_one("u", hist, k=3)
    with pytest.raises(ModelsError):
        DecayedFrequency(0.0)


def test_half_life_is_chosen_on_validation_only() -> None:
    from models.baselines import choose_half_life
    from models.splits import SequenceSplit
    from models.vocab import ItemVocab

    # validation target = the most recent item, test target = the most frequent: validation
    # must pick the shortest half-life whatever the test split says.
    split = SequenceSplit("t", ItemVocab("abc"), ["u"], [np.array([1, 1, 1, 2])], np.array([2]), np.array([1]))
    best, scores = choose_half_life(split, (0.5, 100.0))
    assert best == 0.5 and scores[0.5] == 1.0 and scores[100.0] < 1.0


def test_every_old_import_path_still_works() -> None:
    import models.baselines as b

    for name in ("Baseline", "Popularity", "Markov", "UserFrequency", "NearestDistance", "RankedItems",
                 "DecayedFrequency", "default_baselines", "haversine_km", "training_events", "EARTH_RADIUS_KM"):
        assert name in b.__all__ and hasattr(b, name)


def _markov_reference(events: list[tuple[str, int]], last: int, k: int) -> list[int]:
    """The unbounded first-order Markov ranking, computed from scratch: successor count of the
    same user's transitions, then all-time count, then index (the previous implementation's order)."""
    prev: dict[str, int] = {}
    trans: Counter[int] = Counter()
    counts: Counter[int] = Counter()
    for user, item in events:
        if prev.get(user) == last:
            trans[item] += 1
        prev[user] = item
        counts[item] += 1
    rows = max(counts) + 1
    return sorted(range(1, rows), key=lambda i: (-trans[i], -counts[i], i))[:k]


def test_markov_with_a_cap_that_is_not_hit_ranks_exactly_like_the_unbounded_table() -> None:
    ev = toy_events(400, n_users=15, n_items=30, seed=3)
    ids: dict[str, int] = {}
    stream = [(str(u), ids.setdefault(str(i), len(ids) + 1)) for u, i in zip(ev.users.tolist(), ev.items.tolist(), strict=True)]
    free = Markov()
    free.fit_events(stream)
    widest = max(len(free.successors(i)) for i in range(1, free.n_rows))
    assert widest >= 5  # the cap below is reached exactly, never exceeded
    capped = Markov(max_next=widest)
    for n, (user, item) in enumerate(stream):
        capped.learn_one(user, item)
        if n % 7 == 0:
            for k in (1, 10, 40):
                want = _markov_reference(stream[: n + 1], item, k)
                assert capped.predict_one(user, [item], k) == want, (n, k)
                assert capped.predict_one(user, None, k) == want
    assert capped.n_transitions == free.n_transitions


def test_markov_cap_bounds_the_table_and_evicts_the_least_frequent_successor() -> None:
    m = Markov(max_next=3)
    # After item 1: 2 four times, 3 twice, then 30 single, new successors.
    stream = []
    for n, succ in enumerate([2, 2, 3, 2, 3, 2, *range(10, 40)]):
        stream += [(f"u{n}", 1), (f"u{n}", succ)]
    m.fit_events(stream)
    row = m.successors(1)
    assert len(row) == 3 and row[2] == 4 and row[3] == 2  # the frequent ones survive the churn
    assert list(row)[-1] == 39  # the newest single one holds the last place
    assert m.n_transitions <= 3 * (m.n_rows - 1)
    assert m.predict_one("x", [1], 4) == m.predict_one_full("x", [1], 4) == [2, 3, 39, 1]
    with pytest.raises(ModelsError, match="max_next"):
        Markov(max_next=0)


def test_forget_item_removes_every_trace_of_the_index() -> None:
    ev = toy_events(300, seed=5)
    ids: dict[str, int] = {}
    stream = [(str(u), ids.setdefault(str(i), len(ids) + 1)) for u, i in zip(ev.users.tolist(), ev.items.tolist(), strict=True)]
    coords = np.column_stack([40.7 + np.arange(len(ids) + 1) * 1e-3, np.full(len(ids) + 1, -74.0)])
    gone = stream[-1][1]  # some users' last item, and a successor and predecessor of others
    for m in [*all_baselines(coords), Markov(max_next=4)]:
        m.fit_events(stream)
        m.forget_item(gone)
        assert m._counts[gone] == 0
        for user in {u for u, _ in stream}:
            assert m._previous(user) != gone
            assert m.predict_one(user, None, 10) == m.predict_one_full(user, None, 10), type(m).__name__
        if isinstance(m, Markov):
            assert not m.successors(gone) and all(gone not in m.successors(i) for i in range(1, m.n_rows))
            assert gone not in m._preds and all(gone not in p for p in m._preds.values())
        if isinstance(m, Popularity) and m.window is not None:
            assert gone not in m._recent and m._window_counts[gone] == 0
        # The index taken by a new item starts from nothing: one event = one count.
        m.learn_one("newcomer", gone)
        assert m._counts[gone] == 1
        if isinstance(m, UserFrequency):
            assert m.predict_one("newcomer", None, 1) == [gone]
            assert all(m._own(u).get(gone, [0])[0] <= 1 for u in {u for u, _ in stream})
