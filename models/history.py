"""History-aware output: a learned copy/repeat gate over the user's own past items (RepeatNet-style).

On check-in data most next events are revisits. A softmax over all items has to re-learn, for
each user, which of their own items come back; a copy distribution over the items of the
sequence gets them for free. For each query (the hidden state ``h`` that predicts the next item)

    p(i) = g · p_copy(i) + (1 - g) · softmax(z)_i,      g = sigmoid(w_g · h + b_g)
    p_copy(i) = Σ_{s: item_s = i} a_s + Σ_{s: item_{s+1} = i} b_s,
    (a, b) = softmax over both slot sets of
        a: q·k_s / sqrt(H) + r[age_s]                                  (the item at s: a repeat)
        b: q·k'_s / sqrt(H) + r'[age_s] + m·1[item_s = current item]   (what followed s)
    q = W_q h,   k_s = W_k e_{item_s},   k'_s = W'_k e_{item_s}

where ``s`` runs over the earlier positions of the sequence, ``age_s`` = 0 for the latest item,
and ``r``, ``r'`` are learned biases per age (a recency decay: with ``q·k = 0`` and
``r[age] = -age·c``, the first slot set is exactly a recency-decayed visit counter over the
window). Repeated items add up, so frequency and recency come for free; the second slot set is the
user's own transitions (after the current item, where did this user go before?), which the
counters cannot see; the query terms learn which of the user's items fit the current context.
It is trained end to end through ``log p`` (cross-entropy or MED on the mixture) and works with
every encoder: it only reads hidden states and the item table.

>>> import torch
>>> head = CopyHead(hidden=4, max_len=3)
>>> h = torch.zeros(1, 1, 4); items = torch.tensor([[0, 2, 2]]); emb = torch.zeros(1, 3, 4)
>>> ages = torch.tensor([[[2, 1, 0]]]); allowed = (items != 0).unsqueeze(1)
>>> no_succ = torch.zeros_like(allowed)
>>> a, b, g = head(h, emb, ages, allowed, no_succ, no_succ)   # k = 0, r = 0: equal weight on both visits
>>> a.shape, g.shape
(torch.Size([1, 1, 3]), torch.Size([1, 1]))
>>> logits = torch.tensor([[float("-inf"), 0.0, 0.0, 0.0]])   # uniform softmax over items 1..3
>>> logp = head.mix(logits, a[:, 0], b[:, 0], g[:, 0], items, items)  # gate starts at 0.5
>>> [round(float(v), 4) for v in logp.detach().exp()[0, 1:]]          # item 2: 0.5·1 + 0.5·(1/3)
[0.1667, 0.6667, 0.1667]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.vocab import PAD

_TINY = 1e-30


def successors(items: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` -> ``[B, L]``: the item after each position (padding after the last).

    >>> successors(torch.tensor([[0, 3, 4, 5]])).tolist()
    [[3, 4, 5, 0]]
    """
    return torch.cat([items[:, 1:], torch.zeros_like(items[:, :1])], dim=1)


