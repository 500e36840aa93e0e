"""Training losses of the K-peer ensemble: cross-entropy, MED (DESIGN §3) and the DML baseline.

Pure tensor functions. Shapes: K peers, N training interactions, V items (column 0 = padding, whose
logit the caller has set to ``-inf``). Every loss returns ``(loss, stats)``: ``loss`` is a scalar,
the mean over the N interactions of the per-interaction sum over peers; ``stats`` holds plain
floats for logging.

>>> import torch
>>> z = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))     # p = (.5, .25, .25), so CE of y=0 is ln 2
>>> round(next_item_cross_entropy(z, torch.tensor([0])).item(), 6)
0.693147
>>> q = torch.log(torch.tensor([[0.2, 0.6, 0.2]]))       # a second peer: p_y = 0.2
>>> loss, _ = mutual_exclusivity_distillation([z, q], torch.tensor([0]), form="weighted_ce", med_topk=1)
>>> round(loss.item(), 6)                               # ln2 * (1 + 1*(1 - 0.2)) + ln 5
2.857103

The coded MED (DESIGN §3, the default form), α = 0.5, β = 0, γ = 1, by hand:
H^z = ln 2, H^q = ln 5;
S^z = -[(1 - .2) ln .5 + .6 ln(1 - .25) + .2 ln(1 - .25)] = 0.784663;
S^q = -[(1 - .5) ln .2 + .25 ln(1 - .6) + .25 ln(1 - .2)] = 1.089578;
loss = .5 (ln 2 + ln 5) + .5 (0.784663 + 1.089578) = 2.088413.

>>> loss, s = mutual_exclusivity_distillation([z, q], torch.tensor([0]), alpha=0.5, beta=0.0, gamma=1.0)
>>> round(loss.item(), 6), round(s["soft"], 6)
(2.088413, 1.874241)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from models.errors import ModelsError
from models.names import MED_FORMS

Aggregate = Literal["mean", "max"]
MedForm = Literal["coded", "weighted_ce", "unlikelihood", "exclusive"]
# The reconstructions of MED made before the authors' code was found: ablations only.
RECONSTRUCTED_FORMS = ("weighted_ce", "unlikelihood", "exclusive")
AGGREGATES = ("mean", "max")

Logits = Sequence[torch.Tensor] | torch.Tensor


def next_item_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ``-log softmax(logits)[y]``: logits ``[N, V]``, targets ``[N]`` -> ``[N]``."""
    return F.cross_entropy(logits, targets, reduction="none")


def _peers(logits: Logits) -> list[torch.Tensor]:
    peers = list(logits.unbind(0)) if isinstance(logits, torch.Tensor) else list(logits)
    if not peers:
        raise ModelsError("the loss needs the logits of at least one peer")
    shape = peers[0].shape
    if len(shape) != 2 or any(p.shape != shape for p in peers):
        raise ModelsError(f"every peer's logits must be [N, V] of one shape, got {[tuple(p.shape) for p in peers]}")
    return peers


def _aggregate_others(values: torch.Tensor, how: str) -> torch.Tensor:
    """``values`` ``[K, N]`` -> ``[K, N]``: row k aggregates the rows j != k (mean or max)."""
    k = values.shape[0]
    if how == "mean":
        return (values.sum(0, keepdim=True) - values) / (k - 1)
    if how == "max":
        others = values.unsqueeze(0).expand(k, k, -1)  # [k, j, N]
        eye = torch.eye(k, dtype=torch.bool, device=values.device).unsqueeze(-1)
        return others.masked_fill(eye, float("-inf")).amax(1)
    raise ModelsError(f"aggregate must be one of {AGGREGATES}, not {how!r}")


def top_k_correct(logits: torch.Tensor, targets: torch.Tensor, topk: int) -> torch.Tensor:
    """``1[y within the top-topk]`` as float ``[N]``; ties count in the target's favour (only
    strictly greater logits push it down), so ``topk=1`` means "argmax, possibly shared".

    >>> top_k_correct(torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 1.0]]), torch.tensor([2, 2]), 1).tolist()
    [0.0, 1.0]
    """
    target_logit = logits.gather(1, targets.unsqueeze(1))[:, 0]
    # "fewer than topk strictly higher" <=> "at least the topk-th largest": one top-k pass, no [N, V] mask
    kth = logits.topk(min(topk, logits.shape[1]), dim=1).values[:, -1]
    return (target_logit >= kth).to(logits.dtype)


