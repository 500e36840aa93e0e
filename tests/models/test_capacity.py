"""The bounded vocabulary: growth, least-recently-seen recycling, refusal, and the model surgery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.capacity import ItemCapacity, RecyclingVocab, candidate_from, changed_rows, reset_rows
from models.checkpoint import load_checkpoint, save_checkpoint
from models.errors import ModelsError
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab


def _model(rows: int) -> HAIL:
    return HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, dropout=0.0), rows)


def test_unbounded_grows_and_keeps_indices() -> None:
    cap = ItemCapacity(ItemVocab(["a"]))
    adm = cap.observe_many(["a", "b", "c", "b"])
    assert [a.index for a in adm] == [1, 2, 3, 2]
    assert [a.new for a in adm] == [False, True, True, False]
    assert cap.grown == 2 and cap.recycled == 0 and len(cap.vocab) == 3


def test_recycles_least_recently_seen() -> None:
    cap = ItemCapacity(capacity=3)
    cap.observe_many(["a", "b", "c", "a"])  # b is now the least recently seen
    adm = cap.observe("d")
    assert (adm.index, adm.new, adm.evicted) == (2, True, "b")
    assert cap.vocab.to_list() == ["a", "d", "c"]
    assert "b" not in cap.vocab and cap.vocab.index("d") == 2
    # b comes back: it takes the next least recently seen row (c's)
    assert cap.observe("b").evicted == "c"
    assert len(cap.vocab) == 3  # bounded


def test_initial_items_are_evicted_first_in_index_order() -> None:
    cap = ItemCapacity(ItemVocab(["x", "y", "z"]), capacity=3)
    cap.observe("x")  # seen on the stream: younger than y and z
    assert cap.observe("n1").evicted == "y"
    assert cap.observe("n2").evicted == "z"
    assert cap.observe("n3").evicted == "x"


def test_min_idle_refuses_instead_of_evicting_recent_items() -> None:
    cap = ItemCapacity(capacity=2, min_idle=5)
    cap.observe_many(["a", "b"])
    adm = cap.observe("c")
    assert adm.index == 0 and not adm.new and cap.refused == 1
    assert "c" not in cap.vocab
    cap.observe_many(["b"] * 5)  # "a" now idle for more than 5 events
    assert cap.observe("c").evicted == "a"


def test_bounded_memory_on_an_endless_stream() -> None:
    cap = ItemCapacity(capacity=50)
    rng = np.random.default_rng(0)
    for item in rng.integers(0, 10_000, size=5000):
        cap.observe(f"i{item}")
    assert len(cap.vocab) == 50 and cap.vocab.rows == 51
    assert len({cap.vocab.index(i) for i in cap.vocab.to_list()}) == 50


def test_capacity_smaller_than_vocab_is_refused() -> None:
    with pytest.raises(ModelsError, match="raise the capacity"):
        ItemCapacity(ItemVocab("abc"), capacity=2)


def test_recycling_vocab_round_trips_through_a_checkpoint(tmp_path) -> None:
    v = RecyclingVocab(["a", "b", "c"])
    v.recycle(2, "z")
    model = _model(v.rows)
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model, v))
    assert ckpt.vocab.to_list() == ["a", "z", "c"] and ckpt.vocab.index("z") == 2
    with pytest.raises(ModelsError, match="already has index"):
        v.recycle(1, "c")


def test_changed_rows_and_candidate_surgery() -> None:
    live_vocab = ItemVocab(["a", "b", "c"])
    live = _model(live_vocab.rows)
    cap = ItemCapacity(live_vocab, capacity=4)
    cap.observe_many(["a", "c", "d"])  # d grows the table to 4 items
    cap.observe("e")  # at capacity: b (never seen) is recycled for e
    vocab = cap.vocab
    assert changed_rows(live_vocab, vocab).tolist() == [2]
    before = [p.item_emb.weight.detach().clone() for p in live.networks]
    cand = candidate_from(live, live_vocab, vocab, seed=1)
    assert cand.n_rows == vocab.rows == 5
    for peer, old, new in zip(live.networks, before, cand.networks, strict=True):
        assert torch.equal(peer.item_emb.weight, old)  # the live model is untouched
        w = new.item_emb.weight.detach()
        assert torch.equal(w[[0, 1, 3]], old[[0, 1, 3]])  # untouched rows are bit-identical
        assert not torch.equal(w[2], old[2])  # the recycled row is re-initialised
        assert float(w[2].abs().max()) < 0.2


def test_reset_rows_rejects_padding() -> None:
    with pytest.raises(ModelsError):
        reset_rows(_model(4), [0])
