"""The global transition output (models/transitions.py): the table, the mixture against its dense
formula, leave-one-out training, growth, checkpoints and the incremental path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.errors import ModelsError
from models.hail import HAIL, HailConfig
from models.incremental import IncrementalScorer
from models.transitions import TransitionHead, transition_table
from models.vocab import ItemVocab

SEQS = [np.array([1, 2, 1, 3, 1, 4]), np.array([2, 1, 2]), np.array([5, 2])]


def model(history: str = "none", width: int = 3, rows: int = 7, peers: int = 2, **kw) -> HAIL:
    cfg = HailConfig(n_peers=peers, hidden=8, layers=1, max_len=6, dropout=0.0, history=history,
                     transitions=width, distill="none" if peers == 1 else "med", **kw)
    m = HAIL(cfg, rows)
    with torch.no_grad():
        for heads in m.trans_heads:  # a gate that is not at its initial value
            heads.gate.bias.fill_(0.7)
            heads.log_kappa.fill_(-0.3)
    return m


def test_table_keeps_the_most_frequent_successors_and_counts_all_of_them():
    nxt, cnt, tot = transition_table(SEQS, 6, 2)
    # after 1: 3 and 4 once each, 2 twice (two users); kept: 2, then 3 (a tie with 4: smaller index)
    assert nxt[1].tolist() == [2, 3] and cnt[1].tolist() == [2.0, 1.0] and float(tot[1]) == 4.0
    assert nxt[2].tolist() == [1, 0] and cnt[2].tolist() == [2.0, 0.0] and float(tot[2]) == 2.0
    assert float(tot[4]) == 0.0 and nxt.dtype == torch.long


def test_table_adds_to_a_smaller_base_and_refuses_unknown_items():
    base = transition_table([np.array([1, 2])], 3, 2)
    nxt, cnt, tot = transition_table([np.array([1, 4, 3])], 5, 2, base=base)
    assert nxt[1].tolist() == [2, 4] and cnt[1].tolist() == [1.0, 1.0] and float(tot[1]) == 2.0
    assert nxt[4].tolist() == [3, 0] and float(tot[4]) == 1.0
    with pytest.raises(ModelsError, match="outside"):
        transition_table([np.array([1, 9])], 5, 2)
    with pytest.raises(ModelsError, match="width"):
        transition_table(SEQS, 6, 0)


def test_rows_leave_each_querys_own_transition_out():
    table = transition_table(SEQS, 6, 2)
    nxt, cnt, tot = TransitionHead.rows(table, torch.tensor([[1], [1], [2]]), torch.tensor([2, 4, 1]))
    assert cnt.tolist() == [[1.0, 1.0], [2.0, 1.0], [1.0, 0.0]]  # 4 is not kept: only the total drops
    assert tot.tolist() == [3.0, 3.0, 1.0]


NEIGHBOURS = {"trans_lags": (1.0, 0.5), "trans_backward": 0.5, "trans_recent": (1.0, 0.6, 0.2)}


def test_neighbour_rows_weigh_lags_reversed_pairs_and_recent_items():
    table = transition_table([np.array([1, 2, 3, 4, 5])], 6, 4, lags=(1.0, 0.5), backward=0.5)
    assert float(table[2][3]) == 1.0 + 0.5 + 0.5 + 0.25  # 3→4, 3→·→5, reversed 2→3 and 1→·→3
    # the query at 3 predicting 4, its latest items 3, 2, 1: 4 was counted once in 3's row (lag 1)
    # and half in 2's (lag 2), never in 1's (no lag 3); left out, no 4 is left
    nxt, cnt, tot = TransitionHead.rows(table, torch.tensor([[3, 2, 1]]), torch.tensor([4]),
                                        (1.0, 0.6, 0.2), (1.0, 0.5))
    assert float(cnt[nxt == 4].sum()) == 0.0 and float(cnt[nxt == 5].sum()) == pytest.approx(0.5)
    assert float(tot[0]) == pytest.approx((2.25 - 1) + 0.6 * (2.0 - 0.5) + 0.2 * 1.5)
    with pytest.raises(ModelsError, match="weights"):
        HailConfig(transitions=3, trans_lags=(1.0, -0.5))
    assert HailConfig.from_dict(json.loads(HailConfig(**NEIGHBOURS).to_json())) == HailConfig(**NEIGHBOURS)


def recent_counts(m: HAIL, seqs: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``c(i)`` ``[B, V]`` and ``T`` ``[B, 1]`` of the module docstring, dense: the table's rows of
    each sequence's latest items, weighted by ``config.trans_recent``."""
    counts, tot = torch.zeros_like(like), torch.zeros_like(like[:, :1])
    for r, w in enumerate(m.config.trans_recent):
        cur = seqs[:, -1 - r]
        counts += w * torch.zeros_like(like).scatter_add(1, m.trans_next[cur], m.trans_count[cur].to(like))
        tot += w * m.trans_total[cur].unsqueeze(1).to(like)
    return counts, tot


