import math
import random

import pytest

from stream.errors import StreamError
from stream.worker.prequential import Prequential, score_event


def test_score_event_ranks():
    assert score_event(["a", "b", "c"], "a", 3) == (1.0, 1.0, 1.0)
    hit, ndcg, rr = score_event(["a", "b", "c"], "c", 3)
    assert hit == 1.0 and rr == pytest.approx(1 / 3) and ndcg == pytest.approx(1 / math.log2(4))
    # beyond k is a miss even when the list is longer
    assert score_event(["a", "b", "c"], "c", 2) == (0.0, 0.0, 0.0)
    assert score_event([], "c", 10) == (0.0, 0.0, 0.0)


def test_cold_events_are_counted_apart():
    p = Prequential(k=2)
    assert p.update(None, "a") is None
    assert p.update(None, "b") is None
    assert p.n == 0 and p.cold == 2 and p.hr == 0.0
    p.update([], "a")  # an empty prediction is a prediction: a miss, not cold
    assert p.n == 1 and p.cold == 2 and p.hr == 0.0


def test_totals_match_a_direct_computation():
    rng = random.Random(0)
    items = [str(i) for i in range(20)]
    p = Prequential(k=5, window=7)
    scored = []
    for _ in range(300):
        pred = None if rng.random() < 0.1 else rng.sample(items, 8)
        actual = rng.choice(items)
        out = p.update(pred, actual)
        if pred is not None:
            scored.append(score_event(pred, actual, 5))
            assert out == scored[-1]
    s = p.summary()
    assert s["n"] == len(scored) and s["n"] + s["cold"] == 300
    assert s["hr@5"] == pytest.approx(sum(x[0] for x in scored) / len(scored))
    assert s["ndcg@5"] == pytest.approx(sum(x[1] for x in scored) / len(scored))
    assert s["mrr@5"] == pytest.approx(sum(x[2] for x in scored) / len(scored))
    last = scored[-7:]
    assert s["window_n"] == 7
    assert s["window_hr@5"] == pytest.approx(sum(x[0] for x in last) / 7)
    assert s["window_ndcg@5"] == pytest.approx(sum(x[1] for x in last) / 7)
    assert s["window_mrr@5"] == pytest.approx(sum(x[2] for x in last) / 7)


def test_window_forgets_old_events():
    p = Prequential(k=1, window=3)
    for _ in range(5):
        p.update(["a"], "a")
    for _ in range(3):
        p.update(["a"], "b")
    n, hr, ndcg, mrr = p.window_values()
    assert (n, hr, ndcg, mrr) == (3, 0.0, 0.0, 0.0)
    assert p.hr == pytest.approx(5 / 8)


def test_rates_stay_within_unit_interval_after_long_runs():
    p = Prequential(k=3, window=10)
    for i in range(5000):
        p.update(["a", "b", "c"], "abc"[i % 3] if i % 2 else "z")
    _, hr, ndcg, mrr = p.window_values()
    assert 0.0 <= hr <= 1.0 and 0.0 <= ndcg <= 1.0 and 0.0 <= mrr <= 1.0


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"window": 0}])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(StreamError):
        Prequential(**kwargs)
