"""Contrastive regularisation of the sequence representation with same-target positives.

An option of next-item training (``HailConfig.contrast`` = λ > 0), after DuoRec (Qiu et al.,
WSDM 2022, "Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation"): the representation of a window's last position (what predicts the window's
last item) is pulled towards the representation of *another* training prefix that is followed by
the same item (a "supervised" positive), and pushed away from the other representations of the
batch, with an InfoNCE loss (:func:`info_nce`). Both views pass through the encoder in training
mode, so their dropout masks differ; a target that occurs only once is paired with its own
prefix, which leaves the dropout difference only (DuoRec's "unsupervised" view). With K peers
each peer has its own term; the loss adds ``λ · Σ_k InfoNCE_k`` to the peers' losses.

:class:`SameTargetIndex` finds, once per training run, every prefix of the training windows by the
item that follows it; :meth:`SameTargetIndex.positives` draws one positive prefix per window of a
batch (seeded). Pure tensor code, no I/O.

>>> windows = torch.tensor([[0, 1, 2, 3], [0, 5, 1, 2], [0, 0, 4, 3]])
>>> index = SameTargetIndex(windows)
>>> index.count(3), index.count(2), index.count(9)      # prefixes followed by 3, by 2, by 9
(2, 2, 0)
>>> index.positives(torch.tensor([0, 2]), torch.Generator().manual_seed(0)).tolist()  # both end in 3
[[0, 0, 4], [0, 1, 2]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.errors import ModelsError
from models.vocab import PAD


class SameTargetIndex:
    """Every prefix ``windows[w, : t + 1]`` of the training windows ``[N, L + 1]`` (left-padded,
    the convention of :func:`models.trainer.make_windows`) whose input and next item are both
    items, grouped by that next item ``windows[w, t + 1]``."""

    def __init__(self, windows: torch.Tensor) -> None:
        if windows.dim() != 2 or windows.shape[1] < 2:
            raise ModelsError(f"windows must be [N, L + 1] with L >= 1, got shape {tuple(windows.shape)}")
        self.windows = windows
        inputs, nxt = windows[:, :-1], windows[:, 1:]
        valid = (inputs != PAD) & (nxt != PAD)
        w, t = valid.nonzero(as_tuple=True)
        target = nxt[w, t]
        order = torch.argsort(target, stable=True)
        self._w, self._t, self._target = w[order], t[order], target[order]
        # where each window's own last prefix sits in that order (-1: the window has none)
        width = windows.shape[1] - 1
        last = (self._t == width - 1).nonzero(as_tuple=True)[0]
        self._own = torch.full((len(windows),), -1, dtype=torch.long)
        self._own[self._w[last]] = last

    def _range(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.searchsorted(self._target, items)
        hi = torch.searchsorted(self._target, items, right=True)
        return lo, hi

    def count(self, item: int) -> int:
        """How many indexed prefixes are followed by ``item``."""
        lo, hi = self._range(torch.tensor([item]))
        return int(hi - lo)

    def positives(self, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """For each window ``rows[i]``: a prefix followed by the same item as the window's last
        one, other than the window's own (drawn uniformly), or the window's own input when there
        is no other; ``[B, L]``, left-padded and right-aligned like the window's input."""
        own_rows = self.windows[rows]  # [B, L + 1]
        width = own_rows.shape[1] - 1
        lo, hi = self._range(own_rows[:, -1].contiguous())
        own = self._own[rows]
        others = hi - lo - (own >= 0).long()  # the window's own last prefix is one of them
        j = lo + (torch.rand(len(rows), generator=gen) * others.clamp(min=1)).long()
        j = j + ((own >= 0) & (j >= own)).long()  # step over the window's own prefix
        j = torch.where(others > 0, j, lo.clamp(max=len(self._w) - 1))
        w, t = self._w[j], self._t[j]
        src = torch.arange(width).unsqueeze(0) + (t + 1 - width).unsqueeze(1)  # [B, L]: column in window w
        drawn = self.windows[w].gather(1, src.clamp(min=0)).masked_fill(src < 0, PAD)
        return torch.where((others > 0).unsqueeze(1), drawn, own_rows[:, :-1])


def info_nce(z1: torch.Tensor, z2: torch.Tensor, targets: torch.Tensor | None = None, tau: float = 1.0) -> torch.Tensor:
    """InfoNCE of paired views ``z1[i]`` ↔ ``z2[i]`` (``[B, H]`` each) against the other ``2B - 2``
    representations of the batch, dot-product similarity over ``tau``, averaged over the 2B
    anchors. With ``targets`` ``[B]``, representations of rows with the same target are not used as
    each other's negatives (they are positives by construction).

    Two orthogonal pairs with ``tau=1``: each anchor's positive scores 1, its two negatives 0, so
    the loss is ``-log(e / (e + 2)) = log(1 + 2/e)``:

    >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(info_nce(z, z)), 6), round(float(torch.log1p(torch.tensor(2.0) / torch.e)), 6)
    (0.551445, 0.551445)
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ModelsError(f"z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} must both be [B, H]")
    if tau <= 0:
        raise ModelsError(f"tau must be > 0, not {tau}")
    b = z1.shape[0]
    z = torch.cat([z1, z2])  # [2B, H]
    sim = z @ z.T / tau
    pair = torch.arange(2 * b, device=z.device).remainder(b)  # row i and row i + B are one pair
    exclude = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    if targets is not None:
        t = torch.cat([targets, targets])
        exclude |= (t.unsqueeze(0) == t.unsqueeze(1)) & (pair.unsqueeze(0) != pair.unsqueeze(1))
    sim = sim.masked_fill(exclude, float("-inf"))
    positive = (torch.arange(2 * b, device=z.device) + b).remainder(2 * b)
    return F.cross_entropy(sim, positive)
