"""MED / DML / CE against hand-computed values and the gradient identity of DESIGN §3."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from models.errors import ModelsError
from models.losses import (
    dml_loss,
    ensemble_cross_entropy,
    next_item_cross_entropy,
    top_k_correct,
)
from models.losses import (
    mutual_exclusivity_distillation as _any_med,
)

# Three peers over V=3 items, one interaction with target y=0. Logits = log p, so p is exact.
#   A: p = (.5, .25, .25) -> CE = ln 2 = 0.6931472, top-1 correct
#   B: p = (.2, .6, .2)   -> CE = ln 5 = 1.6094379, rank 2 (one logit strictly higher)
#   C: p = (.1, .3, .6)   -> CE = ln 10 = 2.3025851, rank 3
A = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
B = torch.log(torch.tensor([[0.2, 0.6, 0.2]]))
C = torch.log(torch.tensor([[0.1, 0.3, 0.6]]))
Y = torch.tensor([0])

# The tests below pin the reconstructed forms (ablations); the coded MED is in test_coded_med.py.
mutual_exclusivity_distillation = functools.partial(_any_med, form="weighted_ce")


def med(logits: list[torch.Tensor], **kw: object) -> float:
    loss, _ = mutual_exclusivity_distillation(logits, Y, **kw)  # type: ignore[arg-type]
    return float(loss)


def test_cross_entropy_known_value() -> None:
    assert next_item_cross_entropy(B, Y).tolist() == pytest.approx([1.6094379])


def test_med_weighted_ce_by_hand() -> None:
    # top-1: A correct, B not. u^A = 1 - p^B_y = 0.8.
    # loss = ln2 * (1 + 1 * 0.8) + ln5 = 1.2476649 + 1.6094379
    assert med([A, B], med_weight=1.0, med_topk=1) == pytest.approx(2.8571028, abs=1e-6)
    # lambda = 0.5: ln2 * (1 + 0.4) + ln5
    assert med([A, B], med_weight=0.5, med_topk=1) == pytest.approx(2.5798440, abs=1e-6)
    # top-2: B is correct too (one strictly higher logit < 2), u^B = 1 - 0.5 = 0.5:
    # ln2 * 1.8 + ln5 * 1.5 = 1.2476649 + 2.4141569
    assert med([A, B], med_weight=1.0, med_topk=2) == pytest.approx(3.6618218, abs=1e-6)


def test_med_other_forms_by_hand() -> None:
    # unlikelihood: CE^A + 1 * 1 * 0.8 * (1 - 0.5) + CE^B = 0.6931472 + 0.4 + 1.6094379
    assert med([A, B], med_topk=1, form="unlikelihood") == pytest.approx(2.7025851, abs=1e-6)
    # exclusive, top-1: A right and B wrong -> same as weighted_ce
    assert med([A, B], med_topk=1, form="exclusive") == pytest.approx(2.8571028, abs=1e-6)
    # exclusive, top-2: both right, nothing exclusive -> plain CE sum ln2 + ln5 = ln 10
    assert med([A, B], med_topk=2, form="exclusive") == pytest.approx(2.3025851, abs=1e-6)


def test_no_correct_gate_ablation_by_hand() -> None:
    # gate off, top-1: B gets its weight u^B = 0.5 though it is wrong: ln2 * 1.8 + ln5 * 1.5
    assert med([A, B], med_topk=1, gate=False) == pytest.approx(3.6618218, abs=1e-6)
    assert med([A, B], med_topk=1, gate=True) == pytest.approx(2.8571028, abs=1e-6)


def test_three_peers_mean_and_max_by_hand() -> None:
    # top-1: only A correct. u^A mean = ((1 - .2) + (1 - .1)) / 2 = 0.85; max = 0.9.
    # mean: ln2 * 1.85 + ln5 + ln10 = 1.2823223 + 1.6094379 + 2.3025851
    assert med([A, B, C], med_topk=1, aggregate="mean") == pytest.approx(5.1943453, abs=1e-6)
    # max:  ln2 * 1.9 + ln5 + ln10 = 1.3169796 + 3.9120230
    assert med([A, B, C], med_topk=1, aggregate="max") == pytest.approx(5.2290026, abs=1e-6)
    # exclusive, top-2, max: A and B correct, C not. A's others {B, C}: max correct = 1 -> gated off;
    # same for B (A is correct); C is wrong. So the plain CE sum: ln2 + ln5 + ln10.
    assert med([A, B, C], med_topk=2, aggregate="max", form="exclusive") == pytest.approx(
        math.log(2) + math.log(5) + math.log(10), abs=1e-6
    )
    # exclusive, top-2, mean: A's others correct share = (1 + 0)/2 -> gate 0.5, u^A = 0.85;
    # B's: (1 + 0)/2 -> 0.5, u^B = ((1-.5) + (1-.1))/2 = 0.7.
    # ln2 * (1 + .5*.85) + ln5 * (1 + .5*.7) + ln10
    expected = math.log(2) * 1.425 + math.log(5) * 1.35 + math.log(10)
    assert med([A, B, C], med_topk=2, aggregate="mean", form="exclusive") == pytest.approx(expected, abs=1e-6)


def test_stacked_tensor_equals_list_and_batch_mean() -> None:
    stacked = torch.stack([A, B])
    assert med([A, B], med_topk=1) == pytest.approx(float(mutual_exclusivity_distillation(stacked, Y, med_topk=1)[0]))
    twice = [torch.cat([A, A]), torch.cat([B, B])]
    loss, stats = mutual_exclusivity_distillation(twice, torch.tensor([0, 0]), med_topk=1)
    assert float(loss) == pytest.approx(2.8571028, abs=1e-6)  # mean over N, not sum
    assert stats["correct"] == pytest.approx(0.5) and stats["u"] == pytest.approx(0.65)


def _random_logits(k: int, n: int, v: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        z = torch.randn(n, v, generator=g) * 2
        z[:, 0] = float("-inf")  # padding column, as the model produces it
        out.append(z.requires_grad_())
    return out


@pytest.mark.parametrize("lam", [0.0, 0.7, 2.0])
def test_weighted_ce_gradient_identity(lam: float) -> None:
    n, v = 6, 9
    zs = _random_logits(2, n, v, seed=3)
    y = torch.tensor([1, 2, 3, 4, 5, 6])
    loss, _ = mutual_exclusivity_distillation(zs, y, med_weight=lam, med_topk=3)
    (loss * n).backward()  # the loss is a mean over N; the identity is per interaction
    with torch.no_grad():
        p = [F.softmax(z, 1) for z in zs]
        onehot = F.one_hot(y, v).float()
        correct = [top_k_correct(z, y, 3) for z in zs]
        assert 0 < float(sum(c.sum() for c in correct)) < 2 * n  # both branches of the gate exercised
        for k in range(2):
            u = 1 - p[1 - k].gather(1, y[:, None])[:, 0]
            expected = (1 + lam * correct[k] * u)[:, None] * (p[k] - onehot)
            assert zs[k].grad is not None
            torch.testing.assert_close(zs[k].grad, expected, rtol=1e-5, atol=1e-6)


def test_unlikelihood_gradient_on_target_logit() -> None:
    zs = _random_logits(2, 5, 7, seed=5)
    y = torch.tensor([1, 2, 3, 4, 5])
    loss, _ = mutual_exclusivity_distillation(zs, y, med_weight=1.0, med_topk=7, form="unlikelihood")
    (loss * 5).backward()
    with torch.no_grad():
        p0 = F.softmax(zs[0], 1).gather(1, y[:, None])[:, 0]
        u0 = 1 - F.softmax(zs[1], 1).gather(1, y[:, None])[:, 0]
        # CE gives -(1 - p); the extra term u * (1 - p_y) gives -u * p (1 - p) on the target logit
        expected = -(1 - p0) - u0 * p0 * (1 - p0)
        assert zs[0].grad is not None
        torch.testing.assert_close(zs[0].grad.gather(1, y[:, None])[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_zero_weight_is_independent_cross_entropy() -> None:
    zs = _random_logits(3, 8, 11, seed=1)
    y = torch.arange(1, 9)
    loss, _ = mutual_exclusivity_distillation(zs, y, med_weight=0.0)
    ref = sum(F.cross_entropy(z, y) for z in zs)
    assert isinstance(ref, torch.Tensor)
    torch.testing.assert_close(loss, ref)
    grads = torch.autograd.grad(loss, zs)
    ref_grads = torch.autograd.grad(ref, zs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)
    torch.testing.assert_close(ensemble_cross_entropy(zs, y)[0], ref)


def test_med_weight_is_detached_from_other_peers() -> None:
    zs = _random_logits(2, 4, 6, seed=2)
    y = torch.tensor([1, 2, 3, 4])
    # Only peer 0's CE term: gradient of the total w.r.t. peer 1 must equal peer 1's own terms only.
    loss, _ = mutual_exclusivity_distillation(zs, y, med_weight=1.0, med_topk=6)
    g1 = torch.autograd.grad(loss, zs[1])[0]
    with torch.no_grad():
        p0y = F.softmax(zs[0], 1).gather(1, y[:, None])[:, 0]
        p1 = F.softmax(zs[1], 1)
        expected = ((1 + (1 - p0y))[:, None] * (p1 - F.one_hot(y, 6).float())) / 4
    torch.testing.assert_close(g1, expected, rtol=1e-5, atol=1e-6)


def test_med_errors() -> None:
    with pytest.raises(ModelsError, match="K >= 2"):
        mutual_exclusivity_distillation([A], Y)
    with pytest.raises(ModelsError, match="med_form"):
        mutual_exclusivity_distillation([A, B], Y, form="nope")
    with pytest.raises(ModelsError, match="aggregate"):
        mutual_exclusivity_distillation([A, B], Y, aggregate="median")
    with pytest.raises(ModelsError, match="one shape"):
        mutual_exclusivity_distillation([A, torch.zeros(1, 4)], Y)


def test_dml_matches_manual_kl_and_handles_padding() -> None:
    zs = _random_logits(2, 5, 8, seed=4)
    y = torch.tensor([1, 2, 3, 4, 5])
    loss, stats = dml_loss(zs, y, weight=0.5)
    with torch.no_grad():
        lp = [F.log_softmax(z[:, 1:], 1) for z in zs]  # padding has probability 0: drop it
        kl01 = (lp[1].exp() * (lp[1] - lp[0])).sum(1)  # KL(p1 || p0), teacher p1 for student 0
        kl10 = (lp[0].exp() * (lp[0] - lp[1])).sum(1)
        ce = [F.cross_entropy(z, y, reduction="none") for z in zs]
        expected = (ce[0] + ce[1] + 0.5 * (kl01 + kl10)).mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert stats["kl"] == pytest.approx(float(((kl01 + kl10) / 2).mean()), rel=1e-5)
    loss.backward()
    assert all(z.grad is not None and torch.isfinite(z.grad).all() for z in zs)
    zero, _ = dml_loss([z.detach() for z in zs], y, weight=0.0)
    torch.testing.assert_close(zero, sum(F.cross_entropy(z.detach(), y) for z in zs))


def test_dml_teacher_is_stopgrad() -> None:
    zs = _random_logits(2, 3, 5, seed=6)
    y = torch.tensor([1, 2, 3])
    loss, _ = dml_loss(zs, y, weight=1.0)
    g0 = torch.autograd.grad(loss, zs[0])[0]
    # Student 0 sees d/dz0 [CE0 + KL(sg p1 || p0)] = (p0 - onehot) + (p0 - p1), per interaction.
    with torch.no_grad():
        p0, p1 = F.softmax(zs[0], 1), F.softmax(zs[1], 1)
        expected = ((p0 - F.one_hot(y, 5).float()) + (p0 - p1)) / 3
    torch.testing.assert_close(g0, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("topk", [1, 2, 5, 40])
def test_top_k_correct_counts_strictly_greater_logits(topk: int) -> None:
    g = torch.Generator().manual_seed(topk)
    z = torch.randint(0, 4, (50, 9), generator=g).float()  # many ties
    z[:, 0] = float("-inf")
    y = torch.randint(1, 9, (50,), generator=g)
    strictly_greater = (z > z.gather(1, y[:, None])).sum(1)
    assert top_k_correct(z, y, topk).tolist() == (strictly_greater < topk).float().tolist()