def ensemble_cross_entropy(logits: Logits, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Independent peers: ``mean_N Σ_k CE^k``. Logits: K x ``[N, V]``; targets ``[N]``."""
    peers = _peers(logits)
    ce = torch.stack([next_item_cross_entropy(z, targets) for z in peers])  # [K, N]
    loss = ce.sum(0).mean()
    return loss, {"loss": float(loss.detach()), "ce": float(ce.detach().mean())}


def log1m_exp(logp: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(logp))`` elementwise for ``logp <= 0``, stable at both ends (Mächler 2012):
    ``log(-expm1(x))`` near 0, ``log1p(-exp(x))`` below ``-ln 2``; ``logp = 0`` is clamped to
    ``-1e-7`` (p = 1 would give -inf). ``-inf`` (padding) gives 0.

    >>> [round(v, 6) + 0.0 for v in log1m_exp(torch.log(torch.tensor([0.25, 0.75, 0.0]))).tolist()]
    [-0.287682, -1.386294, 0.0]
    """
    x = logp.clamp(max=-1e-7)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def alpha_at(alpha: float, step: int = 0, total_steps: int = 0) -> float:
    """The hard-loss weight at ``step``: ``alpha`` itself when ``alpha >= 0``; for ``alpha < 0``
    the authors' schedule ``0.98 ** floor(step / (0.02 * total_steps + 1))`` (1 at the start,
    decaying about 2% every 2% of training).

    >>> alpha_at(0.5, 10, 100), alpha_at(-1, 0, 100), round(alpha_at(-1, 9, 100), 4)  # floor(9 / 3) = 3 decays
    (0.5, 1.0, 0.9412)
    """
    if alpha >= 0:
        if alpha > 1:
            raise ModelsError(f"med_alpha must be <= 1 (or < 0 for the schedule), not {alpha}")
        return float(alpha)
    return float(0.98 ** math.floor(step / (0.02 * max(total_steps, 0) + 1)))


def truncation_mask(ce: torch.Tensor, beta: float) -> torch.Tensor:
    """``m`` ``[N]`` (float 0/1) from per-peer CE ``[K, N]``: a sample is dropped (0) when it is
    among the ``floor(beta·N)`` largest CEs of **every** peer (jointly hardest, likely noise).

    >>> truncation_mask(torch.tensor([[5., 1., 4., 0.], [3., 9., 4., 0.]]), 0.5).tolist()  # tops {0,2} & {1,2}
    [1.0, 1.0, 0.0, 1.0]
    """
    if not 0.0 <= beta < 1.0:
        raise ModelsError(f"med_beta must be in [0, 1), not {beta}")
    n = ce.shape[1]
    n_drop = int(math.floor(beta * n))
    keep = torch.ones(n, dtype=ce.dtype, device=ce.device)
    if n_drop == 0:
        return keep
    hardest = torch.ones(n, dtype=torch.bool, device=ce.device)
    for row in ce:
        top = torch.zeros(n, dtype=torch.bool, device=ce.device)
        top[row.topk(n_drop).indices] = True
        hardest &= top
    return keep.masked_fill(hardest, 0.0)


class _MedTerms(torch.autograd.Function):
    """Per-peer ``CE^k_i`` and soft term ``S^k_i`` (both ``[K, N]``, before truncation) of the coded
    MED from K peers' logits ``[N, V]``, with the gradient written out, so that training keeps two
    ``[N, V]`` tensors per peer (``p`` and ``r``) instead of autograd's dozen. With ``w`` the other
    peers' weights (constants) and ``p = softmax(z)``:

    ``∂CE_i/∂z_l = p_l - y_l``;
    ``∂S_i/∂z_l = w_pos (p_l - y_l) + r_l - p_l Σ_j r_j`` with ``r_j = w_j p_j / (1 - p_j)``,

    from ``∂ log(1 - p_j)/∂z_l = -p_j (δ_jl - p_l) / (1 - p_j)``. ``1 - p`` is at least ``1e-7`` (p = 1
    would divide by 0) and comes from :func:`log1m_exp` where ``p > 0.5`` (exact near 1).
    tests/models/test_coded_med.py checks values and gradients against plain autograd (float64)."""

    @staticmethod
    def forward(ctx, targets: torch.Tensor, gamma: float, *z: torch.Tensor):
        k, n = len(z), targets.shape[0]
        y = targets.view(n, 1)
        logp = [F.log_softmax(zk, dim=-1) for zk in z]
        ce = torch.stack([-lp.gather(1, y)[:, 0] for lp in logp])  # [K, N]
        p = [lp.exp() for lp in logp]
        pw = p if gamma == 1 else [pk.pow(gamma) for pk in p]
        pw_sum = pw[0] + pw[1] if k == 2 else torch.stack(pw).sum(0)
        uy = (1.0 - torch.exp(-ce)).pow(gamma)
        w_pos = (uy.sum(0, keepdim=True) - uy) / (k - 1)  # [K, N]
        neg, rs = [], []
        for pk, pwk, lpk in zip(p, pw, logp, strict=True):
            w = torch.sub(pw_sum, pwk)  # the other peers' weights (their mean below)
            if k > 2:
                w.div_(k - 1)
            w.scatter_(1, y, 0.0)  # y_ij = 1: no unlikelihood term
            q = torch.sub(1.0, pk).clamp_(min=1e-7)  # 1 - p; padding: p = 0, q = 1
            near_one = (pk > 0.5).nonzero(as_tuple=True)  # at most one item per row: exact there
            q[near_one] = log1m_exp(lpk[near_one]).exp_()
            neg.append((w * q.log()).sum(1))
            rs.append(w.mul_(pk).div_(q))  # w p / (1 - p)
        soft = w_pos * ce - torch.stack(neg)
        ctx.save_for_backward(targets, w_pos, *p, *rs)
        return ce, soft

    @staticmethod
    def backward(ctx, g_ce: torch.Tensor, g_soft: torch.Tensor):
        targets, w_pos, *saved = ctx.saved_tensors
        k = len(saved) // 2
        a = g_ce + g_soft * w_pos  # the (p - y) coefficient, [K, N]
        grads = []
        for i in range(k):
            p, r = saved[i], saved[k + i]
            dz = p * (a[i] - g_soft[i] * r.sum(1)).unsqueeze(-1)
            dz.addcmul_(r, g_soft[i].unsqueeze(-1))
            dz.scatter_add_(1, targets.view(-1, 1), -a[i].unsqueeze(-1))
            grads.append(dz)
        return None, None, *grads


def coded_med(
    logits: Logits,
    targets: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 0.02,
    gamma: float = 1.0,
    step: int = 0,
    total_steps: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """MED as the authors' code computes it (DESIGN §3): ``Σ_k [α·H^k + (1 - α)·S^k]``.

    Args:
        logits: K >= 2 tensors ``[N, V]`` (or ``[K, N, V]``); any row-normalised log-probabilities
            work too (``log_softmax`` of a log-distribution is itself). Padding column at ``-inf``.
        targets: ``[N]``.
        alpha: weight of the hard loss; ``< 0`` selects the schedule of :func:`alpha_at`.
        beta: truncation share (:func:`truncation_mask`); ``N`` still counts every sample.
        gamma: exponent of the peer weights.
        step, total_steps: training progress, only read by the ``alpha < 0`` schedule.

    ``H^k = (1/N) Σ_i m_i·CE^k_i``; ``S^k = (1/N) Σ_i m_i Σ_j -[y_ij (1 - sg p̄_ij)^γ log p^k_ij
    + (1 - y_ij) (sg p̄_ij^γ) log(1 - p^k_ij)]`` where ``p̄`` is the other peer's probability
    (for K > 2 each weight is the mean over the K - 1 others). The weights carry no gradient.

    Stats: loss, ce (mean CE over peers and N), hard, soft (each summed over peers), alpha,
    kept (share of samples with m_i = 1).
    """
    peers = _peers(logits)
    if len(peers) < 2:
        raise ModelsError("MED needs K >= 2 peers; for one network use distill='none' (plain cross-entropy)")
    if gamma < 0:
        raise ModelsError(f"med_gamma must be >= 0, not {gamma}")
    a = alpha_at(alpha, step, total_steps)
    n = targets.shape[0]
    ce, soft = _MedTerms.apply(targets, float(gamma), *peers)
    m = truncation_mask(ce.detach(), beta)
    hard_k = (m * ce).sum(1) / n
    soft_k = (m * soft).sum(1) / n
    loss = (a * hard_k + (1.0 - a) * soft_k).sum()
    return loss, {
        "loss": float(loss.detach()),
        "ce": float(ce.detach().mean()),
        "hard": float(hard_k.detach().sum()),
        "soft": float(soft_k.detach().sum()),
        "alpha": a,
        "kept": float(m.mean()),
    }


def mutual_exclusivity_distillation(
    logits: Logits,
    targets: torch.Tensor,
    med_weight: float = 1.0,
    med_topk: int = 10,
    aggregate: Aggregate | str = "mean",
    form: MedForm | str = "coded",
    gate: bool = True,
    alpha: float = 0.5,
    beta: float = 0.02,
    gamma: float = 1.0,
    step: int = 0,
    total_steps: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """MED: ``form="coded"`` (the default) is :func:`coded_med` with ``alpha``, ``beta``, ``gamma``
    (``step``/``total_steps`` feed the α < 0 schedule), DESIGN §3. The other forms are the earlier
    reconstructions, kept as ablations: ``loss = mean_N Σ_k (CE^k + λ·MED^k)`` as below.

    Args:
        logits: K >= 2 tensors ``[N, V]`` (or one ``[K, N, V]``), padding column at ``-inf``.
        targets: ``[N]`` item indices (never 0).
        med_weight: λ; 0 gives exactly ``Σ_k CE^k``.
        med_topk: ``correct^k = 1[y within the top-med_topk of peer k]``.
        aggregate: how ``u^{-k}`` (and, for ``exclusive``, ``correct^{-k}``) combine the other
            peers j != k: ``"mean"`` or ``"max"``.
        form: with ``w^k = λ·correct^k·u^{-k}`` and ``u^{-k} = agg_j stopgrad(1 - p^j_y)``:
            ``"weighted_ce"``: ``CE^k·(1 + w^k)``;
            ``"unlikelihood"``: ``CE^k + w^k·(1 - p^k_y)`` (grad flows through ``p^k_y``);
            ``"exclusive"``: ``CE^k·(1 + w^k·(1 - correct^{-k}))`` - only where the others miss.
        gate: False drops the ``correct^k`` factor (the "no correct gate" ablation).

    Returns ``(loss, stats)``; stats: loss, ce (mean over peers and N), med (mean extra term per
    peer), correct (share of correct^k), u (mean u^{-k}), active (share with a non-zero weight).

    The weights are detached, so for ``weighted_ce`` ``∂loss/∂z^k = (1 + w^k)(p^k - onehot(y)) / N``.
    """
    if form not in MED_FORMS:
        raise ModelsError(f"med_form must be one of {MED_FORMS}, not {form!r}")
    if form == "coded":
        return coded_med(logits, targets, alpha, beta, gamma, step, total_steps)
    peers = _peers(logits)
    if len(peers) < 2:
        raise ModelsError("MED needs K >= 2 peers; for one network use distill='none' (plain cross-entropy)")
    if aggregate not in AGGREGATES:
        raise ModelsError(f"med_aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    if med_topk < 1:
        raise ModelsError(f"med_topk must be >= 1, not {med_topk}")

    ce = torch.stack([next_item_cross_entropy(z, targets) for z in peers])  # [K, N]
    p_y = torch.exp(-ce)  # softmax probability of the target, with grad
    if med_weight == 0:
        loss = ce.sum(0).mean()
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach().mean()), "med": 0.0}

    with torch.no_grad():
        correct = torch.stack([top_k_correct(z, targets, med_topk) for z in peers])  # [K, N]
        u = _aggregate_others(1.0 - p_y, aggregate)
        gate_k = correct if gate else torch.ones_like(correct)
        if form == "exclusive":
            gate_k = gate_k * (1.0 - _aggregate_others(correct, aggregate))
        weight = gate_k * u  # [K, N], no grad
    extra = weight * (1.0 - p_y) if form == "unlikelihood" else weight * ce
    loss = (ce + med_weight * extra).sum(0).mean()
    stats = {
        "loss": float(loss.detach()),
        "ce": float(ce.detach().mean()),
        "med": float(extra.detach().mean()),
        "correct": float(correct.mean()),
        "u": float(u.mean()),
        "active": float((weight > 0).float().mean()),
    }
    return loss, stats


def _kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` per row ``[N]``; columns the teacher gives probability 0 (the
    ``-inf`` padding) contribute 0 instead of ``0·(-inf - -inf) = nan``."""
    p = teacher_logp.exp()
    terms = torch.where(p > 0, p * (teacher_logp - student_logp), torch.zeros_like(p))
    return terms.sum(1)


def dml_loss(logits: Logits, targets: torch.Tensor, weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Deep Mutual Learning (Zhang et al., 2018): ``mean_N Σ_k (CE^k + weight·mean_{j≠k} KL(sg(p^j) || p^k))``.

    Logits: K >= 2 x ``[N, V]``; targets ``[N]``. ``weight=0`` is ``Σ_k CE^k``.

    >>> z = torch.log(torch.tensor([[0.5, 0.5]])); q = torch.log(torch.tensor([[0.25, 0.75]]))
    >>> loss, s = dml_loss([z, q], torch.tensor([0]), weight=1.0)
    >>> round(s["kl"], 6)       # mean of KL(q||z) = .1308 and KL(z||q) = .1438
    0.137327
    """
    peers = _peers(logits)
    if len(peers) < 2:
        raise ModelsError("DML needs K >= 2 peers; for one network use distill='none'")
    ce = torch.stack([next_item_cross_entropy(z, targets) for z in peers])  # [K, N]
    logp = [F.log_softmax(z, dim=1) for z in peers]
    kls = []
    for k, student in enumerate(logp):
        kl_k = [_kl(teacher.detach(), student) for j, teacher in enumerate(logp) if j != k]
        kls.append(torch.stack(kl_k).mean(0))
    kl = torch.stack(kls)  # [K, N]
    loss = (ce + weight * kl).sum(0).mean()
    return loss, {"loss": float(loss.detach()), "ce": float(ce.detach().mean()), "kl": float(kl.detach().mean())}
