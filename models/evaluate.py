"""Full-ranking offline evaluation over a leave-last-out split (DESIGN §4).

Anything with a ``scores(users, histories) -> Tensor[B, rows]`` method is a :class:`Scorer`: the
HAIL model through :class:`ModelScorer`, and every baseline of :mod:`models.baselines`. Every item
of the vocabulary competes (no sampled negatives, no masking of visited items); ties are broken
by item index, see :mod:`models.metrics`.

>>> import numpy as np, torch
>>> from models.splits import SequenceSplit
>>> from models.vocab import ItemVocab
>>> split = SequenceSplit("toy", ItemVocab("abc"), ["u", "v"], [np.array([1]), np.array([2])],
...                       valid_target=np.array([2, 3]), test_target=np.array([3, 1]))
>>> class Fixed:  # always ranks item 3 first, then 1, then 2
...     def scores(self, users, histories):
...         return torch.tensor([[0.0, 2.0, 1.0, 3.0]]).expand(len(users), -1)
>>> m = evaluate(Fixed(), split, ks=(1,))
>>> m["hr@1"], m["mrr@10"], m["n"]
(0.5, 0.75, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from models.errors import ModelsError
from models.metrics import rank_of_target, summarize
from models.padding import left_pad, window_start
from models.splits import SequenceSplit, Stage

if TYPE_CHECKING:
    from models.hail import HAIL


@runtime_checkable
class Scorer(Protocol):
    """Scores every item for a batch of users.

    ``users``: int array [B] of user indices of the split; ``histories``: the B input sequences
    (item indices, oldest first). Returns a float tensor [B, rows] (column 0 = padding, ignored).
    """

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor: ...


class ModelScorer:
    """Adapts a HAIL model to :class:`Scorer`: left-pads histories to ``max_len`` (default: the
    model's ``config.max_len``) and returns ``model.log_probs`` (the peers' mean, or one ``peer``).
    ``stride`` > 0 cuts each history where :func:`models.padding.window_start` says (the worker's
    ``HAILSTREAM_WINDOW_STRIDE``) instead of at its last ``max_len`` items.

    The model is put in eval mode while scoring and restored afterwards, so a trainer can call the
    evaluator between epochs.
    """

    def __init__(self, model: HAIL, peer: int | None = None, max_len: int | None = None, stride: int = 0) -> None:
        self.model = model
        self.peer = peer
        self.stride = stride
        if max_len is None:
            max_len = int(getattr(getattr(model, "config", None), "max_len", 0) or 0)
            if max_len <= 0:
                raise ModelsError("ModelScorer needs max_len: the model has no config.max_len; pass max_len=")
        self.max_len = max_len

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if self.stride:
            histories = [h[window_start(len(h), self.max_len, self.stride) :] for h in histories]
        seqs = left_pad(histories, self.max_len).to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model.log_probs(seqs, peer=self.peer)
        finally:
            self.model.train(was_training)


def target_ranks(
    scorer: Scorer,
    split: SequenceSplit,
    stage: Stage = "test",
    batch_size: int = 512,
    users: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each evaluated user's ``stage`` target: ``(users, ranks)``, both int64.

    ``users`` defaults to ``split.eval_users``; useful alone for significance tests and per-user
    breakdowns. See :func:`evaluate` for the parameters.
    """
    if stage not in ("valid", "test"):
        raise ModelsError(f"stage must be 'valid' or 'test', not {stage!r} (the test split is for final reports)")
    if batch_size < 1:
        raise ModelsError(f"batch_size must be >= 1, got {batch_size}")
    users = split.eval_users if users is None else np.asarray(users, dtype=np.int64)
    targets = split.target(stage)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        t = targets[batch]
        if (t == 0).any():
            raise ModelsError(f"user(s) {batch[t == 0][:5].tolist()} have no {stage} target; evaluate eval_users only")
        hist = [split.history(int(u), stage) for u in batch]
        s = scorer.scores(batch, hist)
        if s.shape[0] != len(batch):
            raise ModelsError(f"scorer returned {s.shape[0]} rows for {len(batch)} users")
        ranks[start : start + len(batch)] = rank_of_target(s.detach().cpu(), t)
    return users, ranks


def evaluate(
    scorer: Scorer,
    split: SequenceSplit,
    stage: Stage = "test",
    ks: Sequence[int] = (5, 10, 20),
    batch_size: int = 512,
    mrr_k: int = 10,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking HR@k / NDCG@k (each k in ``ks``) and MRR@``mrr_k`` over ``split.eval_users``
    (or ``users``), predicting ``stage``'s target from ``split.history(u, stage)``.

    Returns ``{"hr@5": .., "ndcg@5": .., ..., "mrr@10": .., "n": users evaluated}``. Choose models
    on ``stage="valid"``; report ``"test"``.
    """
    _, ranks = target_ranks(scorer, split, stage, batch_size, users)
    return summarize(ranks, ks, mrr_k)


def sampled_ranks(
    scorer: Scorer,
    split: SequenceSplit,
    stage: Stage = "test",
    n_negatives: int = 99,
    seed: int = 12345,
    batch_size: int = 512,
) -> np.ndarray:
    """Ranks of the target among itself and ``n_negatives`` items drawn uniformly (seeded) from the
    items the user has not interacted with: the HAIL authors' protocol, **only** to compare with
    their numbers (DESIGN §4: never mixed with full-ranking results). Rank = negatives scored
    strictly higher. Returns ``[len(eval_users)]`` int64; summarise with
    :func:`models.metrics.summarize`.
    """
    rng = np.random.default_rng(seed)
    users = split.eval_users
    targets = split.target(stage)
    n_items = split.vocab.rows - 1
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        hist = [split.history(int(u), stage) for u in batch]
        s = scorer.scores(batch, hist).detach().cpu()
        for row, (u, h) in enumerate(zip(batch, hist, strict=True)):
            seen = set(h.tolist()) | {int(targets[u])}
            if n_items - len(seen) < n_negatives:
                raise ModelsError(f"user {int(u)} has fewer than {n_negatives} unseen items to sample")
            neg: list[int] = []
            while len(neg) < n_negatives:
                draw = rng.integers(1, n_items + 1, size=2 * n_negatives)
                neg.extend(int(i) for i in draw if int(i) not in seen and int(i) not in neg)
            neg_scores = s[row, torch.tensor(neg[:n_negatives])]
            ranks[start + row] = int((neg_scores > s[row, int(targets[u])]).sum())
    return ranks


def format_table(rows: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """An aligned text table: one row per name, one column per metric (union, first-seen order).

    >>> print(format_table({"pop": {"hr@10": 0.05, "n": 3}, "user-freq": {"hr@10": 0.5612, "n": 3}}))
    model       hr@10  n
    ---------  ------  -
    pop        0.0500  3
    user-freq  0.5612  3
    """
    cols: list[str] = []
    for metrics in rows.values():
        cols.extend(c for c in metrics if c not in cols)

    def cell(v: float | None) -> str:
        if v is None:
            return "-"
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return str(int(v))
        return f"{float(v):.{digits}f}"

    table = [["model", *cols]]
    table += [[name, *(cell(m.get(c)) for c in cols)] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
