"""The coded MED (DESIGN §3, ``med_form="coded"``): hand values, stop-gradient, truncation, α, K = 3."""

from __future__ import annotations

import math

import pytest
import torch

from models.errors import ModelsError
from models.losses import (
    alpha_at,
    coded_med,
    ensemble_cross_entropy,
    log1m_exp,
    mutual_exclusivity_distillation,
    truncation_mask,
)

A = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
B = torch.log(torch.tensor([[0.2, 0.6, 0.2]]))
C = torch.log(torch.tensor([[0.1, 0.3, 0.6]]))
Y = torch.tensor([0])


def by_hand(peers: list[list[float]], y: int, alpha: float, gamma: float) -> float:
    """DESIGN §3 written out with Python floats for one sample (β = 0, N = 1)."""
    total = 0.0
    for k, pk in enumerate(peers):
        others = [p for j, p in enumerate(peers) if j != k]
        hard = -math.log(pk[y])
        soft = 0.0
        for j, pkj in enumerate(pk):
            if j == y:
                w = sum((1 - o[j]) ** gamma for o in others) / len(others)
                soft -= w * math.log(pkj)
            else:
                w = sum(o[j] ** gamma for o in others) / len(others)
                soft -= w * math.log(1 - pkj)
        total += alpha * hard + (1 - alpha) * soft
    return total


def test_coded_is_the_default_form_and_matches_hand_value() -> None:
    loss, stats = mutual_exclusivity_distillation([A, B], Y, alpha=0.5, beta=0.0, gamma=1.0)
    # 0.5 (ln 2 + ln 5) + 0.5 (0.784663 + 1.089578), see the module doctest
    assert float(loss) == pytest.approx(2.088413, abs=1e-6)
    assert stats["soft"] == pytest.approx(1.874241, abs=1e-6)
    assert float(loss) == pytest.approx(by_hand([[.5, .25, .25], [.2, .6, .2]], 0, 0.5, 1.0), abs=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
def test_three_peers_average_the_other_peers_weights(alpha: float, gamma: float) -> None:
    loss, _ = coded_med([A, B, C], Y, alpha=alpha, beta=0.0, gamma=gamma)
    expected = by_hand([[.5, .25, .25], [.2, .6, .2], [.1, .3, .6]], 0, alpha, gamma)
    assert float(loss) == pytest.approx(expected, abs=1e-5)


def test_alpha_one_is_cross_entropy() -> None:
    torch.manual_seed(0)
    zs = [torch.randn(7, 9) for _ in range(3)]
    y = torch.randint(1, 9, (7,))
    loss, _ = coded_med(zs, y, alpha=1.0, beta=0.0)
    ref, _ = ensemble_cross_entropy(zs, y)
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)


def test_peer_weights_carry_no_gradient() -> None:
    torch.manual_seed(1)
    za, zb = torch.randn(5, 6, requires_grad=True), torch.randn(5, 6, requires_grad=True)
    y = torch.randint(0, 6, (5,))
    loss, _ = coded_med([za, zb], y, alpha=0.3, beta=0.0, gamma=2.0)
    ga, gb = torch.autograd.grad(loss, [za, zb])
    # Detaching the other peer changes nothing: the only path into z^k is peer k's own log p^k.
    loss_a, _ = coded_med([za, zb.detach()], y, alpha=0.3, beta=0.0, gamma=2.0)
    loss_b, _ = coded_med([za.detach(), zb], y, alpha=0.3, beta=0.0, gamma=2.0)
    assert torch.allclose(torch.autograd.grad(loss_a, za)[0], ga, atol=1e-6)
    assert torch.allclose(torch.autograd.grad(loss_b, zb)[0], gb, atol=1e-6)


