"""Ranking metrics with one relevant item per query (DESIGN §4), offline and prequential.

Ranks are 0-based and deterministic under ties: an item outranks the target when its score is
higher, or equal and its index lower. Column 0 (padding) never outranks anything, and NaN scores
count as -inf, so a broken model cannot look perfect. Items the user already visited are *not*
masked: revisits are the norm in check-in data.

>>> import numpy as np
>>> scores = np.array([[9.0, 0.1, 0.5, 0.5, 0.9],     # target 3 ties with 2 (lower index wins)
...                    [0.0, 0.3, 0.2, 0.1, 0.0]])    # target 1 is the best real item
>>> ranks = rank_of_target(scores, np.array([3, 1]))
>>> ranks.tolist()
[2, 0]
>>> hit_rate(ranks, 2), round(ndcg(ranks, 10), 4), mrr(ranks, 10)
(0.5, 0.75, 0.6666666666666666)
>>> top_k(scores, 3).tolist()
[[4, 2, 3], [1, 2, 3]]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from models.errors import ModelsError

ArrayLike = np.ndarray | torch.Tensor


def _as_scores(scores: ArrayLike) -> torch.Tensor:
    """Scores as a float tensor [B, V] with padding and NaN at -inf (a copy; the input is kept)."""
    s = torch.as_tensor(scores)
    if s.dim() != 2:
        raise ModelsError(f"scores must be 2-D [batch, items], got shape {tuple(s.shape)}")
    if not s.is_floating_point():
        s = s.to(torch.float64)
    s = torch.nan_to_num(s, nan=-math.inf, posinf=math.inf, neginf=-math.inf).clone()
    s[:, 0] = -math.inf
    return s


def rank_of_target(scores: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """0-based rank of each row's target among all real items (columns 1..V-1).

    ``scores`` [B, V] (tensor or array), ``targets`` [B] item indices in 1..V-1. Returns int64 [B]:
    ``#(score > s_t) + #(score == s_t and index < t)``, counted over columns >= 1.

    >>> rank_of_target(np.array([[0.0, 1.0, 1.0, 1.0]]), np.array([3])).tolist()
    [2]
    """
    s = torch.as_tensor(scores)
    if s.dim() != 2:
        raise ModelsError(f"scores must be 2-D [batch, items], got shape {tuple(s.shape)}")
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1).to(s.device)
    if t.numel() != s.shape[0]:
        raise ModelsError(f"got {t.numel()} targets for {s.shape[0]} score rows")
    if t.numel() and (int(t.min()) < 1 or int(t.max()) >= s.shape[1]):
        raise ModelsError(
            f"targets must be item indices in 1..{s.shape[1] - 1} (0 is padding); "
            f"got range {int(t.min())}..{int(t.max())}. Did the scorer return too few columns?"
        )
    # Column 0 is left out by slicing (a view), so the padding never outranks, not even a -inf
    # target; NaN is mapped to -inf only when present, since the copy costs as much as the ranking.
    real = s[:, 1:]
    # (The sum is NaN when any score is; +inf next to -inf is a false alarm that only costs the copy.)
    if real.is_floating_point() and bool(torch.isnan(real.sum())):
        real = torch.nan_to_num(real, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    st = real.gather(1, (t - 1).unsqueeze(1))
    # Ties can only precede the target from the columns left of it.
    cols = torch.arange(1, s.shape[1], device=s.device).unsqueeze(0)
    ahead = (real > st) | ((real == st) & (cols < t.unsqueeze(1)))
    if ahead.device.type == "cpu":
        # NumPy counts a bool matrix several times faster than torch's sum on CPU.
        return np.count_nonzero(ahead.numpy(), axis=1).astype(np.int64)
    return ahead.sum(dim=1).cpu().numpy().astype(np.int64)


def top_k(scores: ArrayLike, k: int) -> np.ndarray:
    """Indices [B, k] of the k best real items per row, best first, with the same tie rule as
    :func:`rank_of_target` (the item at position j has rank j). ``k`` is capped at V-1.

    >>> top_k(np.array([[5.0, 1.0, 2.0, 2.0, 0.0]]), 10).tolist()
    [[2, 3, 1, 4]]
    """
    s = _as_scores(scores)
    k = max(0, min(int(k), s.shape[1] - 1))
    # A stable sort on -score keeps equal scores in index order: exactly the tie rule.
    order = torch.sort(-s, dim=1, stable=True).indices
    return order[:, :k].cpu().numpy().astype(np.int64)


def top_k_row(scores: np.ndarray, k: int) -> list[int]:
    """Fast top-k of one score row (1-D array, column 0 = padding) for per-event streaming use;
    same order as :func:`top_k`, without sorting the whole row.

    >>> top_k_row(np.array([9.0, 1.0, 3.0, 3.0, 2.0]), 2)
    [2, 3]
    """
    row = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    n = row.shape[0] - 1
    k = max(0, min(int(k), n))
    if k == 0:
        return []
    real = row[1:]
    if k < n:
        # The k-th largest value bounds the answer; everything tied with it competes on index.
        kth = np.partition(real, n - k)[n - k]
        cand = np.flatnonzero(real >= kth)
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -real[cand]))
    return (cand[order[:k]] + 1).tolist()


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose target ranks in the top k (HR@k). Empty input -> 0.0."""
    r = np.asarray(ranks)
    return float((r < k).mean()) if r.size else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item: 1/log2(rank+2) if rank < k else 0.

    >>> ndcg(np.array([0, 1, 10]), 10)
    0.5436432511904858
    """
    r = np.asarray(ranks, dtype=np.float64)
    if not r.size:
        return 0.0
    return float(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0).mean())


def mrr(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank cut at k: 1/(rank+1) if rank < k else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    if not r.size:
        return 0.0
    return float(np.where(r < k, 1.0 / (r + 1.0), 0.0).mean())


def summarize(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20), mrr_k: int = 10) -> dict[str, float]:
    """The standard metric dict from ranks: ``hr@k``, ``ndcg@k`` per k, ``mrr@<mrr_k>``, ``n``.

    >>> summarize(np.array([0, 3]), ks=(1, 5))
    {'hr@1': 0.5, 'ndcg@1': 0.5, 'hr@5': 1.0, 'ndcg@5': 0.7153382790366966, 'mrr@10': 0.625, 'n': 2}
    """
    out: dict[str, float] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k)
        out[f"ndcg@{k}"] = ndcg(ranks, k)
    out[f"mrr@{mrr_k}"] = mrr(ranks, mrr_k)
    out["n"] = int(np.asarray(ranks).size)
    return out


#: The names of :func:`topk_metrics`' values, in its order.
TOPK_METRICS = ("hr", "ndcg", "mrr")


def topk_metrics(predicted: Sequence[Hashable] | np.ndarray, actual: Hashable) -> tuple[float, float, float]:
    """Prequential metrics of one published top-k list against the item that actually came next:
    ``(hit, ndcg, rr)``, each 0.0 when ``actual`` is not in the list. The list's length is its k.

    >>> topk_metrics(["a", "b", "c"], "b")
    (1.0, 0.6309297535714575, 0.5)
    >>> topk_metrics([3, 1], 7)
    (0.0, 0.0, 0.0)
    """
    for pos, item in enumerate(predicted):
        if item == actual:
            return 1.0, 1.0 / math.log2(pos + 2.0), 1.0 / (pos + 1.0)
    return 0.0, 0.0, 0.0
