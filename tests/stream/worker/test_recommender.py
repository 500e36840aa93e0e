import threading

import numpy as np
import pytest

from models.hail import HAIL, HailConfig
from models.trainer import left_pad
from models.vocab import ItemVocab
from stream.errors import StreamError
from stream.worker.recommender import OnlineBaselines, OnlineRecommender

IDS = [f"i{n}" for n in range(1, 31)]


def tiny(seed=0, rows=None, max_len=8):
    cfg = HailConfig(n_peers=2, hidden=16, layers=1, max_len=max_len, dropout=0.0, seed=seed)
    return HAIL(cfg, rows if rows is not None else len(IDS) + 1)


@pytest.fixture
def vocab():
    return ItemVocab(IDS)


def test_recommend_batch_matches_the_model_and_drops_unknown_ids(vocab):
    model = tiny()
    rec = OnlineRecommender(model, vocab, "v1")
    hists = [["i1", "i2", "i3"], ["i5"], ["i1", "nope", "i2", "i3"], [f"i{n}" for n in range(1, 21)]]
    out = rec.recommend_batch(hists, k=5)
    # Reference: the model on max_len-padded index sequences (the worker pads less: same answer).
    ref_in = left_pad([vocab.lookup(h[-8:]) for h in hists[:2]] + [vocab.lookup(["i1", "i2", "i3"])]
                      + [vocab.lookup(hists[3][-8:])], 8)
    scores, idx = model.recommend(ref_in, 5)
    for n, (items, sc) in enumerate(out):
        assert items == vocab.ids_of(idx[n].tolist())
        assert sc == pytest.approx(scores[n].tolist(), abs=1e-5)
        assert sc == sorted(sc, reverse=True)
    assert out[0] == out[2]  # the unknown id is simply dropped


def test_cold_histories_use_the_fallback_or_get_nothing(vocab):
    rec = OnlineRecommender(tiny(), vocab, "v1")
    assert rec.recommend_batch([[], ["new-1", "new-2"]], k=3) == [([], []), ([], [])]
    rec.fallback = lambda k: (["i9"] * k, [1.0] * k)
    out = rec.recommend_batch([["new"], ["i1"]], k=2)
    assert out[0] == (["i9", "i9"], [1.0, 1.0])
    assert len(out[1][0]) == 2 and out[1][0] != ["i9", "i9"]  # a warm history is the model's


def test_items_beyond_the_vocabulary_are_never_returned():
    small = ItemVocab(IDS[:3])
    model = tiny(rows=len(IDS) + 1)  # grown ahead of its vocabulary
    rec = OnlineRecommender(model, small, "v1")
    (items, scores), = rec.recommend_batch([["i1", "i2"]], k=10)
    assert set(items) <= set(IDS[:3]) and len(items) == len(scores) <= 3


def test_swap_refuses_a_model_smaller_than_its_vocabulary(vocab):
    rec = OnlineRecommender(tiny(), vocab, "v1")
    with pytest.raises(StreamError, match="grow"):
        rec.swap(tiny(rows=5), vocab, "v2")
    assert rec.version == "v1"


def test_swap_is_atomic_between_batches(vocab):
    a, b = tiny(seed=1), tiny(seed=2)
    rec = OnlineRecommender(a, vocab, "a")
    hists = [["i1", "i4"], ["i7", "i2", "i9"]] * 8
    expected = {"a": rec.recommend_batch(hists, 5)}
    rec.swap(b, vocab, "b")
    expected["b"] = rec.recommend_batch(hists, 5)
    assert expected["a"] != expected["b"]
    stop = threading.Event()

    def flipper():
        n = 0
        while not stop.is_set():
            rec.swap(*((a, vocab, "a") if n % 2 else (b, vocab, "b")))
            n += 1

    t = threading.Thread(target=flipper)
    t.start()
    try:
        seen = set()
        for _ in range(40):
            version, out = rec.recommend_batch_versioned(hists, 5)
            assert out == expected[version]  # never a mix of two versions
            seen.add(version)
    finally:
        stop.set()
        t.join()
    assert seen  # at least one version answered


def test_predict_one_and_bad_k(vocab):
    rec = OnlineRecommender(tiny(), vocab, "v1")
    assert len(rec.predict_one(["i3"], k=4)) == 4
    with pytest.raises(StreamError):
        rec.recommend_batch([["i1"]], k=0)


def test_online_baselines_learn_predict_and_remember():
    b = OnlineBaselines(popularity_window=3)
    assert b.popular(5) == ([], []) and b.previous("u") is None
    for user, item in [("u", "a"), ("u", "b"), ("v", "a"), ("u", "a"), ("v", "c")]:
        b.learn_one(user, item)
    preds = b.predict_one("u", ["a", "b", "a"], k=2)
    assert set(preds) == {"popularity", "markov", "user-frequency"}
    assert preds["user-frequency"] == ["a", "b"]  # the user's own most frequent first
    assert preds["markov"][0] == "b"  # after "a" this user went to "b"
    assert preds["popularity"][0] == "a"
    assert b.previous("u") == preds
    assert b.events == 5 and len(b.vocab) == 3
    # Window of 3 = (v, a), (u, a), (v, c): "b" left the window and only fills in after them.
    assert b.popular(3)[0] == ["a", "c", "b"]


def test_popular_is_cached_until_the_next_event():
    b = OnlineBaselines(popularity_window=10)
    b.learn_one("u", "x")
    first = b.popular(2)
    assert b.popular(2) is first
    b.learn_one("u", "y")
    b.learn_one("v", "y")
    assert b.popular(2) is not first and b.popular(2)[0] == ["y", "x"]


