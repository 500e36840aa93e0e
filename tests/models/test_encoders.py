"""Encoders: causality, padding invariance, shared-embedding scoring, growth."""

from __future__ import annotations

import pytest
import torch

from models.encoders import GRU4RecEncoder, SASRecEncoder, make_encoder
from models.errors import ModelsError
from tests.data import needs_nyc

KINDS = ["sasrec", "gru4rec", "sasrec-start"]


def build(kind: str, n_rows: int = 12, max_len: int = 8, dropout: float = 0.0, seed: int = 0):
    """``kind`` is an encoder name, or "sasrec-start" for SASRec with positions from the start."""
    torch.manual_seed(seed)
    name, _, positions = kind.partition("-")
    return make_encoder(name, n_rows, hidden=16, layers=2, heads=2, dropout=dropout, max_len=max_len,
                        positions=positions or "end").eval()


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_padding_column(kind: str) -> None:
    enc = build(kind)
    seq = torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0, 0, 7]])
    h = enc.hidden_states(seq)
    assert h.shape == (2, 8, 16)
    torch.testing.assert_close(enc.encode(seq), h[:, -1])
    logits = enc.logits(enc.encode(seq))
    assert logits.shape == (2, 12)
    assert torch.isneginf(logits[:, 0]).all() and torch.isfinite(logits[:, 1:]).all()
    # the one scoring place is the shared item table
    torch.testing.assert_close(logits[:, 1:], enc.encode(seq) @ enc.item_emb.weight[1:].T)


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind: str) -> None:
    enc = build(kind)
    a = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    b = a.clone()
    b[0, 5] = 9  # change position 5
    ha, hb = enc.hidden_states(a), enc.hidden_states(b)
    torch.testing.assert_close(ha[:, :5], hb[:, :5])
    assert not torch.allclose(ha[:, 5:], hb[:, 5:])


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_does_not_change_the_last_state(kind: str) -> None:
    enc = build(kind)
    items = [3, 1, 4, 1, 5]
    short = torch.tensor([items])
    padded = torch.tensor([[0, 0, 0, *items]])
    mixed = torch.tensor([[0, 0, 0, *items], [2, 7, 1, 8, 2, 8, 1, 8]])  # batch with another row
    ref = enc.encode(short)
    torch.testing.assert_close(enc.encode(padded), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.encode(mixed)[:1], ref, atol=1e-5, rtol=1e-5)
    # and every real position, not just the last
    torch.testing.assert_close(enc.hidden_states(padded)[:, 3:], enc.hidden_states(short), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_all_padding_row_is_finite(kind: str) -> None:
    enc = build(kind)
    h = enc.hidden_states(torch.zeros(2, 8, dtype=torch.long))
    assert torch.isfinite(h).all()


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_only_in_train_mode(kind: str) -> None:
    enc = build(kind, dropout=0.5)
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]])
    torch.testing.assert_close(enc.encode(seq), enc.encode(seq))
    enc.train()
    assert not torch.allclose(enc.encode(seq), enc.encode(seq))


@pytest.mark.parametrize("kind", KINDS)
def test_grow_keeps_old_rows_bit_identical(kind: str) -> None:
    enc = build(kind)
    old = enc.item_emb.weight.detach().clone()
    seq = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    before = enc.logits(enc.encode(seq)).detach()
    enc.grow(20, torch.Generator().manual_seed(1))
    new = enc.item_emb.weight
    assert new.shape == (20, 16) and enc.n_rows == 20
    assert torch.equal(new[:12], old)
    assert new.requires_grad
    std = float(new[12:].detach().std())
    assert 0.005 < std < 0.05  # drawn like the first rows (normal, std 0.02)
    after = enc.logits(enc.encode(torch.tensor([[0, 0, 1, 2, 3, 4, 5, 19]])))
    assert after.shape == (1, 20)
    assert torch.equal(enc.logits(enc.encode(seq))[:, :12], before)
    enc.grow(20)  # same size: no-op
    with pytest.raises(ModelsError, match="shrink"):
        enc.grow(5)


def test_make_encoder_and_limits() -> None:
    assert isinstance(build("sasrec"), SASRecEncoder)
    assert isinstance(build("gru4rec"), GRU4RecEncoder)
    with pytest.raises(ModelsError, match="unknown encoder"):
        make_encoder("transformer-xl", 10, 8, 1, 1, 0.0, 4)
    with pytest.raises(ModelsError, match="divisible"):
        make_encoder("sasrec", 10, 8, 1, 3, 0.0, 4)
    with pytest.raises(ModelsError, match="max_len"):
        build("sasrec", max_len=4).encode(torch.ones(1, 5, dtype=torch.long))


# -- the eval-mode serving path of SASRec (last query only) equals the reference path ------------


def _reference_last(enc: SASRecEncoder, seq: torch.Tensor) -> torch.Tensor:
    """The all-positions path the fast ``encode`` replaces at eval time."""
    return enc.hidden_states(seq)[:, -1]


