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

**Neighbours, not only successors.** On Beauty a counter that also counts pairs two steps apart
(``lags=(1.0, 0.5)``), reversed pairs (``backward=0.5``: the order of same-day purchases is
arbitrary) and reads the rows of the user's last three items (``recent=(1.0, 0.6, 0.2)``) reaches
test NDCG@10 0.043 against 0.030 for successors of the last item alone (bench/RESULTS.md,
settings chosen on validation). The table then holds weighted counts, and ``cur`` above becomes
the user's latest items, each row weighted: ``c(i) = Σ_r recent_r · c(x_r, i)``,
``T = Σ_r recent_r · T(x_r)``.

``trans_mode="bias"`` uses the same rows differently: not as a mixture component but as evidence
added to every peer's logits, ``z_i + softplus(gate) · log(1 + c(i))`` (:meth:`TransitionHead.bias`),
so that the softmax multiplies the counter's evidence and the network learns what it misses.

>>> nxt, cnt, tot = transition_table([np.array([1, 2, 3])], 4, 3, lags=(1.0, 0.5), backward=0.5)
>>> nxt[2].tolist(), cnt[2].tolist(), float(tot[2])   # 3 after 2; 1 before 2 (reversed, half)
([3, 1, 0], [1.0, 0.5, 0.0], 1.5)
>>> nxt[1].tolist(), cnt[1].tolist()                  # 2 right after 1, 3 two steps after (half)
([2, 3, 0], [1.0, 0.5, 0.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.baselines.cooccurrence import BACKWARD, LAGS, RECENT
from models.errors import ModelsError
from models.vocab import PAD

#: the neighbour settings (:class:`models.hail.HailConfig` fields): the co-occurrence counter's defaults
NEIGHBOURS: dict[str, tuple[float, ...] | float] = {"trans_lags": LAGS, "trans_backward": BACKWARD, "trans_recent": RECENT}


def transition_table(
    sequences: Sequence[np.ndarray], n_rows: int, width: int,
    base: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    lags: Sequence[float] = (1.0,), backward: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count the pairs ``(a, b)`` of ``sequences`` (item indices, oldest first; padding ignored),
    ``b`` d steps after ``a`` with weight ``lags[d - 1]`` and, with ``backward`` > 0, also ``(b, a)``
    with that weight times ``backward``, into ``(next [n_rows, width] long, count [n_rows, width] float, total [n_rows] float)``:
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
    check_weights(lags, backward)
    heads, tails, weights = [], [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        for d, v in enumerate(lags, 1):
            a, b = s[:-d], s[d:]
            ok = (a != PAD) & (b != PAD)
            pairs = [(a[ok], b[ok], v)] + ([(b[ok], a[ok], v * backward)] if backward else [])
            for head, tail, weight in pairs:
                heads.append(head)
                tails.append(tail)
                weights.append(np.full(head.size, float(weight)))
    if any(h.size and max(h.max(), t.max()) >= n_rows for h, t in zip(heads, tails, strict=True)):
        raise ModelsError(f"an item index is outside a table of {n_rows} rows")
    total = np.zeros(n_rows)
    if heads:
        np.add.at(total, np.concatenate(heads), np.concatenate(weights))
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


def check_weights(lags: Sequence[float], backward: float, recent: Sequence[float] = (1.0,)) -> None:
    """Raise :class:`ModelsError` unless every weight is >= 0 and the first lag and the first recent
    item's weight are > 0 (the table's definition needs the adjacent successor and the latest item)."""
    if not lags or not recent or lags[0] <= 0 or recent[0] <= 0:
        raise ModelsError("the transition weights need a first lag and a latest-item weight > 0")
    if min(*lags, *recent, backward) < 0:
        raise ModelsError(f"transition weights must be >= 0: lags {tuple(lags)}, recent {tuple(recent)}, backward {backward}")


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
        table: tuple[torch.Tensor, torch.Tensor, torch.Tensor], recent: torch.Tensor,
        targets: torch.Tensor | None = None, weights: Sequence[float] = (1.0,), lags: Sequence[float] = (1.0,),
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(items [N, R·W], count [N, R·W], total [N])`` of the ``recent`` items ``[N, R]`` (each
        query's latest item first; padding reads an empty row), row r weighted by ``weights[r]``.
        With ``targets`` ``[N]`` (training) each query's own pairs are left out: ``target`` was
        counted ``lags[r]`` times in the row of the item r steps before it (the table's ``lags``).

        >>> table = transition_table([np.array([1, 2, 3]), np.array([1, 2])], 4, 2)
        >>> nxt, cnt, tot = TransitionHead.rows(table, torch.tensor([[2, 1]]), weights=(1.0, 0.5))
        >>> nxt.tolist(), cnt.tolist(), tot.tolist()   # 3 after 2; 2 (twice) after 1, at half weight; T = 1 + 0.5·2
        ([[3, 0, 2, 0]], [[1.0, 0.0, 1.0, 0.0]], [2.0])
        >>> TransitionHead.rows(table, torch.tensor([[1, 0]]), torch.tensor([2]), (1.0, 0.5))[1].tolist()
        [[1.0, 0.0, 0.0, 0.0]]
        """
        depth = recent.shape[1]
        w = torch.tensor(list(weights)[:depth], dtype=table[1].dtype, device=recent.device)
        nxt, cnt, tot = table[0][recent], table[1][recent], table[2][recent]  # [N, R, W], [N, R]
        if targets is not None:
            own = torch.tensor([*lags, *[0.0] * depth][:depth], dtype=cnt.dtype, device=recent.device)
            real = ((targets != PAD).unsqueeze(1) & (recent != PAD)).to(cnt.dtype) * own  # [N, R]
            hit = (nxt == targets.view(-1, 1, 1)).to(cnt.dtype) * real.unsqueeze(2)
            cnt = (cnt - hit).clamp_min(0.0)
            tot = (tot - real).clamp_min(0.0)
        return nxt.flatten(1), (cnt * w.view(1, -1, 1)).flatten(1), (tot * w).sum(1)

    @staticmethod
    def bias(logits: torch.Tensor, gate: torch.Tensor, items: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``trans_mode="bias"``: the logits ``[N, V]`` plus ``softplus(gate) · log(1 + c(i))``,
        ``c`` the rows' counts summed per item (``items``/``count`` ``[N, S]`` from :meth:`rows`):
        the counter enters the softmax as evidence it multiplies, so the network learns what the
        counter misses, where the mixture adds two distributions.

        >>> z = torch.zeros(1, 4)
        >>> out = TransitionHead.bias(z, torch.tensor([0.0]), torch.tensor([[2, 2, 0]]), torch.tensor([[1.0, 2.0, 5.0]]))
        >>> [round(float(v), 4) for v in out[0]]   # softplus(0) · log(1 + 3) on item 2; padding untouched
        [0.0, 0.0, 0.9609, 0.0]
        """
        dense = torch.zeros_like(logits).scatter_add_(1, items, count)
        dense[:, PAD] = 0.0
        return logits + F.softplus(gate).unsqueeze(1) * torch.log1p(dense)

    def split(self, log_gate: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log weight the component lends the softmax [N], weight per count [N])`` for the
        component's gate ``log g_trans`` ``[N]`` and the rows' totals ``T`` ``[N]``:
        ``log(g·κ/(T+κ))`` and ``g/(T+κ)``."""
        kappa = self.log_kappa.exp()
        return log_gate + self.log_kappa - (total + kappa).log(), log_gate.exp() / (total + kappa)