def test_truncation_drops_exactly_the_jointly_hardest_share() -> None:
    ce = torch.tensor([[9.0, 8.0, 1.0, 7.0, 0.5], [9.0, 1.0, 8.0, 7.0, 0.5]])
    # beta 0.6 -> floor(3) hardest per peer: {0, 1, 3} and {0, 2, 3}: jointly {0, 3}
    assert truncation_mask(ce, 0.6).tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert truncation_mask(ce, 0.1).tolist() == [1.0] * 5  # floor(0.5) = 0 dropped
    assert truncation_mask(ce, 0.2).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_truncated_loss_is_the_kept_samples_over_all_n() -> None:
    torch.manual_seed(2)
    base = torch.randn(10, 8) * 2
    zs = [base, base + 0.1 * torch.randn(10, 8)]  # peers agree on which samples are hard
    y = torch.randint(1, 8, (10,))
    ce = torch.stack([torch.nn.functional.cross_entropy(z, y, reduction="none") for z in zs])
    keep = truncation_mask(ce, 0.3).bool()
    assert 7 <= int(keep.sum()) < 10
    loss, stats = coded_med(zs, y, alpha=0.5, beta=0.3)
    kept, _ = coded_med([z[keep] for z in zs], y[keep], alpha=0.5, beta=0.0)
    assert float(loss) == pytest.approx(float(kept) * int(keep.sum()) / 10, rel=1e-5)
    assert stats["kept"] == pytest.approx(float(keep.float().mean()))


def test_log_one_minus_p_is_stable_over_all_items() -> None:
    z = torch.tensor([[60.0, 0.0, -60.0, float("-inf")]], requires_grad=True)  # p_0 = 1 - 1e-26
    q = torch.tensor([[0.0, 60.0, 0.0, float("-inf")]])
    loss, _ = coded_med([z, q], torch.tensor([1]), alpha=0.5, beta=0.0)
    (g,) = torch.autograd.grad(loss, z)
    assert math.isfinite(float(loss.detach())) and torch.isfinite(g).all()
    assert log1m_exp(torch.tensor([-1e-12, -50.0, float("-inf")])).isfinite().all()


def test_alpha_schedule_and_errors() -> None:
    assert alpha_at(-1.0, 0, 1000) == 1.0
    assert alpha_at(-1.0, 21, 1000) == pytest.approx(0.98)  # 0.02 * 1000 + 1 = 21 steps per decay
    with pytest.raises(ModelsError):
        alpha_at(1.5)
    with pytest.raises(ModelsError):
        coded_med([A], Y)
    with pytest.raises(ModelsError):
        coded_med([A, B], Y, beta=1.0)
    with pytest.raises(ModelsError):
        coded_med([A, B], Y, gamma=-1.0)


def reference_coded_med(zs: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """DESIGN §3 with plain autograd through every op (the weights detached): the oracle for the
    hand-written gradient of ``coded_med`` (``gradcheck`` cannot be: it would differentiate the
    stop-gradient weights too)."""
    k, n = zs.shape[0], y.shape[0]
    logp = torch.log_softmax(zs, -1)
    yy = y.view(1, n, 1).expand(k, n, 1)
    ce = -logp.gather(2, yy)[..., 0]
    p = logp.detach().exp()
    w = ((p ** gamma).sum(0, keepdim=True) - p ** gamma) / (k - 1)
    uy = (1 - p.gather(2, yy)[..., 0]) ** gamma
    w_pos = (uy.sum(0, keepdim=True) - uy) / (k - 1)
    w = w.scatter(2, yy, 0.0)
    soft = w_pos * ce - (w * torch.log1p(-logp.exp())).sum(2)
    m = truncation_mask(ce.detach(), beta)
    return (alpha * (m * ce).sum(1) / n + (1 - alpha) * (m * soft).sum(1) / n).sum()


@pytest.mark.parametrize("k,gamma,beta", [(2, 1.0, 0.0), (2, 2.0, 0.2), (3, 0.5, 0.1), (3, 1.0, 0.0)])
def test_written_out_gradient_equals_autograd(k: int, gamma: float, beta: float) -> None:
    torch.manual_seed(k)
    zs = (torch.randn(k, 12, 7, dtype=torch.float64) * 2).requires_grad_(True)
    y = torch.randint(1, 7, (12,))
    zs_ref = zs.detach().clone().requires_grad_(True)
    loss, _ = coded_med(zs, y, alpha=0.3, beta=beta, gamma=gamma)
    ref = reference_coded_med(zs_ref, y, 0.3, beta, gamma)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-9)
    (g,), (g_ref,) = torch.autograd.grad(loss, [zs]), torch.autograd.grad(ref, [zs_ref])
    assert torch.allclose(g, g_ref, atol=1e-10)
    peers = [z.detach().clone().requires_grad_(True) for z in zs]  # a list of peers: the same gradient
    (g_list,) = torch.autograd.grad(coded_med(peers, y, alpha=0.3, beta=beta, gamma=gamma)[0], peers[:1])
    assert torch.allclose(g_list, g_ref[0], atol=1e-10)

