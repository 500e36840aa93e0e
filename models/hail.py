"""HAIL: K >= 2 peer sequential networks trained jointly with Mutual Exclusivity Distillation.

Each peer has its own item table and encoder (encoder kinds cycle through ``config.encoders``),
and is initialised from its own seed ``config.seed + 1000·k``. Training uses every position of a
window (each item predicts the next, as SASRec does) with a full softmax over all items; the loss
is one of :mod:`models.losses` chosen by ``config.distill``. Prediction averages the peers'
log-probabilities, or uses one chosen peer.

Common set-ups: a single SASRec is ``HailConfig(n_peers=1, distill="none")``; a plain ensemble is
``HailConfig(n_peers=2, med_weight=0.0)``; DML is ``distill="dml"``.

>>> import torch
>>> cfg = HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, dropout=0.0)
>>> model = HAIL(cfg, n_rows=6)
>>> seqs = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5]]); targets = torch.tensor([[0, 2, 3, 4], [0, 0, 5, 1]])
>>> loss, stats = model.training_loss(seqs, targets)
>>> loss.dim(), stats["targets"]
(0, 5.0)
>>> model.log_probs(seqs).shape, model.recommend(seqs, k=3)[1].shape
(torch.Size([2, 6]), torch.Size([2, 3]))
>>> HailConfig.from_dict(json.loads(json.dumps(asdict(cfg)))) == cfg
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from models.encoders import ENCODERS, SequenceEncoder, make_encoder
from models.errors import ModelsError
from models.losses import (
    AGGREGATES,
    MED_FORMS,
    dml_loss,
    ensemble_cross_entropy,
    mutual_exclusivity_distillation,
)
from models.vocab import PAD

DISTILL = ("med", "dml", "none")
PEER_SEED_STRIDE = 1000


@dataclass
class HailConfig:
    """Architecture and loss settings; JSON-round-trippable (``asdict`` / :meth:`from_dict`).

    ``med_gate=False`` is the "no correct gate" ablation of MED.
    """

    n_peers: int = 2
    encoders: tuple[str, ...] = ("sasrec",)
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    distill: str = "med"
    med_weight: float = 1.0
    med_topk: int = 10
    med_aggregate: str = "mean"
    med_form: str = "weighted_ce"
    med_warmup_epochs: int = 0
    dml_weight: float = 1.0
    seed: int = 0
    med_gate: bool = True

    def __post_init__(self) -> None:
        self.encoders = tuple(self.encoders)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ModelsError` naming the first bad setting."""
        if self.n_peers < 1:
            raise ModelsError(f"n_peers must be >= 1, not {self.n_peers}")
        if not self.encoders or any(e not in ENCODERS for e in self.encoders):
            raise ModelsError(f"encoders must be a non-empty list of {ENCODERS}, not {self.encoders!r}")
        if self.distill not in DISTILL:
            raise ModelsError(f"distill must be one of {DISTILL}, not {self.distill!r}")
        if self.distill != "none" and self.n_peers < 2:
            raise ModelsError(f"distill={self.distill!r} needs n_peers >= 2; a single network uses distill='none'")
        if self.med_form not in MED_FORMS:
            raise ModelsError(f"med_form must be one of {MED_FORMS}, not {self.med_form!r}")
        if self.med_aggregate not in AGGREGATES:
            raise ModelsError(f"med_aggregate must be one of {AGGREGATES}, not {self.med_aggregate!r}")
        if self.med_topk < 1 or self.max_len < 1 or self.hidden < 1 or self.layers < 1 or self.heads < 1:
            raise ModelsError("med_topk, max_len, hidden, layers and heads must all be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelsError(f"dropout must be in [0, 1), not {self.dropout}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HailConfig:
        """Inverse of ``dataclasses.asdict``; unknown keys are refused (a newer checkpoint format)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelsError(f"unknown HailConfig fields {unknown}; was this written by a newer hailstream?")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class HAIL(nn.Module):
    """The K-peer ensemble. ``n_rows`` = item vocabulary rows (items + padding)."""

    def __init__(self, config: HailConfig, n_rows: int) -> None:
        super().__init__()
        config.validate()
        self.config = config
        peers = []
        for k in range(config.n_peers):
            # Own seed per peer, without disturbing the caller's global RNG stream.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + PEER_SEED_STRIDE * k)
                peers.append(
                    make_encoder(
                        config.encoders[k % len(config.encoders)], n_rows, config.hidden,
                        config.layers, config.heads, config.dropout, config.max_len,
                    )
                )
        self.peers = nn.ModuleList(peers)

    @property
    def n_rows(self) -> int:
        return self._peer(0).n_rows

    def _peer(self, k: int) -> SequenceEncoder:
        peer = self.peers[k]
        assert isinstance(peer, SequenceEncoder)
        return peer

    @property
    def networks(self) -> list[SequenceEncoder]:
        """The peer networks, typed (``self.peers`` is the registered ModuleList)."""
        return [self._peer(k) for k in range(len(self.peers))]

    def _chosen(self, peer: int | None) -> list[SequenceEncoder]:
        if peer is None:
            return self.networks
        if not 0 <= peer < len(self.peers):
            raise ModelsError(f"peer must be in 0..{len(self.peers) - 1} or None (all), not {peer}")
        return [self._peer(peer)]

    def _clip(self, seqs: torch.Tensor) -> torch.Tensor:
        # The latest max_len items are the model's whole view; longer inputs keep their tail.
        return seqs[:, -self.config.max_len :] if seqs.shape[1] > self.config.max_len else seqs

    def training_loss(
        self, seqs: torch.Tensor, targets: torch.Tensor, epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss over all positions of a batch of windows.

        ``seqs`` and ``targets`` are ``[B, L]`` (targets[b, t] = the item after seqs[b, t]); a
        position counts when both its input and its target are items (non-zero). MED (or DML)
        applies from ``epoch >= config.med_warmup_epochs``; before that, and for
        ``distill="none"``, the peers are trained independently (``Σ_k CE^k``).
        """
        if seqs.shape != targets.shape:
            raise ModelsError(f"seqs {tuple(seqs.shape)} and targets {tuple(targets.shape)} must have one shape")
        seqs, targets = self._clip(seqs), self._clip(targets)
        valid = (seqs != PAD) & (targets != PAD)
        n = int(valid.sum())
        if n == 0:
            raise ModelsError("the batch has no position with both an input and a target item")
        y = targets[valid]
        logits = [peer.logits(peer.hidden_states(seqs)[valid]) for peer in self._chosen(None)]
        cfg = self.config
        distilling = cfg.distill != "none" and epoch >= cfg.med_warmup_epochs
        if distilling and cfg.distill == "med":
            loss, stats = mutual_exclusivity_distillation(
                logits, y, cfg.med_weight, cfg.med_topk, cfg.med_aggregate, cfg.med_form, cfg.med_gate
            )
        elif distilling and cfg.distill == "dml":
            loss, stats = dml_loss(logits, y, cfg.dml_weight)
        else:
            loss, stats = ensemble_cross_entropy(logits, y)
        stats["targets"] = float(n)
        return loss, stats

    def log_probs(self, seqs: torch.Tensor, peer: int | None = None) -> torch.Tensor:
        """Next-item log-probabilities ``[B, n_rows]`` after ``[B, L]`` left-padded sequences: the
        mean over peers of their log-softmax (or one ``peer``'s); column 0 is ``-inf``.

        Runs in the module's current mode: call ``.eval()`` first for deterministic scores.
        """
        seqs = self._clip(seqs)
        outs = [torch.log_softmax(p.logits(p.encode(seqs)), dim=-1) for p in self._chosen(peer)]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    @torch.no_grad()
    def recommend(self, seqs: torch.Tensor, k: int, peer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items (never padding) after each sequence: ``(scores [B, k], indices [B, k])``,
        best first; evaluated in eval mode (the module's mode is restored afterwards)."""
        if k < 1:
            raise ModelsError(f"k must be >= 1, not {k}")
        was_training = self.training
        self.eval()
        try:
            scores = self.log_probs(seqs, peer)
        finally:
            self.train(was_training)
        top = torch.topk(scores, min(k, self.n_rows - 1), dim=-1)
        return top.values, top.indices

    def grow(self, n_rows: int) -> None:
        """Enlarge every peer's item table to ``n_rows`` (new items from a growing vocabulary).

        Existing rows stay bit-identical; new rows are drawn like the initial ones, from a
        generator seeded by the peer's seed and the old size, so growth is reproducible. Any
        optimizer built before must be rebuilt: the item tables are new parameters.
        """
        old = self.n_rows
        if n_rows < old:
            raise ModelsError(f"cannot shrink the model's item tables from {old} to {n_rows} rows")
        for k in range(len(self.peers)):
            gen = torch.Generator().manual_seed(self.config.seed + PEER_SEED_STRIDE * k + old)
            self._peer(k).grow(n_rows, gen)
