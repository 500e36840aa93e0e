"""Incremental inference (models.incremental) is exact against the full re-encode: identical top-k
on a replay of real NYC events, scores within float tolerance; its cache is bounded and per version."""

import numpy as np
import pytest
import torch

from models.data import load_foursquare_nyc
from models.errors import ModelsError
from models.hail import HAIL, HailConfig
from models.incremental import IncrementalScorer
from models.vocab import ItemVocab
from stream.worker.recommender import OnlineRecommender
from tests.data import needs_nyc


def gru_model(rows, max_len=20, seed=0, peers=2, layers=1, **kw):
    cfg = HailConfig(n_peers=peers, encoders=("gru4rec",), hidden=32, layers=layers, max_len=max_len,
                     dropout=0.0, seed=seed, **kw)
    model = HAIL(cfg, rows)
    with torch.no_grad():  # spread the scores, as a trained model does: no near-ties in the top-k
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval()


def replay(rec, users, items, max_len, batch=64):
    hist: dict[str, list[str]] = {}
    out = []
    for start in range(0, len(users), batch):
        histories = []
        for u, i in zip(users[start:start + batch], items[start:start + batch], strict=True):
            h = hist.setdefault(u, [])
            h.append(i)
            del h[:-max_len]
            histories.append(list(h))
        out.extend(rec.recommend_batch(histories, k=10))
    return out


@needs_nyc
@pytest.mark.parametrize(("layers", "dtype", "rel"), [(1, torch.float32, 1e-4), (2, torch.float32, 1e-4),
                                                      (2, torch.float64, 1e-10)])
def test_replay_of_nyc_events_gives_the_full_re_encodes_answers(layers, dtype, rel):
    """float32: chained GRU steps round differently from one packed run (log-probs ~10 agree to
    ~2e-5 relative); float64 shows the two are the same computation."""
    ev = load_foursquare_nyc()
    n = 2500
    users, items = list(ev.users[:n]), list(ev.items[:n])
    vocab = ItemVocab(sorted(set(items)))
    model = gru_model(vocab.rows, layers=layers).to(dtype)
    full = replay(OnlineRecommender(model, vocab, "v"), users, items, 20)
    rec = OnlineRecommender(model, vocab, "v", state_cache=100_000)
    inc = replay(rec, users, items, 20)
    scorer = rec.incremental()
    assert scorer is not None and scorer.hits > n // 2  # most events stepped, windows also slid
    assert scorer.misses > 0
    for (fi, fs), (ii, is_) in zip(full, inc, strict=True):
        assert ii == fi
        assert is_ == pytest.approx(fs, rel=rel)


def test_logits_match_log_probs_with_a_cached_prefix_a_batch_chain_and_a_chosen_peer():
    model = gru_model(40, max_len=6, output_bias=True)
    with torch.no_grad():
        model.item_bias.normal_()
    rng = np.random.default_rng(0)
    seq = rng.integers(1, 40, size=9)
    for peer in (None, 1):
        inc = IncrementalScorer(model, capacity=50, peer=peer)
        # one batch holding a user's three successive windows (the later ones step from the earlier)
        batch = [seq[:2], seq[:3], seq[:4], seq[3:9]]
        lp = inc.log_probs(batch)
        for row, s in zip(lp, batch, strict=True):
            ref = model.log_probs(torch.as_tensor(s).unsqueeze(0), peer=peer)[0]
            torch.testing.assert_close(row, ref, atol=1e-5, rtol=1e-5)
        assert inc.hits == 2 and inc.misses == 2


def test_cache_is_bounded_and_measured():
    model = gru_model(30, max_len=5)
    inc = IncrementalScorer(model, capacity=3)
    inc.log_probs([np.array([i]) for i in range(1, 10)])
    assert len(inc) == 3
    assert 300 < inc.bytes_per_entry() < 5000
    inc.clear()
    inc.log_probs([np.arange(1, 6)])  # a full window (max_len 5): its user's next window slides
    assert len(inc) == 0
    off = IncrementalScorer(model, capacity=0)
    off.log_probs([np.array([1]), np.array([1, 2])])
    assert len(off) == 0


def test_models_without_an_exact_state_are_refused_or_served_in_full():
    sas = HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), 10).eval()
    copy = HAIL(HailConfig(encoders=("gru4rec",), hidden=8, layers=1, max_len=4, history="copy"), 10).eval()
    for m in (sas, copy):
        assert not IncrementalScorer.supports(m)
        with pytest.raises(ModelsError):
            IncrementalScorer(m, 10)
    vocab = ItemVocab([f"i{n}" for n in range(1, 10)])
    rec = OnlineRecommender(sas, vocab, "v", state_cache=100)
    assert rec.incremental() is None
    assert rec.recommend_batch([["i1", "i2"]], 3) == OnlineRecommender(sas, vocab, "v").recommend_batch([["i1", "i2"]], 3)


def test_a_swap_and_a_grown_table_start_an_empty_cache():
    vocab = ItemVocab([f"i{n}" for n in range(1, 20)])
    rec = OnlineRecommender(gru_model(vocab.rows), vocab, "v1", state_cache=100)
    rec.recommend_batch([["i1", "i2"]], 3)
    first = rec.incremental()
    assert first is not None and len(first) == 1
    new = gru_model(vocab.rows, seed=5)
    rec.swap(new, vocab, "v2")
    second = rec.incremental()
    assert second is not first and len(second) == 0
    got = rec.recommend_batch([["i1", "i2", "i3"]], 3)
    assert got == OnlineRecommender(new, vocab, "v2").recommend_batch([["i1", "i2", "i3"]], 3) or \
        got[0][0] == OnlineRecommender(new, vocab, "v2").recommend_batch([["i1", "i2", "i3"]], 3)[0][0]
    assert second.misses == 1  # not stepped from the old version's state
    new.grow(vocab.rows + 5)
    rec.recommend_batch([["i1", "i2", "i3", "i4"]], 3)
    assert second.misses == 2 and second.hits == 0
