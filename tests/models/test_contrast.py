"""The contrastive option (models.contrast): same-target positives, InfoNCE, and its use in training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.contrast import SameTargetIndex, info_nce
from models.errors import ModelsError
from models.hail import HAIL, HailConfig
from models.trainer import TrainConfig, fine_tune, make_windows, train
from tests.models.test_trainer import TINY, _successor_split


def _windows(n_users: int = 40, n_items: int = 15, max_len: int = 6, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, n_items + 1, size=int(rng.integers(2, 14))) for _ in range(n_users)]
    return make_windows(seqs, max_len)


def test_every_positive_is_another_prefix_followed_by_the_same_item() -> None:
    windows = _windows()
    index = SameTargetIndex(windows)
    rows = torch.arange(len(windows))
    pos = index.positives(rows, torch.Generator().manual_seed(1))
    width = windows.shape[1] - 1
    assert pos.shape == (len(windows), width)
    prefixes = {}  # every indexed prefix (as a tuple of items) -> the items that follow it somewhere
    for w in windows.tolist():
        for t in range(width):
            if w[t] and w[t + 1]:
                prefixes.setdefault(tuple(i for i in w[: t + 1] if i), set()).add(w[t + 1])
    for r, p in zip(rows.tolist(), pos.tolist(), strict=True):
        target, own = int(windows[r, -1]), [i for i in windows[r, :-1].tolist() if i]
        items = [i for i in p if i]
        assert p[-1] != 0 and p[: width - len(items)] == [0] * (width - len(items))  # left-padded, right-aligned
        assert target in prefixes[tuple(items)]
        if index.count(target) == 1:
            assert items == own  # nothing else ends in it: the window's own input (dropout view)


def test_the_window_s_own_prefix_is_never_drawn_when_another_exists() -> None:
    windows = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 3]])  # two prefixes followed by 3: one per window
    index = SameTargetIndex(windows)
    for seed in range(20):
        assert index.positives(torch.tensor([0, 1]), torch.Generator().manual_seed(seed)).tolist() == \
            [[0, 0, 4], [0, 1, 2]]


def test_info_nce_ignores_same_target_negatives_and_refuses_bad_input() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(info_nce(z, z)) == pytest.approx(float(torch.log1p(2 / torch.tensor(torch.e))))
    # both rows have the same target: no negative is left, every anchor's only candidate is its positive
    assert float(info_nce(z, z, torch.tensor([7, 7]))) == pytest.approx(0.0, abs=1e-7)
    # a smaller temperature sharpens: the positive's margin of 1 becomes 1 / tau
    assert float(info_nce(z, z, tau=0.5)) == pytest.approx(float(torch.log1p(2 / torch.tensor(torch.e) ** 2)))
    with pytest.raises(ModelsError):
        info_nce(z, z[:1])
    with pytest.raises(ModelsError):
        info_nce(z, z, tau=0.0)


def test_config_checks_and_positives_are_required() -> None:
    with pytest.raises(ModelsError, match="contrast"):
        HailConfig(contrast=-0.1)
    with pytest.raises(ModelsError, match="bert4rec"):
        HailConfig(encoders=("bert4rec",), contrast=0.1)
    m = HAIL(replace(TINY, contrast=0.1), 10)
    seqs, targets = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 2, 3]])
    with pytest.raises(ModelsError, match="positives"):
        m.training_loss(seqs, targets)


def test_the_contrastive_term_adds_to_the_loss_and_reaches_every_peer() -> None:
    windows = _windows(max_len=TINY.max_len)
    seqs, targets = windows[:, :-1], windows[:, 1:]
    positives = SameTargetIndex(windows).positives(torch.arange(len(windows)), torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    off = HAIL(TINY, 16)
    on = HAIL(replace(TINY, contrast=0.5), 16)
    on.load_state_dict(off.state_dict())
    base, _ = off.training_loss(seqs, targets)
    assert off.training_loss(seqs, targets, positives=positives)[0].item() == pytest.approx(base.item())  # λ = 0
    loss, stats = on.training_loss(seqs, targets, positives=positives)
    assert stats["contrast"] > 0
    assert loss.item() == pytest.approx(base.item() + 0.5 * 2 * stats["contrast"], rel=1e-5)  # λ · Σ over 2 peers
    loss.backward()
    for peer in on.networks:
        assert all(p.grad is not None for p in peer.parameters() if p.requires_grad)


def test_training_and_fine_tuning_with_contrast_run() -> None:
    split = _successor_split(n_users=12)
    tc = TrainConfig(epochs=2, threads=1, progress=False, batch_size=8)
    result = train(split, replace(TINY, contrast=0.1), tc)
    assert all("contrast" in row for row in result.history) and np.isfinite(result.history[-1]["loss"])
    out = fine_tune(result.model, split.train, steps=3, batch_size=4)
    assert out["steps"] == 3 and np.isfinite(out["loss"])
