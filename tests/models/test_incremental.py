"""Incremental inference (models.incremental) is exact against the full re-encode: identical top-k
on a replay of real NYC events, scores within float tolerance (GRU4Rec, and SASRec with positions
from the start, each with and without the copy output); its cache is bounded and per version."""

import numpy as np
import pytest
import torch

from models.data import load_foursquare_nyc
from models.errors import ModelsError
from models.hail import HAIL, HailConfig
from models.incremental import IncrementalScorer
from models.padding import window_start
from models.vocab import ItemVocab
from stream.worker.recommender import OnlineRecommender
from tests.data import needs_nyc


def gru_model(rows, max_len=20, seed=0, peers=2, layers=1, encoder="gru4rec", **kw):
    if encoder == "sasrec":
        kw.setdefault("positions", "start")
    cfg = HailConfig(n_peers=peers, encoders=(encoder,), hidden=32, layers=layers, max_len=max_len,
                     dropout=0.0, seed=seed, **kw)
    model = HAIL(cfg, rows)
    with torch.no_grad():  # spread the scores, as a trained model does: no near-ties in the top-k
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval()


def replay(rec, users, items, max_len, batch=64, stride=0):
    hist: dict[str, list[str]] = {}
    out = []
    for start in range(0, len(users), batch):
        histories = []
        for u, i in zip(users[start:start + batch], items[start:start + batch], strict=True):
            h = hist.setdefault(u, [])
            h.append(i)
            histories.append(h[window_start(len(h), max_len, stride):])
        out.extend(rec.recommend_batch(histories, k=10))
    return out


CASES = [("gru4rec", 1, torch.float32, 1e-4, "none"), ("gru4rec", 2, torch.float32, 1e-4, "none"),
         ("gru4rec", 2, torch.float64, 1e-10, "none"), ("gru4rec", 1, torch.float32, 1e-4, "copy"),
         ("sasrec", 2, torch.float32, 5e-4, "none"), ("sasrec", 2, torch.float64, 1e-10, "none"),
         ("sasrec", 2, torch.float32, 2e-3, "copy"), ("sasrec", 2, torch.float64, 1e-10, "copy")]


@needs_nyc
@pytest.mark.parametrize(("encoder", "layers", "dtype", "rel", "history"), CASES)
def test_replay_of_nyc_events_gives_the_full_re_encodes_answers(encoder, layers, dtype, rel, history):
    """float32: chained steps round differently from one full run (log-probs ~10 agree to ~2e-5
    relative for GRU4Rec, ~1e-4 for SASRec with its weights scaled 8x, up to ~1e-3 with the copy
    output, depending on the batch shapes); float64 shows the two are the same computation."""
    ev = load_foursquare_nyc()
    n = 2500
    users, items = list(ev.users[:n]), list(ev.items[:n])
    vocab = ItemVocab(sorted(set(items)))
    model = gru_model(vocab.rows, layers=layers, encoder=encoder, history=history).to(dtype)
    full = replay(OnlineRecommender(model, vocab, "v"), users, items, 20)
    rec = OnlineRecommender(model, vocab, "v", state_cache=100_000)
    inc = replay(rec, users, items, 20)
    scorer = rec.incremental()
    assert scorer is not None and scorer.hits > n // 2  # most events stepped, windows also slid
    assert scorer.misses > 0
    for (fi, fs), (ii, is_) in zip(full, inc, strict=True):
        assert ii == fi
        assert is_ == pytest.approx(fs, rel=rel)


@needs_nyc
@pytest.mark.parametrize("one_group", [0, 10_000])
def test_chains_stepped_by_length_or_as_one_group_give_the_full_re_encodes_answers(monkeypatch, one_group):
    """A batch's chains go as one padded group up to ONE_GROUP_CHAINS, by length above: both exact."""
    import models.incremental

    monkeypatch.setattr(models.incremental, "ONE_GROUP_CHAINS", one_group)
    ev = load_foursquare_nyc()
    users, items = list(ev.users[:2500]), list(ev.items[:2500])
    vocab = ItemVocab(sorted(set(items)))
    model = gru_model(vocab.rows, layers=2, encoder="sasrec").to(torch.float64)
    full = replay(OnlineRecommender(model, vocab, "v"), users, items, 20, batch=128)
    rec = OnlineRecommender(model, vocab, "v", state_cache=100_000)
    inc = replay(rec, users, items, 20, batch=128)
    assert rec.incremental().hits > 1250
    for (fi, fs), (ii, is_) in zip(full, inc, strict=True):
        assert ii == fi
        assert is_ == pytest.approx(fs, rel=1e-10)


