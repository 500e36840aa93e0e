"""Repeat-aware mixture scorer: alpha 0 is the model, alpha 1 ranks the user's own items first by
frequency, and alpha is chosen on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import ModelsError
from models.repeat import RepeatMixture, choose_alpha
from models.splits import SequenceSplit
from models.vocab import ItemVocab


class Fixed:
    """Log-probabilities favouring item 4 over 3 over 2 over 1 (column 0 = padding)."""

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        p = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])
        return p.log().expand(len(users), -1).clone()


def test_alpha_zero_is_the_model_and_one_is_the_frequencies() -> None:
    hist = [np.array([1, 2, 1, 1, 2, 3])]
    users = np.array([0])
    base = Fixed().scores(users, hist)
    assert torch.allclose(RepeatMixture(Fixed(), 0.0).scores(users, hist)[:, 1:], base[:, 1:])
    top = RepeatMixture(Fixed(), 1.0).scores(users, hist)[0]
    assert torch.argsort(top[1:], descending=True)[:3].add(1).tolist() == [1, 2, 3]
    p = RepeatMixture(Fixed(), 0.5).scores(users, hist).exp()[0]
    assert torch.allclose(p.sum(), torch.tensor(1.0)) and torch.isclose(p[1], torch.tensor(0.05 + 0.25))


def test_choose_alpha_uses_validation_only() -> None:
    vocab = ItemVocab(["a", "b", "c", "d"])
    # every user's validation target is their most frequent item, which the model ranks last;
    # the test targets are the model's favourite: choosing on test would pick alpha 0
    split = SequenceSplit("toy", vocab, ["u", "v"], [np.array([1, 1, 2]), np.array([1, 1, 3])],
                          valid_target=np.array([1, 1]), test_target=np.array([4, 4]))
    alpha, scores = choose_alpha(Fixed(), split, alphas=(0.0, 0.5, 1.0))
    assert alpha == 0.5 and scores[0.0] < scores[0.5] == scores[1.0]


def test_alpha_out_of_range_is_refused() -> None:
    with pytest.raises(ModelsError, match="alpha"):
        RepeatMixture(Fixed(), 1.5)
