"""HAIL options of issue 11: shared item table and output bias, BERT4Rec cloze peers, the
history-aware (copy) output; each trains, predicts, grows and survives a checkpoint round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.errors import ModelsError
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab

BASE = HailConfig(n_peers=2, hidden=16, layers=1, heads=2, dropout=0.0, max_len=6)
SEQS = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 5, 6, 7, 8, 9], [0, 0, 0, 0, 2, 3]])
TARGETS = torch.tensor([[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9, 1], [0, 0, 0, 2, 3, 7]])
ROWS = 12

CONFIGS = {
    "sasrec": BASE,
    "shared": replace(BASE, share_embedding=True, output_bias=True),
    "copy": replace(BASE, history="copy"),
    "gru4rec+copy": replace(BASE, encoders=("sasrec", "gru4rec"), history="copy", share_embedding=True),
    "bert4rec": replace(BASE, encoders=("bert4rec",), share_embedding=True, output_bias=True),
    "bert4rec+copy": replace(BASE, encoders=("bert4rec",), share_embedding=True, history="copy"),
    "k3-recbole": replace(BASE, n_peers=3, ffn=32, activation="gelu", history="copy"),
    "dml+copy": replace(BASE, distill="dml", history="copy"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_configuration_trains_predicts_and_round_trips(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = HAIL(CONFIGS[name], ROWS)
    loss, stats = m.training_loss(SEQS, TARGETS)
    assert torch.isfinite(loss) and stats["targets"] > 0
    loss.backward()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    opt.step()
    m.eval()
    lp = m.log_probs(SEQS)
    assert lp.shape == (3, ROWS) and bool(torch.isinf(lp[:, 0]).all())
    one = m.log_probs(SEQS, peer=0)[:, 1:].exp().sum(1)  # each peer gives a distribution (the mean of
    assert torch.allclose(one, torch.ones(3), atol=1e-4)  # log-probabilities need not sum to 1)
    path = save_checkpoint(tmp_path / "m.safetensors", m, ItemVocab([str(i) for i in range(1, ROWS)]), {})
    again = load_checkpoint(path).model
    assert again.config == m.config
    assert torch.equal(again.log_probs(SEQS), lp)
    m.grow(ROWS + 3)
    assert m.log_probs(SEQS).shape == (3, ROWS + 3)


def test_shared_table_is_one_parameter_and_stays_shared_after_growth() -> None:
    m = HAIL(CONFIGS["shared"], ROWS)
    a, b = m.networks
    assert a.item_emb is b.item_emb
    separate = HAIL(BASE, ROWS)
    n_shared = sum(p.numel() for p in m.parameters())
    n_separate = sum(p.numel() for p in separate.parameters())
    assert n_shared == n_separate - ROWS * 16 + ROWS  # one table fewer, one bias more
    m.grow(ROWS + 2)
    assert m.networks[0].item_emb is m.networks[1].item_emb and m.n_rows == ROWS + 2
    assert m.item_bias is not None and m.item_bias.shape == (ROWS + 2,)


def test_copy_output_puts_mass_on_the_users_own_items() -> None:
    m = HAIL(replace(CONFIGS["copy"], n_peers=1, distill="none"), ROWS).eval()
    p = m.log_probs(SEQS).detach().exp()
    # gate starts at 0.5: at least half of the mass lies on the items of each sequence
    for row, seq in zip(p, SEQS, strict=True):
        own = sorted(set(seq.tolist()) - {0})
        assert float(row[own].sum()) >= 0.5


def test_copy_head_never_sees_the_future_in_training() -> None:
    # A target that appears only later in the window must not get copy mass at earlier positions:
    # changing items after position t leaves the loss terms of positions <= t unchanged.
    torch.manual_seed(0)
    m = HAIL(replace(CONFIGS["copy"], n_peers=1, distill="none"), ROWS)
    seqs = torch.tensor([[1, 2, 3, 4, 5, 6]])
    pos = torch.arange(6)
    ages = (pos.view(-1, 1) - pos.view(1, -1)).unsqueeze(0)
    def out_of(s: torch.Tensor) -> torch.Tensor:
        match = s.unsqueeze(1) == s.unsqueeze(2)
        return m._output(0, m.networks[0].hidden_states(s), torch.ones(1, 6, dtype=torch.bool), s, ages,
                         ages >= 0, ages >= 1, match)

    out, out2 = out_of(seqs), out_of(torch.tensor([[1, 2, 3, 9, 9, 9]]))
    assert torch.allclose(out[:3], out2[:3], atol=1e-6)


def test_cloze_training_masks_the_same_positions_for_every_peer() -> None:
    m = HAIL(CONFIGS["bert4rec"], ROWS)
    torch.manual_seed(5)
    _, stats = m.training_loss(SEQS, TARGETS)
    assert 3 <= stats["targets"] <= int((TARGETS != 0).sum())  # >= one masked item per row


def test_option_validation() -> None:
    with pytest.raises(ModelsError, match="mixed"):
        HailConfig(encoders=("bert4rec", "sasrec"))
    for bad in ({"history": "repeat"}, {"activation": "tanh"}, {"ffn": -1}, {"mask_prob": 0.0},
                {"med_alpha": 1.5}, {"med_beta": 1.0}, {"med_gamma": -1.0}):
        with pytest.raises(ModelsError):
            HailConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["copy", "gru4rec+copy", "bert4rec+copy"])
def test_training_path_and_serving_path_agree_at_the_last_position(name: str) -> None:
    # The loss scores position t from seqs[:t+1]; serving scores the next item after the whole
    # sequence: in eval mode (no dropout) both give the same distribution for the last position.
    torch.manual_seed(0)
    m = HAIL(replace(CONFIGS[name], n_peers=1, distill="none"), ROWS).eval()
    seqs = torch.tensor([[0, 3, 4, 3, 5, 3]])
    with torch.no_grad():
        served = m.log_probs(seqs)
        if m.cloze:
            enc = m.networks[0]
            items, masked = enc.with_trailing_mask(seqs)  # type: ignore[attr-defined]
            h = enc.hidden_states(items, masked)  # type: ignore[call-arg]
            pos = torch.arange(items.shape[1])
            ages = (pos.view(-1, 1) - pos.view(1, -1) - 1).unsqueeze(0)
            visible = (items != 0) & ~masked
            cur = torch.cat([torch.zeros_like(items[:, :1]), items[:, :-1]], 1)
            match = (items.unsqueeze(1) == cur.unsqueeze(2)) & (cur != 0).unsqueeze(2)
            succ_vis = visible & torch.cat([visible[:, 1:], torch.zeros_like(visible[:, :1])], 1)
            where = masked
            out = m._output(0, h, where, items, ages, (ages >= 0) & visible.unsqueeze(1),
                            (ages >= 1) & succ_vis.unsqueeze(1), match)
        else:
            h = m.networks[0].hidden_states(seqs)
            pos = torch.arange(6)
            ages = (pos.view(-1, 1) - pos.view(1, -1)).unsqueeze(0)
            real = (seqs != 0).unsqueeze(1)
            where = torch.zeros(1, 6, dtype=torch.bool)
            where[0, -1] = True
            out = m._output(0, h, where, seqs, ages, (ages >= 0) & real, (ages >= 1) & real,
                            seqs.unsqueeze(1) == seqs.unsqueeze(2))
    assert torch.allclose(out.log_softmax(-1)[:, 1:], served[:, 1:], atol=1e-5)
