"""Repeat-aware scoring: mix a sequence model with the user's own item frequencies.

On check-in data most next events are revisits, and a window of ``max_len`` items forgets what
the user's full history knows. :class:`RepeatMixture` scores

    p(i) = (1 - alpha) * p_model(i) + alpha * count_u(i) / |history_u|

(``count_u`` over the whole history the evaluator hands over, not only the last ``max_len``) and
returns ``log p``. ``alpha`` is chosen on the validation split with :func:`choose_alpha`; the
test split is never used to choose it.

>>> import numpy as np, torch
>>> class Uniform:
...     def scores(self, users, histories):
...         return torch.full((len(users), 4), -float(np.log(3)))  # items 1..3, padding column 0
>>> mix = RepeatMixture(Uniform(), alpha=0.5)
>>> p = mix.scores(np.array([0]), [np.array([2, 2, 3])]).exp()[0, 1:]
>>> [round(float(x), 4) for x in p]
[0.1667, 0.5, 0.3333]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.errors import ModelsError
from models.evaluate import Scorer, evaluate
from models.splits import SequenceSplit

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class RepeatMixture:
    """A :class:`~models.evaluate.Scorer` over another scorer that returns log-probabilities
    (e.g. :class:`~models.evaluate.ModelScorer`); see the module docstring."""

    def __init__(self, scorer: Scorer, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ModelsError(f"alpha must be in [0, 1], not {alpha}")
        self.scorer = scorer
        self.alpha = alpha

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        p = self.scorer.scores(users, histories).exp() * (1.0 - self.alpha)
        for row, hist in enumerate(histories):
            h = np.asarray(hist, dtype=np.int64)
            h = h[h > 0]
            if h.size:
                items, counts = np.unique(h, return_counts=True)
                p[row, torch.from_numpy(items)] += torch.from_numpy(counts / h.size).to(p.dtype) * self.alpha
        return p.clamp_min(1e-30).log()


def choose_alpha(
    scorer: Scorer, split: SequenceSplit, alphas: Sequence[float] = ALPHAS, metric: str = "ndcg@10"
) -> tuple[float, dict[float, float]]:
    """The ``alpha`` with the best validation ``metric`` (ties: the smaller alpha), and every
    alpha's validation score."""
    scores = {a: float(evaluate(RepeatMixture(scorer, a), split, "valid", ks=(10,))[metric]) for a in alphas}
    best = max(scores, key=lambda a: (scores[a], -a))
    return best, scores