def test_baseline_sampling_is_deterministic():
    b = OnlineBaselines(sample_every=4)
    users = [str(n) for n in range(400)]
    picked = [u for u in users if b.sampled(u)]
    assert picked == [u for u in users if b.sampled(u)]
    assert 40 < len(picked) < 160
    assert all(OnlineBaselines().sampled(u) for u in users[:20])


@pytest.mark.parametrize("kwargs", [{"names": ("nope",)}, {"sample_every": 0}])
def test_online_baselines_reject_bad_settings(kwargs):
    with pytest.raises(StreamError):
        OnlineBaselines(**kwargs)


def test_length_buckets_give_the_same_answers(vocab):
    model = tiny(max_len=8)
    hists = [IDS[: n % 9 + 1] for n in range(20)] + [["nope"]]
    one = OnlineRecommender(model, vocab, "v", length_buckets=1).recommend_batch(hists, 4)
    three = OnlineRecommender(model, vocab, "v", length_buckets=3).recommend_batch(hists, 4)
    for (i1, s1), (i3, s3) in zip(one, three, strict=True):
        assert i1 == i3 and s1 == pytest.approx(s3, abs=1e-5)
    with pytest.raises(StreamError):
        OnlineRecommender(model, vocab, "v", length_buckets=0)


def _replay(b, events, k=10, max_len=50):
    """Learn and predict per event as the worker does; every baseline's top-k and the popular list."""
    seen, out = {}, []
    for user, item in events:
        hist = seen.setdefault(user, [])
        hist.append(item)
        del hist[:-max_len]
        b.learn_one(user, item)
        out.append((b.predict_one(user, hist, k), b.popular(k)))
    return out


def _stream(n, users, items, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, users, n), rng.zipf(1.3, n) % items, strict=True)]


def test_caps_that_are_not_hit_change_no_prediction():
    events = _stream(3000, users=60, items=400, seed=1)
    free = OnlineBaselines(popularity_window=200)
    reference = _replay(free, events)
    markov = free.baseline("markov")
    widest = max(len(markov.successors(i)) for i in range(1, markov.n_rows))
    assert widest > 3  # the caps below are reached exactly (not exceeded): nothing may change
    capped = OnlineBaselines(popularity_window=200, max_items=len(free.vocab), max_next=widest, max_users=60)
    assert _replay(capped, events) == reference


def test_popular_equals_ranking_the_full_row():
    from models.metrics import top_k_row

    b = OnlineBaselines(popularity_window=50)
    for n, (user, item) in enumerate(_stream(600, users=20, items=80, seed=2)):
        b.learn_one(user, item)
        if n % 25 == 0:
            pop = b._popularity
            row = pop.scores(np.zeros(1, dtype=np.int64), [np.zeros(0, dtype=np.int64)])[0].numpy()
            top = top_k_row(row, 7)
            assert b.popular(7) == (b.vocab.ids_of(top), [float(row[i]) for i in top])


def test_state_stays_bounded_when_the_caps_are_hit():
    b = OnlineBaselines(popularity_window=100, max_users=40, max_items=60, max_next=4)
    # 80% of the events by 10 regular users, the rest by 2,000 others; 60% on 30 hot items (their
    # Markov rows fill up), the rest on 5,000 rare ones (they keep the vocabulary recycling)
    rng = np.random.default_rng(4)
    events = [(f"u{rng.integers(10)}" if rng.random() < 0.8 else f"v{rng.integers(2000)}",
               f"h{rng.integers(30)}" if rng.random() < 0.6 else f"i{rng.integers(5000)}") for _ in range(20000)]
    markov, freq, pop = b.baseline("markov"), b.baseline("user-frequency"), b.baseline("popularity")
    for n, (user, item) in enumerate(events):
        b.learn_one(user, item)
        if n % 1000 == 999:
            assert len(b.vocab) == 60 and markov.n_rows <= 61 and pop.n_rows <= 61
            assert len(markov._trans) <= 60 and markov.n_transitions <= 60 * 4
            assert sum(len(p) for p in markov._preds.values()) == markov.n_transitions
            assert len(freq._forgotten_at) <= 60 and len(markov._generation) <= 60
            assert len(b._recent) <= 40 and len(b._previous) <= 40
            assert not freq._user_items  # it ranks the history it is given: no per-user counts
            # Fewer items than the window: an evicted item's events leave the window with it.
            assert len(pop._recent) <= 100 and pop._window_counts.sum() == len(pop._recent)
            hist = [i for u, i in events[max(0, n - 200): n + 1] if u == user][-10:]
            preds = b.predict_one(user, hist, 10)
            for name, items in preds.items():
                assert len(items) == 10 and all(i in b.vocab for i in items), name
                m = b.baseline(name)
                h = b.vocab.lookup(hist)
                assert m.predict_one(user, h[h > 0], 10) == m.predict_one_full(user, h[h > 0], 10), name
    assert b._items.recycled > 9000 and max(len(markov.successors(i)) for i in range(1, 61)) == 4


def test_online_baselines_take_their_caps_from_the_settings():
    from stream.settings import Settings
    from stream.worker.runtime import build_runtime

    settings = Settings.from_env({"HAILSTREAM_BASELINE_MAX_ITEMS": "123", "HAILSTREAM_BASELINE_MAX_NEXT": "7"})
    runtime = build_runtime(settings, OnlineRecommender(tiny(), ItemVocab(IDS), "v"), offload=False)
    assert runtime.baselines is not None
    assert runtime.baselines.max_items == 123 and runtime.baselines.baseline("markov").max_next == 7
    with pytest.raises(StreamError, match="max_items"):
        OnlineBaselines(max_items=-1)
