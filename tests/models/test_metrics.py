"""Ranking metrics: deterministic tie rule, padding never ranked, known values, prequential form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.errors import ModelsError
from models.metrics import hit_rate, mrr, ndcg, rank_of_target, summarize, top_k, top_k_row, topk_metrics


def brute_rank(row: np.ndarray, target: int) -> int:
    """Reference: sort real items by (-score, index); NaN counts as -inf."""
    key = {i: -math.inf if math.isnan(v) else v for i, v in enumerate(row.tolist()) if i > 0}
    order = sorted(key, key=lambda i: (-key[i], i))
    return order.index(target)


def test_rank_counts_higher_scores_and_lower_index_ties() -> None:
    scores = np.array([[0.0, 3.0, 5.0, 3.0, 3.0, 1.0]])
    assert rank_of_target(scores, np.array([2])).tolist() == [0]
    assert rank_of_target(scores, np.array([1])).tolist() == [1]  # behind 2, ahead of tied 3 and 4
    assert rank_of_target(scores, np.array([4])).tolist() == [3]  # behind 2, tied 1 and 3
    assert rank_of_target(scores, np.array([5])).tolist() == [4]


def test_rank_matches_brute_force_with_many_ties() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(64, 30)).astype(np.float64)  # few values: ties everywhere
    scores[rng.random(scores.shape) < 0.05] = np.nan
    targets = rng.integers(1, 30, size=64)
    expected = [brute_rank(scores[b], int(targets[b])) for b in range(64)]
    assert rank_of_target(scores, targets).tolist() == expected
    assert rank_of_target(torch.from_numpy(scores).float(), torch.from_numpy(targets)).tolist() == expected


def test_padding_column_never_outranks() -> None:
    scores = np.array([[1e9, 0.0, 0.0], [math.inf, -math.inf, -math.inf], [math.nan, 2.0, 1.0]])
    assert rank_of_target(scores, np.array([1, 2, 2])).tolist() == [0, 1, 1]


def test_nan_target_is_not_rewarded() -> None:
    scores = np.array([[0.0, math.nan, 0.5, -1.0]])
    assert rank_of_target(scores, np.array([1])).tolist() == [2]


def test_rank_rejects_bad_inputs() -> None:
    with pytest.raises(ModelsError, match="padding"):
        rank_of_target(np.zeros((1, 4)), np.array([0]))
    with pytest.raises(ModelsError, match="too few columns"):
        rank_of_target(np.zeros((1, 4)), np.array([4]))
    with pytest.raises(ModelsError, match="2-D"):
        rank_of_target(np.zeros(4), np.array([1]))
    with pytest.raises(ModelsError, match="targets for"):
        rank_of_target(np.zeros((2, 4)), np.array([1]))


def test_top_k_agrees_with_rank() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(20, 15)).astype(np.float32)
    order = top_k(scores, 14)
    assert order.shape == (20, 14)
    assert (order != 0).all()
    for j in range(14):
        assert rank_of_target(scores, order[:, j]).tolist() == [j] * 20
    for b in range(20):
        for k in (1, 3, 7, 14, 50):
            assert top_k_row(scores[b].astype(np.float64), k) == order[b, :k].tolist()


def test_top_k_row_edge_cases() -> None:
    assert top_k_row(np.array([0.0]), 5) == []
    assert top_k_row(np.array([9.0, 1.0, 1.0]), 0) == []
    assert top_k_row(np.array([9.0, np.nan, 1.0]), 2) == [2, 1]


def test_known_metric_values() -> None:
    ranks = np.array([0, 1, 4, 9, 10, 100])
    assert hit_rate(ranks, 10) == pytest.approx(4 / 6)
    assert hit_rate(ranks, 1) == pytest.approx(1 / 6)
    expected_ndcg = (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 6
    assert ndcg(ranks, 10) == pytest.approx(expected_ndcg)
    assert mrr(ranks, 10) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 6)
    assert mrr(ranks, 5) == pytest.approx((1 + 1 / 2 + 1 / 5) / 6)
    assert hit_rate(np.array([], dtype=np.int64), 10) == 0.0 and ndcg(np.array([]), 5) == 0.0


def test_summarize_keys() -> None:
    out = summarize(np.array([0, 5, 30]))
    assert list(out) == ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "n"]
    assert out["n"] == 3 and out["hr@10"] == pytest.approx(2 / 3) and out["hr@5"] == pytest.approx(1 / 3)


def test_topk_metrics_prequential() -> None:
    assert topk_metrics(["a", "b", "c"], "a") == (1.0, 1.0, 1.0)
    hit, gain, rr = topk_metrics(["a", "b", "c"], "c")
    assert hit == 1.0 and gain == pytest.approx(0.5) and rr == pytest.approx(1 / 3)
    assert topk_metrics([], "a") == (0.0, 0.0, 0.0)
    assert topk_metrics(np.array([4, 2]), 2) == (1.0, pytest.approx(1 / math.log2(3)), 0.5)
    # Same definition as the offline form: position in the list = rank.
    assert topk_metrics([5, 6, 7], 7)[1] == pytest.approx(ndcg(np.array([2]), 3))
