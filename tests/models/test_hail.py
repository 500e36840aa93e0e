"""The HAIL ensemble: config, per-peer seeds, the training loss switch, prediction, growth."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F

from models.encoders import GRU4RecEncoder, SASRecEncoder
from models.errors import ModelsError
from models.hail import HAIL, HailConfig

SMALL = HailConfig(n_peers=2, hidden=16, layers=1, heads=1, dropout=0.0, max_len=6, med_topk=3)
SEQS = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 5, 6, 7, 8, 9], [0, 0, 0, 0, 2, 3]])
TARGETS = torch.tensor([[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9, 1], [0, 0, 0, 2, 3, 7]])
ROWS = 12


def model(cfg: HailConfig = SMALL, rows: int = ROWS) -> HAIL:
    return HAIL(cfg, rows)


def test_config_json_round_trip_and_validation() -> None:
    cfg = HailConfig(n_peers=3, encoders=("sasrec", "gru4rec"), med_form="exclusive", med_gate=False)
    again = HailConfig.from_dict(json.loads(json.dumps(asdict(cfg))))
    assert again == cfg and isinstance(again.encoders, tuple)
    assert HailConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ModelsError, match="unknown HailConfig fields"):
        HailConfig.from_dict({**asdict(cfg), "future": 1})
    with pytest.raises(ModelsError, match="distill='none'"):
        HailConfig(n_peers=1)
    for bad in ({"distill": "kd"}, {"med_form": "x"}, {"med_aggregate": "min"}, {"encoders": ("lstm",)},
                {"dropout": 1.0}, {"med_topk": 0}, {"positions": "middle"}):
        with pytest.raises(ModelsError):
            HailConfig(**bad)


def test_a_config_written_before_positions_existed_loads_with_positions_from_the_end() -> None:
    old = asdict(HailConfig(positions="start"))
    del old["positions"]
    assert HailConfig.from_dict(old).positions == "end"
    start = HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, dropout=0.0, positions="start"), ROWS)
    assert all(net.positions == "start" for net in start.networks)


def test_peers_get_own_seeds_and_cycle_encoders() -> None:
    before = torch.random.get_rng_state()
    cfg = replace(SMALL, n_peers=3, encoders=("sasrec", "gru4rec"))
    a, b = model(cfg), model(cfg)
    assert torch.equal(torch.random.get_rng_state(), before)  # construction leaves the global RNG alone
    assert [type(p) for p in a.networks] == [SASRecEncoder, GRU4RecEncoder, SASRecEncoder]
    for pa, pb in zip(a.networks, b.networks, strict=True):  # same seed -> same weights
        for x, y in zip(pa.parameters(), pb.parameters(), strict=True):
            assert torch.equal(x, y)
    assert not torch.equal(a.networks[0].item_emb.weight, a.networks[2].item_emb.weight)
    other = model(replace(cfg, seed=1))
    assert not torch.equal(other.networks[0].item_emb.weight, a.networks[0].item_emb.weight)
    # peer k of seed s is built like peer 0 of seed s + 1000 k
    shifted = model(replace(SMALL, n_peers=1, distill="none", seed=1000))
    for x, y in zip(shifted.networks[0].parameters(), model(SMALL).networks[1].parameters(), strict=True):
        assert torch.equal(x, y)


def _manual_ce_sum(m: HAIL) -> torch.Tensor:
    valid = (SEQS != 0) & (TARGETS != 0)
    total = torch.zeros(())
    for peer in m.networks:
        logits = peer.logits(peer.hidden_states(SEQS))[valid]
        total = total + F.cross_entropy(logits, TARGETS[valid])
    return total


def test_training_loss_positions_and_independent_ce() -> None:
    m = model(replace(SMALL, distill="none"))
    loss, stats = m.training_loss(SEQS, TARGETS)
    # positions count only where input and target are both items: 4 + 5 + 2
    assert stats["targets"] == 11.0
    torch.testing.assert_close(loss, _manual_ce_sum(m))
    loss.backward()
    assert all(p.grad is not None for p in m.networks[0].parameters() if p.requires_grad)


def test_med_switch_weight_zero_and_warmup() -> None:
    base = model(replace(SMALL, distill="none"))
    ce_sum = base.training_loss(SEQS, TARGETS)[0]
    zero = model(replace(SMALL, med_weight=0.0, med_form="weighted_ce"))
    torch.testing.assert_close(zero.training_loss(SEQS, TARGETS)[0], ce_sum)
    coded_ce = model(replace(SMALL, med_alpha=1.0, med_beta=0.0))  # coded MED with α = 1 is CE
    torch.testing.assert_close(coded_ce.training_loss(SEQS, TARGETS)[0], ce_sum)
    warm = model(replace(SMALL, med_warmup_epochs=2, med_topk=ROWS, med_form="weighted_ce"))
    torch.testing.assert_close(warm.training_loss(SEQS, TARGETS, epoch=1)[0], ce_sum)
    on, stats = warm.training_loss(SEQS, TARGETS, epoch=2)
    # top-k = every item: all correct, u > 0, so MED strictly adds to the CE sum
    assert stats["correct"] == 1.0 and stats["active"] == 1.0
    assert on.item() > ce_sum.item() + 1.0
    dml, dstats = model(replace(SMALL, distill="dml")).training_loss(SEQS, TARGETS)
    assert "kl" in dstats and dml.item() > ce_sum.item()


def test_training_loss_errors_and_clipping() -> None:
    m = model()
    with pytest.raises(ModelsError, match="no position"):
        m.training_loss(torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.long))
    with pytest.raises(ModelsError, match="one shape"):
        m.training_loss(SEQS, TARGETS[:, 1:])
    longer = torch.cat([torch.full((3, 4), 7), SEQS], 1)  # 10 columns; model sees the last 6
    longer_t = torch.cat([torch.full((3, 4), 7), TARGETS], 1)
    torch.testing.assert_close(m.training_loss(longer, longer_t)[0], m.training_loss(SEQS, TARGETS)[0])


def test_log_probs_mean_of_peers_and_single_peer() -> None:
    m = model().eval()
    lp = m.log_probs(SEQS)
    assert lp.shape == (3, ROWS)
    assert torch.isneginf(lp[:, 0]).all()
    p0, p1 = m.log_probs(SEQS, peer=0), m.log_probs(SEQS, peer=1)
    torch.testing.assert_close(torch.logsumexp(p0, 1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(lp[:, 1:], (p0[:, 1:] + p1[:, 1:]) / 2)
    assert not torch.allclose(p0[:, 1:], p1[:, 1:])
    with pytest.raises(ModelsError, match="peer must be"):
        m.log_probs(SEQS, peer=2)
    # shorter or longer padding gives the same scores
    torch.testing.assert_close(m.log_probs(SEQS[2:, -2:]), lp[2:], atol=1e-5, rtol=1e-5)


def test_recommend() -> None:
    m = model()
    m.train()
    scores, items = m.recommend(SEQS, k=4)
    assert m.training  # mode restored
    assert scores.shape == items.shape == (3, 4)
    assert (items != 0).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    again = m.recommend(SEQS, k=4)  # eval mode inside: deterministic even with dropout configured
    assert torch.equal(again[1], items)
    torch.testing.assert_close(scores, m.eval().log_probs(SEQS).topk(4).values)
    assert m.recommend(SEQS, k=100)[1].shape == (3, ROWS - 1)
    _, one = m.recommend(SEQS, k=2, peer=1)
    assert torch.equal(one, m.log_probs(SEQS, peer=1).topk(2).indices)


def test_grow_keeps_rows_and_item_scores() -> None:
    m = model().eval()
    before = [p.item_emb.weight.detach().clone() for p in m.networks]
    logits_before = [p.logits(p.encode(SEQS)).detach() for p in m.networks]
    m.grow(20)
    assert m.n_rows == 20
    for p, old, lb in zip(m.networks, before, logits_before, strict=True):
        assert torch.equal(p.item_emb.weight[:ROWS], old)
        assert torch.equal(p.logits(p.encode(SEQS))[:, :ROWS], lb)
    assert m.log_probs(SEQS).shape == (3, 20)
    twin = model()
    twin.grow(20)
    for a, b in zip(m.networks, twin.networks, strict=True):  # growth is seeded
        assert torch.equal(a.item_emb.weight, b.item_emb.weight)
    loss, _ = m.training_loss(torch.tensor([[0, 0, 0, 0, 19, 18]]), torch.tensor([[0, 0, 0, 0, 18, 17]]))
    loss.backward()
    assert m.networks[0].item_emb.weight.grad is not None
    with pytest.raises(ModelsError, match="shrink"):
        m.grow(10)


def test_learns_a_deterministic_successor() -> None:
    """A few steps of MED on item i -> i + 1 sequences must rank the successor first."""
    torch.manual_seed(0)
    cfg = replace(SMALL, max_len=5)
    m = model(cfg, rows=10)
    seqs = torch.tensor([[s + i for i in range(5)] for s in range(1, 5)])  # rows 1..8
    targets = seqs + 1
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.training_loss(seqs, targets)[0].item()
    for _ in range(150):
        loss, _ = m.training_loss(seqs, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5
    _, top = m.recommend(seqs, k=1)
    assert top[:, 0].tolist() == targets[:, -1].tolist()
