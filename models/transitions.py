"""Global transitions: what followed an item, for every user, as a learned mixture component.

On sparse purchase data (Amazon Beauty: 9 items per user, almost no repeats) the user's own
history has little to copy, but the catalogue's item-to-item transitions carry a signal a 64-wide
softmax does not memorise: a first-order transition counter (the Markov baseline) scores as well as
a trained SASRec, and the two are complementary. This module keeps, for each item, its ``width``
most frequent successors and their counts (a fixed-size table the model stores as buffers), and
:class:`TransitionHead` mixes them into a peer's output with a gate learned end to end:

    p(i) = g_gen · softmax(z)_i + g_copy · p_copy(i) + g_trans · p_trans(i)
    p_trans(i) = c(cur, i) / (T(cur) + κ)  +  κ / (T(cur) + κ) · softmax(z)_i

``cur`` is the query's current (latest) item, ``c`` its successor counts, ``T`` all its successor
counts, and κ > 0 a learned pseudo-count: a row seen twice lends most of its mass back to the
softmax, a row seen a thousand times almost none. ``(g_gen, g_copy, g_trans)`` is a softmax over
``(0, copy gate logit, transition gate logit)`` of the query's hidden state (no copy head: two
components).

Training is **leave one out**: the table is counted from the training sequences, so each training
query's own transition ``cur → target`` is in it; :meth:`TransitionHead.rows` removes it
(``c - 1``, ``T - 1``) so the gate learns how much the *other* users' transitions are worth, not
to read the answer off the table.

>>> nxt, cnt, tot = transition_table([np.array([1, 2, 3]), np.array([1, 2]), np.array([1, 3])], 4, 2)
>>> nxt[1].tolist(), cnt[1].tolist(), float(tot[1])   # after 1: 2 twice, 3 once
([2, 3], [2.0, 1.0], 3.0)
>>> nxt[3].tolist(), float(tot[3])                     # nothing followed 3
([0, 0], 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from models.errors import ModelsError
from models.vocab import PAD


def transition_table(
    sequences: Sequence[np.ndarray], n_rows: int, width: int,
    base: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count consecutive pairs ``(a, b)`` of ``sequences`` (item indices, oldest first; padding
    ignored) into ``(next [n_rows, width] long, count [n_rows, width] float, total [n_rows] float)``:
    each item's ``width`` most frequent successors (ties: smaller index first; unused slots are
    padding with count 0) and the count of all its successors, kept or not. ``base`` (an earlier
    table, possibly of fewer rows) is added first: its kept counts and its totals.

    >>> t = transition_table([np.array([1, 2])], 3, 1)
    >>> t2 = transition_table([np.array([1, 3]), np.array([1, 3])], 4, 1, base=t)
    >>> t2[0][1].tolist(), t2[1][1].tolist(), float(t2[2][1])   # 3 (2 counts) now beats 2 (1)
    ([3], [2.0], 3.0)
    """
    if width < 1:
        raise ModelsError(f"width must be >= 1 successors per item, not {width}")
    heads, tails, weights = [], [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        ok = (s[:-1] != PAD) & (s[1:] != PAD)
        heads.append(s[:-1][ok])
        tails.append(s[1:][ok])
        weights.append(np.ones(int(ok.sum())))
    if any(h.size and max(h.max(), t.max()) >= n_rows for h, t in zip(heads, tails, strict=True)):
        raise ModelsError(f"an item index is outside a table of {n_rows} rows")
    total = np.zeros(n_rows)
    if heads:
        np.add.at(total, np.concatenate(heads), 1.0)
    if base is not None:
        b_next, b_count, b_total = (t.detach().cpu().numpy() for t in base)
        rows = b_next.shape[0]
        if rows > n_rows:
            raise ModelsError(f"the base table has {rows} rows, more than n_rows={n_rows}")
        kept = b_next != PAD
        heads.append(np.repeat(np.arange(rows), kept.sum(1)))
        tails.append(b_next[kept])
        weights.append(b_count[kept].astype(np.float64))
        total[:rows] += b_total
    a = np.concatenate(heads) if heads else np.zeros(0, np.int64)
    b = np.concatenate(tails) if tails else np.zeros(0, np.int64)
    w = np.concatenate(weights) if weights else np.zeros(0)
    keys, inverse = np.unique(a * n_rows + b, return_inverse=True)
    counts = np.bincount(inverse, weights=w)
    head, tail = keys // n_rows, keys % n_rows
    order = np.lexsort((tail, -counts, head))  # by item, then most frequent, then smaller index
    head, tail, counts = head[order], tail[order], counts[order]
    starts = np.searchsorted(head, head, side="left")
    rank = np.arange(head.size) - starts
    keep = rank < width
    nxt = np.zeros((n_rows, width), np.int64)
    cnt = np.zeros((n_rows, width))
    nxt[head[keep], rank[keep]] = tail[keep]
    cnt[head[keep], rank[keep]] = counts[keep]
    return torch.from_numpy(nxt), torch.from_numpy(cnt).float(), torch.from_numpy(total).float()


class TransitionHead(nn.Module):
    """One peer's transition gate and pseudo-count κ; see the module docstring."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.log_kappa = nn.Parameter(torch.zeros(()))

    @staticmethod
    def rows(
        table: tuple[torch.Tensor, torch.Tensor, torch.Tensor], current: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(next [N, W], count [N, W], total [N])`` of the ``current`` items ``[N]``; with
        ``targets`` ``[N]`` (training), each query's own transition is left out."""
        nxt, cnt, tot = table[0][current], table[1][current], table[2][current]
        if targets is not None:
            own = (nxt == targets.unsqueeze(1)) & (targets != PAD).unsqueeze(1)
            cnt = (cnt - own.to(cnt.dtype)).clamp_min(0.0)
            tot = (tot - (targets != PAD).to(tot.dtype)).clamp_min(0.0)
        return nxt, cnt, tot

    def split(self, log_gate: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log weight the component lends the softmax [N], weight per count [N])`` for the
        component's gate ``log g_trans`` ``[N]`` and the rows' totals ``T`` ``[N]``:
        ``log(g·κ/(T+κ))`` and ``g/(T+κ)``."""
        kappa = self.log_kappa.exp()
        return log_gate + self.log_kappa - (total + kappa).log(), log_gate.exp() / (total + kappa)
