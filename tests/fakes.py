"""Stand-ins shared by the lifecycle tests."""

from __future__ import annotations

import torch

from models.hail import HAIL


def scrambling_fine_tune(model: HAIL, *args: object, **kw: object) -> dict[str, float]:
    """A ``models.trainer.fine_tune`` replacement that makes the candidate worse on purpose: it
    shuffles every peer's item table (seeded), and reports a plausible loss."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for peer in model.networks:
            w = peer.item_emb.weight
            w[1:] = w[1:][torch.randperm(w.shape[0] - 1, generator=gen)]
    return {"steps": 1.0, "loss": 9.0, "first_loss": 9.0, "last_loss": 9.0, "seconds": 0.0}
