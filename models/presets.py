"""Named model configurations: the ones the CLI's ``--model`` and the benchmarks use.

| name | peers | distillation |
|---|---|---|
| ``hail`` | K (default 2) | MED (DESIGN §3) |
| ``sasrec`` / ``gru4rec`` | 1 | none |
| ``ensemble`` | K | none (λ = 0: independent peers, averaged) |
| ``dml`` | K | DML (KL toward the other peers) |
| ``hail-published`` | K (default 2) | coded MED; BERT4Rec peers on one shared item table and output bias, 2 heads, max length 200 (the authors' layout, DESIGN §3) |

Any of them takes ``history="copy"`` (the history-aware output of :mod:`models.history`) as an override.

>>> c = preset("hail", peers=3, encoders=("sasrec", "gru4rec"))
>>> c.n_peers, c.distill, c.encoders
(3, 'med', ('sasrec', 'gru4rec'))
>>> preset("gru4rec").n_peers, preset("ensemble").med_weight
(1, 0.0)
>>> p = preset("hail-published", history="copy")
>>> p.encoders, p.share_embedding, p.max_len, p.med_form, p.history
(('bert4rec',), True, 200, 'coded', 'copy')
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from models.errors import ModelsError
from models.hail import HailConfig
from models.names import MODELS

__all__ = ["MODELS", "preset"]


def preset(model: str, peers: int = 2, **overrides: Any) -> HailConfig:
    """The :class:`HailConfig` of a named model; ``overrides`` set any other field."""
    if model not in MODELS:
        raise ModelsError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if peers < 1 or (model in ("hail", "ensemble", "dml", "hail-published") and peers < 2):
        raise ModelsError(f"--peers must be >= 2 for {model!r} (got {peers})")
    if model == "hail":
        config = HailConfig(n_peers=peers, distill="med")
    elif model in ("sasrec", "gru4rec"):
        config = HailConfig(n_peers=1, encoders=(model,), distill="none")
    elif model == "hail-published":
        config = HailConfig(n_peers=peers, distill="med", encoders=("bert4rec",), share_embedding=True,
                            output_bias=True, heads=2, max_len=200)
    elif model == "ensemble":
        config = HailConfig(n_peers=peers, distill="none", med_weight=0.0)
    else:
        config = HailConfig(n_peers=peers, distill="dml")
    known = {f.name for f in fields(HailConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ModelsError(f"unknown model settings {sorted(unknown)}; known: {sorted(known)}")
    return replace(config, **overrides)