class CopyHead(nn.Module):
    """The copy distribution and gate of one peer; see the module docstring."""

    def __init__(self, hidden: int, max_len: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden, bias=False)
        self.age_bias = nn.Parameter(torch.zeros(max_len + 1))
        self.succ_key = nn.Linear(hidden, hidden, bias=False)
        self.succ_age_bias = nn.Parameter(torch.zeros(max_len + 1))
        self.match_bias = nn.Parameter(torch.tensor(2.0))
        self.gate = nn.Linear(hidden, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(
        self, h: torch.Tensor, key_emb: torch.Tensor, ages: torch.Tensor, allowed: torch.Tensor,
        succ_allowed: torch.Tensor, match: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention over the past and the gate's logit.

        ``h`` ``[B, Q, H]`` queries; ``key_emb`` ``[B, S, H]`` item embeddings of the sequence's
        positions; ``ages`` ``[B or 1, Q, S]`` long (0 = latest; clamped to the table);
        ``allowed`` ``[B, Q, S]`` bool (which past positions query q may copy from);
        ``succ_allowed`` ``[B, Q, S]`` (positions whose successor query q may copy);
        ``match`` ``[B, Q, S]`` bool (item_s equals the query's current item). Returns
        ``(a, b [B, Q, S], gate_logit [B, Q])``; a query with no allowed slot gets zeros.
        """
        q = self.query(h)  # [B, Q, H]
        scale = math.sqrt(self.hidden)
        top = self.age_bias.shape[0] - 1
        direct = q @ self.key(key_emb).transpose(1, 2) / scale + self.age_bias[ages.clamp(0, top)]
        succ = q @ self.succ_key(key_emb).transpose(1, 2) / scale + self.succ_age_bias[ages.clamp(0, top)]
        succ = succ + self.match_bias * match.to(succ.dtype)
        scores = torch.cat([direct.masked_fill(~allowed, float("-inf")),
                            succ.masked_fill(~succ_allowed, float("-inf"))], dim=-1)
        ab = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        n = key_emb.shape[1]
        return ab[..., :n], ab[..., n:], self.gate(h).squeeze(-1)

    @staticmethod
    def mix(
        logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gate_logit: torch.Tensor,
        key_items: torch.Tensor, succ_items: torch.Tensor,
    ) -> torch.Tensor:
        """``log p`` ``[N, V]`` of the mixture: ``logits`` ``[N, V]`` (padding column at -inf),
        ``a``, ``b`` ``[N, S]``, ``gate_logit`` ``[N]``, ``key_items``/``succ_items`` ``[N, S]``
        item indices (the item at each slot, and the item that followed it); the gate's share
        ``sigmoid(gate_logit)`` goes to the slots, the rest to the softmax (:func:`mix_slots`)."""
        mass = torch.cat([a, b], 1) * torch.sigmoid(gate_logit).unsqueeze(-1)
        return mix_slots(logits, F.logsigmoid(-gate_logit), torch.cat([key_items, succ_items], 1), mass)


def mix_slots(logits: torch.Tensor, log_gen_weight: torch.Tensor, items: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """``log p`` ``[N, V]`` of ``p = w · softmax(logits) + Σ_s mass_s · 1[item = items_s]``:
    ``logits`` ``[N, V]`` (padding column at -inf), ``log_gen_weight`` ``[N]`` = ``log w``,
    ``items``/``mass`` ``[N, S]`` slot items and their probability mass (slots on padding are
    dropped).

    Only the slots' items change: each distinct slot item gets ``logaddexp(log_gen, log Σ mass)``
    (log space, so an item the softmax finds very unlikely keeps a finite, differentiable
    log-probability), every other item keeps ``log_gen``. Written as ``[N, S]`` values scattered
    into ``log_gen`` rather than a dense ``logaddexp`` over all V items (its backward was the most
    expensive op of a training step); a repeated item's slots are summed first and written once
    (the others are sent to the padding column, which ends at ``-inf``).

    >>> logits = torch.tensor([[float("-inf"), 0.0, 0.0]])
    >>> lp = mix_slots(logits, torch.tensor([0.5]).log(), torch.tensor([[2, 2, 0]]), torch.tensor([[0.2, 0.3, 0.9]]))
    >>> [round(float(v), 4) for v in lp.exp()[0, 1:]]   # 0.5·0.5, 0.5·0.5 + 0.2 + 0.3
    [0.25, 0.75]
    """
    log_gen = F.log_softmax(logits, dim=-1) + log_gen_weight.unsqueeze(-1)
    slots, order = items.sort(dim=1)  # equal items adjacent
    p_slot = mass.gather(1, order)
    with torch.no_grad():
        first = torch.ones_like(slots, dtype=torch.bool)
        first[:, 1:] = slots[:, 1:] != slots[:, :-1]
        run = first.cumsum(1) - 1  # which distinct item of its row each slot is
        where = slots.masked_fill(~first, PAD)  # one write per distinct item
    total = torch.zeros_like(p_slot).scatter_add_(1, run, p_slot).gather(1, run)  # summed over its slots
    log_slot = total.clamp_min(_TINY).log()
    out = log_gen.scatter(1, where, torch.logaddexp(log_gen.gather(1, slots), log_slot))
    out[:, PAD] = float("-inf")
    return out