def dense(m: HAIL, k: int, seqs: torch.Tensor) -> torch.Tensor:
    """The module docstring's formula over all items, for a model without the copy head."""
    h = m._peer(k).encode(seqs)
    soft = torch.softmax(m._scores(k, h), -1)
    head = m.trans_heads[k]
    g_t = torch.sigmoid(head.gate(h)).squeeze(-1)  # softmax over (0, t) = sigmoid(t)
    counts, tot = recent_counts(m, seqs, soft)
    kappa = head.log_kappa.exp()
    p = (1 - g_t).unsqueeze(1) * soft + g_t.unsqueeze(1) * (counts / (tot + kappa) + kappa / (tot + kappa) * soft)
    out = p.log()
    out[:, 0] = float("-inf")
    return out


@pytest.mark.parametrize("kw", [{}, NEIGHBOURS])
def test_log_probs_follow_the_dense_formula_and_sum_to_one(kw):
    m = model(peers=1, width=6, **kw).double().eval()  # every neighbour kept: the mixture sums to 1
    m.set_transitions(SEQS)
    seqs = torch.tensor([[0, 0, 2, 1], [0, 5, 5, 2], [0, 0, 0, 6]])  # 6: no successor counted
    lp = m.log_probs(seqs)
    torch.testing.assert_close(lp, dense(m, 0, seqs))
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(3, dtype=torch.float64))
    with_copy = model("copy").double().eval()
    with_copy.set_transitions(SEQS)
    for peer in (0, 1):  # each peer's mixture is a distribution (their mean in log space is not)
        total = with_copy.log_probs(seqs, peer=peer).exp().sum(1)
        torch.testing.assert_close(total, torch.ones(3, dtype=torch.float64))


def test_bias_mode_adds_the_counts_to_the_logits():
    m = model(peers=1, width=6, trans_mode="bias", **NEIGHBOURS).double().eval()
    m.set_transitions(SEQS)
    seqs = torch.tensor([[0, 0, 2, 1], [0, 5, 5, 2], [0, 0, 0, 6]])
    h = m._peer(0).encode(seqs)
    counts = recent_counts(m, seqs, torch.zeros(3, 7, dtype=torch.float64))[0]
    counts[:, 0] = 0.0
    scale = torch.nn.functional.softplus(m.trans_heads[0].gate(h))
    torch.testing.assert_close(m.log_probs(seqs), torch.log_softmax(m._scores(0, h) + scale * counts.log1p(), -1))
    with pytest.raises(ModelsError, match="trans_mode"):
        HailConfig(trans_mode="sum")


def test_training_leaves_its_own_transitions_out():
    """Counted only from the batch itself, every pair once: left out, each row is empty, the
    component lends all its mass back to the softmax, and the loss is the plain model's."""
    seqs = torch.tensor([[1, 2, 3, 4], [0, 5, 6, 7]])
    targets = torch.tensor([[2, 3, 4, 5], [0, 6, 7, 8]])
    plain = HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=6, dropout=0.0), 9)
    m = model(rows=9)
    m.set_transitions([np.array([1, 2, 3, 4, 5]), np.array([5, 6, 7, 8])])
    assert torch.equal(m.peers[0].item_emb.weight, plain.peers[0].item_emb.weight)  # same seeds
    m.train(), plain.train()
    loss, _ = m.training_loss(seqs, targets)
    ref, _ = plain.training_loss(seqs, targets)
    torch.testing.assert_close(loss, ref)
    m.eval()  # without leaving out, the table holds the answers: a lower loss
    assert float(m.training_loss(seqs, targets)[0].detach()) < float(ref.detach()) - 0.1
    biased = model(rows=9, trans_mode="bias")
    biased.set_transitions([np.array([1, 2, 3, 4, 5]), np.array([5, 6, 7, 8])])
    biased.train()
    torch.testing.assert_close(biased.training_loss(seqs, targets)[0], ref)


def test_grow_keeps_the_table_and_a_checkpoint_round_trips(tmp_path: Path):
    m = model("copy", rows=7)
    m.set_transitions(SEQS)
    before = m.trans_next.clone()
    m.grow(10)
    assert m.trans_next.shape == (10, 3) and torch.equal(m.trans_next[:7], before)
    assert float(m.trans_total[7:].sum()) == 0.0
    path = save_checkpoint(tmp_path / "t.safetensors", m, ItemVocab("abcdef"), {})
    loaded = load_checkpoint(path).model
    seqs = torch.tensor([[0, 2, 1], [5, 2, 9]])
    assert torch.equal(m.eval().log_probs(seqs), loaded.log_probs(seqs))