@needs_nyc
def test_a_strided_window_keeps_stepping_users_whose_history_is_longer_than_max_len():
    """A mature stream: with the last-max_len window most events slide and miss; with the worker's
    strided window (HAILSTREAM_WINDOW_STRIDE) one in ``stride`` does, and the answers are still
    the full re-encode's of the same windows."""
    ev = load_foursquare_nyc()
    users, items = list(ev.users[:6000]), list(ev.items[:6000])
    vocab = ItemVocab(sorted(set(items)))
    model = gru_model(vocab.rows, max_len=10, encoder="sasrec", layers=2)
    shares = {}
    for stride in (0, 5):
        full = replay(OnlineRecommender(model, vocab, "v"), users, items, 10, stride=stride)
        rec = OnlineRecommender(model, vocab, "v", state_cache=100_000)
        inc = replay(rec, users, items, 10, stride=stride)
        scorer = rec.incremental()
        shares[stride] = scorer.hits / (scorer.hits + scorer.misses)
        for (fi, fs), (ii, is_) in zip(full, inc, strict=True):
            assert ii == fi
            assert is_ == pytest.approx(fs, rel=5e-4)
    assert shares[0] < 0.6 and shares[5] > 0.75  # measured 0.54 and 0.81


@pytest.mark.parametrize(("encoder", "history"), [("gru4rec", "none"), ("sasrec", "none"), ("sasrec", "copy")])
def test_logits_match_log_probs_with_a_cached_prefix_a_batch_chain_and_a_chosen_peer(encoder, history):
    model = gru_model(40, max_len=6, output_bias=True, encoder=encoder, layers=2, history=history)
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


@pytest.mark.parametrize("peers", [1, 2, 3])
@pytest.mark.parametrize("block", [None, 1, 3])
def test_top_k_is_the_top_of_log_probs_in_any_block_size(peers, block):
    """The worker's path (blocks of rows, the peer mean taken of the winners only) gives the top-k
    of the full mean log-probabilities: the same floats in one block, the same items and scores
    up to the product's rounding in smaller ones (a GEMM over fewer rows may round differently)."""
    from models.incremental import mean_log_softmax_topk

    model = gru_model(40, max_len=6, output_bias=True, peers=peers, distill="med" if peers > 1 else "none")
    with torch.no_grad():
        model.item_bias.normal_()
    rng = np.random.default_rng(1)
    batch = [rng.integers(1, 40, size=n) for n in (1, 3, 6, 2, 5, 4, 6)]
    ref = torch.topk(IncrementalScorer(model, capacity=0).log_probs(batch), 7, dim=-1)
    inc = IncrementalScorer(model, capacity=50)
    values, indices = inc.top_k(batch, 7)
    assert torch.equal(indices, ref.indices) and torch.equal(values, ref.values)
    assert (indices > 0).all()  # never the padding column
    hidden = inc._hidden(batch)
    blocked = mean_log_softmax_topk(hidden, *inc._weights, 7, block=block)
    assert torch.equal(blocked[1], ref.indices)
    torch.testing.assert_close(blocked[0], ref.values, atol=1e-5, rtol=1e-6)


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


def test_sasrec_states_grow_with_the_sequence_and_max_bytes_bounds_them():
    model = gru_model(30, max_len=8, encoder="sasrec", layers=2)  # 2 peers, 2 layers, hidden 32
    inc = IncrementalScorer(model, capacity=1000)
    inc.log_probs([np.arange(1, 1 + n) for n in (1, 4)])
    per_item = 2 * 2 * 2 * 32 * 4  # peers x layers x (K, V) x hidden x float32
    assert inc.state_bytes == 5 * per_item
    bounded = IncrementalScorer(model, capacity=1000, max_bytes=6 * per_item)
    bounded.log_probs([np.arange(1, 1 + n) for n in (1, 2, 3)])  # 6 items' states fit
    bounded.log_probs([np.arange(10, 14)])  # 4 more: the oldest go first
    assert bounded.state_bytes == 4 * per_item and len(bounded) == 1  # 1 + 2 + 3 + 4 > 6, 3 + 4 > 6
    with pytest.raises(ModelsError, match="max_bytes"):
        IncrementalScorer(model, capacity=10, max_bytes=-1)


def test_models_without_an_exact_state_are_refused_or_served_in_full():
    sas = HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0, positions="end"), 10).eval()
    bert = HAIL(HailConfig(encoders=("bert4rec",), hidden=8, layers=1, max_len=4, positions="start"), 10).eval()
    for m in (sas, bert):
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
    assert rec.cache_stats() == {"version": "v2", "entries": 1, "bytes": second.state_bytes, "hits": 0, "misses": 1}
    new.grow(vocab.rows + 5)
    rec.recommend_batch([["i1", "i2", "i3", "i4"]], 3)
    assert second.misses == 2 and second.hits == 0