@pytest.mark.parametrize(("layers", "heads"), [(1, 1), (2, 2), (3, 4)])
def test_sasrec_fast_encode_equals_reference_on_random_padding(layers: int, heads: int) -> None:
    torch.manual_seed(layers)
    enc = make_encoder("sasrec", 40, hidden=16, layers=layers, heads=heads, dropout=0.3, max_len=12).eval()
    assert isinstance(enc, SASRecEncoder)
    lengths = torch.randint(0, 13, (64,))
    lengths[0], lengths[1] = 0, 12  # an all-padding row and a full one
    seq = torch.randint(1, 40, (64, 12))
    seq[torch.arange(12).expand(64, 12) < (12 - lengths).unsqueeze(1)] = 0
    ref = _reference_last(enc, seq)
    torch.testing.assert_close(enc.encode(seq), ref, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # as the worker calls it; cached masks must work in both modes
        torch.testing.assert_close(enc.encode(seq), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.encode(seq), ref, atol=1e-5, rtol=1e-5)
    # a shape first seen under inference_mode (its cached masks are inference tensors) still
    # works outside it, with autograd on
    with torch.inference_mode():
        first = enc.encode(seq[:, 1:])
    torch.testing.assert_close(enc.encode(seq[:, 1:]), first)
    # leading all-padding columns are dropped; the answer stays the same
    short = seq[lengths.argsort(descending=False)[:32]]
    torch.testing.assert_close(enc.encode(short), _reference_last(enc, short), atol=1e-5, rtol=1e-5)


def test_sasrec_fast_encode_is_eval_only() -> None:
    """Training keeps the reference path: gradients and dropout of every position."""
    enc = build("sasrec", dropout=0.0).train()
    seq = torch.tensor([[9, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 7, 8]])
    torch.manual_seed(0)
    a = enc.encode(seq)
    torch.testing.assert_close(a, enc.hidden_states(seq)[:, -1])
    (a * torch.randn(a.shape)).sum().backward()  # (a plain sum through LayerNorm has zero gradient)
    grad = enc.pos_emb.weight.grad
    assert grad is not None and grad[8].abs().sum() > 0  # position 8 (the oldest slot of a full row)
    assert enc.ffs[0].net[0].weight.grad is not None


@needs_nyc
def test_hail_recommend_equals_reference_on_real_histories() -> None:
    """HAIL.log_probs / recommend on real Foursquare NYC histories (a full vocabulary, ragged
    lengths) agree with log-softmax over the reference all-positions encoder."""
    from models.data import load_dataset
    from models.hail import HAIL, HailConfig
    from models.trainer import left_pad
    from models.vocab import ItemVocab

    events = load_dataset("foursquare-nyc").head(6000)
    vocab = ItemVocab(events.items.tolist())
    idx = vocab.lookup(events.items.tolist())
    seen: dict[str, list[int]] = {}
    histories = []
    for user, item in zip(events.users.tolist(), idx.tolist(), strict=True):
        seen.setdefault(user, []).append(int(item))
        histories.append(seen[user][-20:])
    batch = [torch.tensor(h).numpy() for h in histories[-128:]]
    model = HAIL(HailConfig(n_peers=2, hidden=32, layers=2, heads=2, max_len=20, seed=3), vocab.rows).eval()
    seqs = left_pad(batch, 20)
    ref = torch.stack(
        [torch.log_softmax(p.logits(_reference_last(p, seqs)), -1) for p in model.networks]  # type: ignore[arg-type]
    ).mean(0)
    with torch.inference_mode():
        got = model.log_probs(seqs)
        scores, top = model.recommend(seqs, 10)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    ref_scores, ref_top = torch.topk(ref, 10, dim=-1)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)
    # top-10 sets agree except where two scores tie within float rounding
    differ = (top != ref_top).any(1)
    assert int(differ.sum()) <= 2


def test_start_positions_keep_every_earlier_state_when_an_item_is_appended() -> None:
    """The precondition of a key/value cache: with positions from the start, the states of a
    sequence's prefix are the prefix's own states; with positions from the end they all change."""
    items = [3, 1, 4, 1, 5, 9]
    start, end = build("sasrec-start"), build("sasrec")
    whole = torch.tensor([items])
    prefix = torch.tensor([items[:-1]])
    torch.testing.assert_close(start.hidden_states(whole)[:, :-1], start.hidden_states(prefix), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(end.hidden_states(whole)[:, :-1], end.hidden_states(prefix), atol=1e-3)


def test_start_positions_number_the_real_items_from_one() -> None:
    enc = build("sasrec-start")
    seq = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
    assert enc.positions_of(seq).tolist() == [[0, 0, 0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]]
    assert build("sasrec").positions_of(seq)[0].tolist() == [0, 0, 0, 5, 4, 3, 2, 1]
    with pytest.raises(ModelsError, match="positions must be one of"):
        make_encoder("sasrec", 10, 8, 1, 1, 0.0, 4, positions="middle")