@pytest.mark.parametrize(("history", "kw"), [("none", {}), ("copy", {}), ("copy", NEIGHBOURS),
                                             ("copy", {**NEIGHBOURS, "trans_mode": "bias"})])
def test_the_incremental_path_gives_the_full_re_encodes_log_probs(history, kw):
    m = model(history, rows=40, positions="start", **kw)
    rng = np.random.default_rng(1)
    m.set_transitions([rng.integers(1, 40, size=30) for _ in range(20)])
    m.eval()
    seq = rng.integers(1, 40, size=9)
    inc = IncrementalScorer(m, capacity=50)
    batch = [seq[:2], seq[:3], seq[:4], seq[3:9]]
    for row, s in zip(inc.log_probs(batch), batch, strict=True):
        torch.testing.assert_close(row, m.log_probs(torch.as_tensor(s).unsqueeze(0))[0], atol=1e-5, rtol=1e-5)
    assert inc.hits == 2


def test_a_recycled_row_loses_its_transitions_both_ways():
    from models.capacity import reset_rows

    m = model(rows=7)
    m.set_transitions(SEQS)
    reset_rows(m, [2])
    assert m.trans_next[2].tolist() == [0, 0, 0] and float(m.trans_total[2]) == 0.0
    assert 2 not in m.trans_next[1].tolist() and float(m.trans_total[1]) == 2.0  # 1 -> 2 (twice) dropped
    assert float(m.trans_total[5]) == 0.0  # 5 -> 2 was its only transition


def test_cloze_peers_take_the_transition_output_too():
    m = model(rows=9, encoders=("bert4rec",), share_embedding=True)
    m.set_transitions([np.array([1, 2, 3, 4, 5]), np.array([5, 6, 7, 8])])
    seqs = torch.tensor([[1, 2, 3, 4], [0, 5, 6, 7]])
    m.train()
    loss, stats = m.training_loss(seqs, torch.tensor([[2, 3, 4, 5], [0, 6, 7, 8]]))
    assert torch.isfinite(loss) and stats["targets"] >= 2
    m.eval()
    lp = m.log_probs(seqs, peer=0).double()
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)


def test_softmax_ce_adds_each_peers_own_cross_entropy():
    """With empty (left-out) rows the mixture is the softmax: the loss doubles at weight 1."""
    seqs, targets = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 3, 4, 5]])
    losses = {}
    for weight in (0.0, 1.0):
        m = model(rows=9, peers=1, softmax_ce=weight)
        m.set_transitions([np.array([1, 2, 3, 4, 5])])
        m.train()
        losses[weight], stats = m.training_loss(seqs, targets)
    torch.testing.assert_close(losses[1.0], 2 * losses[0.0])
    assert stats["softmax_ce"] == pytest.approx(float(losses[0.0].detach()), rel=1e-5)
    with pytest.raises(ModelsError, match="softmax_ce"):
        HailConfig(softmax_ce=-1.0)


def test_training_calibrates_the_transition_gate_on_validation_only():
    from models.splits import SequenceSplit
    from models.trainer import GATE_SHIFTS, TrainConfig, train

    rng = np.random.default_rng(0)
    train_seqs = [rng.integers(1, 9, size=6) for _ in range(12)]
    split = SequenceSplit("toy", ItemVocab("abcdefgh"), [str(i) for i in range(12)], train_seqs,
                          valid_target=rng.integers(1, 9, size=12), test_target=rng.integers(1, 9, size=12))
    cfg = HailConfig(n_peers=1, distill="none", hidden=8, layers=1, max_len=6, history="copy", transitions=4)
    saved = []
    res = train(split, cfg, TrainConfig(epochs=2, threads=1, progress=False),
                on_best=lambda m, e, row: saved.append(row))
    cal = res.calibration
    tried = {float(k.rsplit(" ", 1)[1]) for k in cal if k != "gate_shift"}
    assert set(GATE_SHIFTS) <= tried and cal["gate_shift"] in tried  # the grid, and beyond a winning edge
    assert cal[f"valid_ndcg@10 shift {cal['gate_shift']:g}"] == max(v for k, v in cal.items() if k != "gate_shift")
    if cal["gate_shift"]:
        assert saved[-1]["gate_shift"] == cal["gate_shift"]  # the checkpoint callback saw the shifted model
    off = train(split, cfg, TrainConfig(epochs=1, threads=1, progress=False, calibrate_gate=False))
    assert off.calibration == {}


def test_fine_tune_counts_its_windows_transitions_in():
    from models.trainer import fine_tune

    m = model(rows=9, peers=1)
    m.set_transitions([np.array([1, 2])])
    fine_tune(m, [np.array([1, 2, 3]), np.array([1, 3])], steps=1, batch_size=2)
    assert m.trans_next[1].tolist()[:2] == [2, 3] and m.trans_count[1].tolist()[:2] == [2.0, 1.0]
    assert float(m.trans_total[2]) == 1.0
