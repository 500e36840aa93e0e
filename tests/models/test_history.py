"""The history-aware output's mixture (models/history.py): the sparse form against the dense formula."""

from __future__ import annotations

import torch

from models.history import CopyHead


def dense_mix(logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor,
              keys: torch.Tensor, succ: torch.Tensor) -> torch.Tensor:
    """The mixture written densely over all items (the formula of the module docstring): the oracle
    for :meth:`CopyHead.mix`'s sparse form."""
    p_copy = torch.zeros_like(logits).scatter_add(1, keys, a).scatter_add(1, succ, b)
    g = torch.sigmoid(gate).unsqueeze(-1)
    out = (g * p_copy + (1 - g) * torch.softmax(logits, -1)).log()
    return torch.cat([torch.full_like(out[:, :1], float("-inf")), out[:, 1:]], 1)


def test_sparse_mix_equals_the_dense_formula_values_and_gradients() -> None:
    torch.manual_seed(3)
    n, s, v = 6, 5, 9
    logits = torch.randn(n, v, dtype=torch.float64)
    logits[:, 0] = float("-inf")
    ab = torch.softmax(torch.randn(n, 2 * s, dtype=torch.float64), -1)
    keys = torch.randint(0, 4, (n, s))  # few items: repeats and padding (0) slots in every row
    succ = torch.randint(0, 4, (n, s))
    gate = torch.randn(n, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (logits, ab, gate)]
    refs = [t.clone().requires_grad_(True) for t in (logits, ab, gate)]
    out = CopyHead.mix(leaves[0], leaves[1][:, :s], leaves[1][:, s:], leaves[2], keys, succ)
    ref = dense_mix(refs[0], refs[1][:, :s], refs[1][:, s:], refs[2], keys, succ)
    torch.testing.assert_close(out, ref)
    weights = torch.randn(n, v - 1, dtype=torch.float64)  # any downstream loss over the real items
    grads = torch.autograd.grad((out[:, 1:] * weights).sum(), leaves)
    grads_ref = torch.autograd.grad((ref[:, 1:] * weights).sum(), refs)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref)
