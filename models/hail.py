"""HAIL: K >= 2 peer sequential networks trained jointly with Mutual Exclusivity Distillation.

Each peer has its own encoder (encoder kinds cycle through ``config.encoders``), initialised from
its own seed ``config.seed + 1000·k``, and its own item table unless ``share_embedding`` (the
authors' layout: one item table, and with ``output_bias`` one output bias, shared by the peers).
Training uses every position of a window (each item predicts the next, as SASRec does) with a full
softmax over all items; BERT4Rec peers (``encoders=("bert4rec",)``, all peers or none) are trained
as cloze models instead: ``mask_prob`` of each window's items, the same for every peer, are
replaced by the mask token and predicted. The loss is one of :mod:`models.losses` chosen by
``config.distill`` (MED: ``med_form``, default the coded form with ``med_alpha``/``med_beta``/
``med_gamma``). ``history="copy"`` adds the history-aware output of :mod:`models.history` to
every peer (a learned gate between the softmax and a copy distribution over the sequence's own
items); the losses then see each peer's mixture. ``contrast`` = λ > 0 adds a contrastive term
with same-target positives on each peer's sequence representation (:mod:`models.contrast`, after
DuoRec). ``transitions`` = W > 0 adds a third output component to every peer: the catalogue's
item-to-item transitions (each item's W most frequent successors, counted by :meth:`HAIL.set_transitions`
over all users and stored with the model; ``trans_lags``/``trans_backward`` also count items a few
steps after and before, ``trans_recent`` reads the rows of the user's last few items) behind their
own learned gate (:mod:`models.transitions`), or with ``trans_mode="bias"`` added to the logits.
``softmax_ce`` > 0 adds that
weight times a cross-entropy on each peer's own softmax, so that the softmax stays a whole model
beside the mixture components. Prediction averages the peers' log-probabilities, or uses one chosen peer.

Common set-ups: a single SASRec is ``HailConfig(n_peers=1, distill="none")``; a plain ensemble is
``HailConfig(n_peers=2, distill="none")``; DML is ``distill="dml"``; HAIL as published is
``HailConfig(encoders=("bert4rec",), share_embedding=True, output_bias=True, heads=2)``.

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
import torch.nn.functional as F
from torch import nn

from models.contrast import info_nce
from models.encoders import ACTIVATIONS, ENCODERS, BERT4RecEncoder, SequenceEncoder, make_encoder
from models.errors import ModelsError
from models.history import CopyHead, mix_slots, successors
from models.losses import (
    AGGREGATES,
    MED_FORMS,
    dml_loss,
    ensemble_cross_entropy,
    mutual_exclusivity_distillation,
)
from models.names import HISTORY, POSITIONS, TRANS_MODES
from models.transitions import TransitionHead, check_weights, transition_table
from models.vocab import PAD

DISTILL = ("med", "dml", "none")
PEER_SEED_STRIDE = 1000


def _recent(seq: torch.Tensor, depth: int) -> torch.Tensor:
    """``[B, L]`` → ``[B, L, depth]``: at each position its item and the ``depth - 1`` items before
    it, latest first (padding where there are none).

    >>> _recent(torch.tensor([[0, 5, 6, 7]]), 2)[0].tolist()
    [[0, 0], [5, 0], [6, 5], [7, 6]]
    """
    cols = [seq]
    for r in range(1, depth):
        shifted = torch.zeros_like(seq)
        shifted[:, r:] = seq[:, : max(seq.shape[1] - r, 0)]
        cols.append(shifted)
    return torch.stack(cols, 2)


@dataclass
class HailConfig:
    """Architecture and loss settings; JSON-round-trippable (``asdict`` / :meth:`from_dict`).

    ``med_alpha``/``med_beta``/``med_gamma`` set the coded MED (``med_form="coded"``, DESIGN §3);
    ``med_weight``, ``med_topk``, ``med_aggregate`` and ``med_gate`` (False: the "no correct
    gate" ablation) only apply to the reconstructed forms. ``ffn`` = 0 means ``hidden``;
    ``activation`` "" means the encoder's default (ReLU; GELU for BERT4Rec). ``positions``
    ("start" or "end", :class:`models.encoders.SASRecEncoder`): where the self-attention peers
    count positions from. "start" (the default since 2026-12-03) has the same accuracy as "end"
    on NYC and Beauty (bench/RESULTS.md) and lets the worker serve SASRec peers incrementally
    (:mod:`models.incremental`); checkpoints written before the field existed load as "end".
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
    med_form: str = "coded"
    med_warmup_epochs: int = 0
    dml_weight: float = 1.0
    seed: int = 0
    med_gate: bool = True
    med_alpha: float = 0.5
    med_beta: float = 0.02
    med_gamma: float = 1.0
    share_embedding: bool = False
    output_bias: bool = False
    history: str = "none"
    ffn: int = 0
    activation: str = ""
    mask_prob: float = 0.2
    positions: str = "start"
    contrast: float = 0.0
    contrast_tau: float = 1.0
    transitions: int = 0
    trans_lags: tuple[float, ...] = (1.0,)
    trans_backward: float = 0.0
    trans_recent: tuple[float, ...] = (1.0,)
    trans_mode: str = "mix"
    softmax_ce: float = 0.0

    def __post_init__(self) -> None:
        self.encoders = tuple(self.encoders)
        self.trans_lags = tuple(float(v) for v in self.trans_lags)
        self.trans_recent = tuple(float(v) for v in self.trans_recent)
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
        if self.history not in HISTORY:
            raise ModelsError(f"history must be one of {HISTORY}, not {self.history!r}")
        if self.activation and self.activation not in ACTIVATIONS:
            raise ModelsError(f"activation must be '' (the encoder's default) or one of {ACTIVATIONS}")
        if self.positions not in POSITIONS:
            raise ModelsError(f"positions must be one of {POSITIONS}, not {self.positions!r}")
        if self.ffn < 0 or not 0.0 < self.mask_prob < 1.0:
            raise ModelsError("ffn must be >= 0 and mask_prob in (0, 1)")
        if not (self.med_alpha <= 1.0 and 0.0 <= self.med_beta < 1.0 and self.med_gamma >= 0.0):
            raise ModelsError("med_alpha must be <= 1 (< 0: schedule), med_beta in [0, 1), med_gamma >= 0")
        kinds = {self.encoders[k % len(self.encoders)] for k in range(self.n_peers)}
        if "bert4rec" in kinds and len(kinds) > 1:
            raise ModelsError("bert4rec peers (cloze training) cannot be mixed with next-item encoders")
        if self.contrast < 0 or self.contrast_tau <= 0:
            raise ModelsError("contrast must be >= 0 (0 = off) and contrast_tau > 0")
        if self.contrast and "bert4rec" in kinds:
            raise ModelsError("contrast (same-target positives, models.contrast) needs next-item encoders, not bert4rec")
        if self.softmax_ce < 0 or (self.softmax_ce and "bert4rec" in kinds):
            raise ModelsError("softmax_ce must be >= 0 (0 = off) and needs next-item encoders")
        if self.transitions < 0:
            raise ModelsError(f"transitions must be >= 0 successors per item (0 = off), not {self.transitions}")
        check_weights(self.trans_lags, self.trans_backward, self.trans_recent)
        if self.trans_mode not in TRANS_MODES:
            raise ModelsError(f"trans_mode must be one of {TRANS_MODES}, not {self.trans_mode!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HailConfig:
        """Inverse of ``dataclasses.asdict``; unknown keys are refused (a newer checkpoint format).
        A missing key takes its default, except ``positions``: configs written before it existed
        were all trained with positions from the end."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelsError(f"unknown HailConfig fields {unknown}; was this written by a newer hailstream?")
        return cls(**{"positions": "end", **d})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class HAIL(nn.Module):
    """The K-peer ensemble. ``n_rows`` = item vocabulary rows (items + padding)."""

    # the transition table (buffers; empty without config.transitions): models.transitions
    trans_next: torch.Tensor
    trans_count: torch.Tensor
    trans_total: torch.Tensor

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
                        config.ffn or None, config.activation or None, config.positions,
                    )
                )
        self.peers = nn.ModuleList(peers)
        self._share_table()
        self.item_bias = nn.Parameter(torch.zeros(n_rows)) if config.output_bias else None
        heads = []
        if config.history == "copy":
            for k in range(config.n_peers):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(config.seed + PEER_SEED_STRIDE * k + 1)
                    heads.append(CopyHead(config.hidden, config.max_len))
        self.copy_heads = nn.ModuleList(heads)
        self.trans_heads = nn.ModuleList(
            [TransitionHead(config.hidden) for _ in range(config.n_peers)] if config.transitions else [])
        # without transitions: empty tables of 1 column, so that the state dict's keys stay fixed
        rows, width = (n_rows, config.transitions) if config.transitions else (0, 1)
        self.register_buffer("trans_next", torch.zeros(rows, width, dtype=torch.long))
        self.register_buffer("trans_count", torch.zeros(rows, width))
        self.register_buffer("trans_total", torch.zeros(rows))

    def set_transitions(self, sequences: Any, add: bool = False) -> None:
        """Count the successors of every item over ``sequences`` (item index arrays, oldest first)
        into the model's transition table, replacing it or, with ``add``, adding to it. A no-op
        without ``config.transitions``. The training loss leaves each query's own transition out,
        so the sequences a model is trained on must be counted here first (:func:`models.trainer.train`
        and :func:`models.trainer.fine_tune` do)."""
        if not self.config.transitions:
            return
        base = (self.trans_next, self.trans_count, self.trans_total) if add else None
        cfg = self.config
        nxt, cnt, tot = transition_table(sequences, self.n_rows, cfg.transitions, base, cfg.trans_lags, cfg.trans_backward)
        self.trans_next = nxt.to(self.trans_next.device)
        self.trans_count, self.trans_total = cnt.to(self.trans_count), tot.to(self.trans_total)

    def forget_transitions(self, rows: torch.Tensor) -> None:
        """Drop every counted transition from or to the items ``rows`` (recycled indices: a new item
        must not inherit the evicted one's successors). A no-op without ``config.transitions``."""
        if not self.config.transitions or rows.numel() == 0:
            return
        rows = rows.to(self.trans_next.device)
        gone = torch.isin(self.trans_next, rows)
        self.trans_total -= (self.trans_count * gone).sum(1)
        self.trans_count[gone] = 0.0
        self.trans_next[gone] = PAD
        self.trans_next[rows], self.trans_count[rows], self.trans_total[rows] = PAD, 0.0, 0.0

    def _share_table(self) -> None:
        # One nn.Embedding module referenced by every peer: one parameter for the optimizer.
        if self.config.share_embedding:
            for peer in self.networks[1:]:
                peer.item_emb = self._peer(0).item_emb

    @property
    def cloze(self) -> bool:
        """True when the peers are cloze (BERT4Rec) networks."""
        return self._peer(0).cloze

    def _scores(self, k: int, hidden: torch.Tensor) -> torch.Tensor:
        z = self._peer(k).logits(hidden)
        return z if self.item_bias is None else z + self.item_bias

    def _copy(self, k: int) -> CopyHead:
        head = self.copy_heads[k]
        assert isinstance(head, CopyHead)
        return head

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
        self, seqs: torch.Tensor, targets: torch.Tensor, epoch: int = 0, step: int = 0, total_steps: int = 0,
        positives: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss over all positions of a batch of windows.

        ``seqs`` and ``targets`` are ``[B, L]`` (targets[b, t] = the item after seqs[b, t]); a
        position counts when both its input and its target are items (non-zero). Cloze peers
        instead see the window's last L items (``targets``) with a random ``mask_prob`` share of
        them masked (at least one per row), and predict the masked items. MED (or DML) applies
        from ``epoch >= config.med_warmup_epochs``; before that, and for ``distill="none"``, the
        peers are trained independently (``Σ_k CE^k``). ``step``/``total_steps`` feed MED's
        ``med_alpha < 0`` schedule. With ``config.contrast`` = λ > 0, ``positives`` ``[B, L']`` is
        one prefix per row followed by the row's last target
        (:meth:`models.contrast.SameTargetIndex.positives`), and the loss adds
        ``λ · Σ_k InfoNCE(h_k(row), h_k(positive))`` over the rows' last positions.
        """
        if seqs.shape != targets.shape:
            raise ModelsError(f"seqs {tuple(seqs.shape)} and targets {tuple(targets.shape)} must have one shape")
        seqs, targets = self._clip(seqs), self._clip(targets)
        cfg = self.config
        if cfg.contrast and positives is None:
            raise ModelsError("config.contrast > 0 needs positives (models.contrast.SameTargetIndex.positives)")
        hidden: list[torch.Tensor] = []  # each peer's hidden states (next-item peers)
        if self.cloze:
            logits, y = self._cloze_outputs(targets)
        else:
            logits, y, hidden = self._next_item_outputs(seqs, targets)
        n = int(y.numel())
        distilling = cfg.distill != "none" and epoch >= cfg.med_warmup_epochs
        if distilling and cfg.distill == "med":
            loss, stats = mutual_exclusivity_distillation(
                logits, y, cfg.med_weight, cfg.med_topk, cfg.med_aggregate, cfg.med_form, cfg.med_gate,
                cfg.med_alpha, cfg.med_beta, cfg.med_gamma, step, total_steps,
            )
        elif distilling and cfg.distill == "dml":
            loss, stats = dml_loss(logits, y, cfg.dml_weight)
        else:
            loss, stats = ensemble_cross_entropy(logits, y)
        if cfg.contrast and positives is not None:
            last = targets[:, -1]
            terms = [info_nce(h[:, -1], peer.hidden_states(self._clip(positives))[:, -1], last, cfg.contrast_tau)
                     for h, peer in zip(hidden, self.networks, strict=True)]
            contrast = torch.stack(terms).sum()
            loss = loss + cfg.contrast * contrast
            stats["contrast"] = float(contrast.detach()) / len(terms)
            stats["loss"] = float(loss.detach())
        if cfg.softmax_ce and hidden:  # each peer's own softmax, trained as if it stood alone
            where = (seqs != PAD) & (targets != PAD)
            own = torch.stack([F.cross_entropy(self._scores(k, h[where]), y) for k, h in enumerate(hidden)]).sum()
            loss = loss + cfg.softmax_ce * own
            stats["softmax_ce"] = float(own.detach()) / len(hidden)
            stats["loss"] = float(loss.detach())
        stats["targets"] = float(n)
        return loss, stats

    def _next_item_outputs(
        self, seqs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        valid = (seqs != PAD) & (targets != PAD)
        if not bool(valid.any()):
            raise ModelsError("the batch has no position with both an input and a target item")
        length = seqs.shape[1]
        pos = torch.arange(length, device=seqs.device)
        ages = (pos.view(-1, 1) - pos.view(1, -1)).unsqueeze(0)  # [1, L, L]: t - s
        real = seqs != PAD
        allowed = (ages >= 0) & real.unsqueeze(1)
        # successor of s is known to query t when s + 1 <= t; the query's current item is seqs[t]
        succ_allowed = (ages >= 1) & real.unsqueeze(1)
        match = seqs.unsqueeze(1) == seqs.unsqueeze(2)  # [B, t, s]: item_s == item_t
        outs, hidden = [], []
        for k, peer in enumerate(self.networks):
            h = peer.hidden_states(seqs)
            hidden.append(h)
            outs.append(self._output(k, h, valid, seqs, ages, allowed, succ_allowed, match, targets))
        return outs, targets[valid], hidden

    def _cloze_outputs(self, items: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        real = items != PAD
        if not bool(real.any()):
            raise ModelsError("the batch has no item to mask")
        masked = (torch.rand(items.shape, device=items.device) < self.config.mask_prob) & real
        none = ~masked.any(1) & real[:, -1]
        masked[:, -1] |= none  # every row predicts at least its latest item
        length = items.shape[1]
        pos = torch.arange(length, device=items.device)
        ages = (pos.view(-1, 1) - pos.view(1, -1) - 1).unsqueeze(0)  # the query is a mask slot
        visible = real & ~masked
        allowed = (ages >= 0) & visible.unsqueeze(1)
        succ_allowed = (ages >= 1) & (visible & successors(visible.long()).bool()).unsqueeze(1)
        # the query at a mask slot t: its current item is the one at t - 1 (when visible)
        current = torch.cat([torch.zeros_like(items[:, :1]), items[:, :-1].masked_fill(~visible[:, :-1], PAD)], 1)
        match = (items.unsqueeze(1) == current.unsqueeze(2)) & (current != PAD).unsqueeze(2)
        outs = []
        for k, peer in enumerate(self.networks):
            assert isinstance(peer, BERT4RecEncoder)
            h = peer.hidden_states(items, masked)
            outs.append(self._output(k, h, masked, items, ages, allowed, succ_allowed, match, items, current))
        return outs, items[masked]

    def _output(
        self, k: int, h: torch.Tensor, where: torch.Tensor, items: torch.Tensor, ages: torch.Tensor,
        allowed: torch.Tensor, succ_allowed: torch.Tensor, match: torch.Tensor, targets: torch.Tensor | None = None,
        current: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Peer k's scores ``[N, V]`` at the ``where`` positions of ``h`` ``[B, L, H]``: logits,
        or with ``history="copy"`` and/or ``transitions`` the mixture's log-probabilities (slots as
        in :meth:`CopyHead.forward`). ``targets`` ``[B, L]``: the training targets (each query's own
        transition is left out); ``current`` ``[B, L]``: each query's latest item (default ``items``;
        cloze queries: the item before the mask, or padding when it is masked too)."""
        z = self._scores(k, h[where])
        if not self.copy_heads and not self.trans_heads:
            return z
        copy = None
        if self.copy_heads:
            a, b, gate = self._copy(k)(h, self._peer(k).item_emb(items), ages, allowed, succ_allowed, match)
            length = items.shape[1]
            keys = items.unsqueeze(1).expand(-1, length, -1)
            succ = successors(items).unsqueeze(1).expand(-1, length, -1)
            copy = (a[where], b[where], gate[where], keys[where], succ[where])
        own = targets[where] if self.training and targets is not None else None
        recent = _recent(items if current is None else current, len(self.config.trans_recent))
        return self._mixture(k, z, h[where], copy, recent[where], own)

    def _mixture(
        self, k: int, z: torch.Tensor, h: torch.Tensor, copy: tuple[torch.Tensor, ...] | None,
        recent: torch.Tensor, targets: torch.Tensor | None,
    ) -> torch.Tensor:
        """Peer k's ``log p`` ``[N, V]``: the softmax of the logits ``z`` mixed with the copy head
        (``copy`` = the arguments of :meth:`CopyHead.mix` after ``z``, or None) and with
        ``config.transitions`` the transition component (:mod:`models.transitions`); ``h`` ``[N, H]``
        the queries, ``recent`` ``[N, R]`` each query's latest items (latest first; R =
        ``len(config.trans_recent)``), ``targets`` ``[N]`` (training: leave each query's own pairs out)
        or None."""
        if not self.trans_heads:
            assert copy is not None
            return CopyHead.mix(z, *copy)
        head = self.trans_heads[k]
        assert isinstance(head, TransitionHead)
        cfg = self.config
        table = (self.trans_next, self.trans_count, self.trans_total)
        nxt, cnt, tot = TransitionHead.rows(table, recent, targets, cfg.trans_recent, cfg.trans_lags)
        if cfg.trans_mode == "bias":
            z = head.bias(z, head.gate(h).squeeze(-1), nxt, cnt)
            return torch.log_softmax(z, dim=-1) if copy is None else CopyHead.mix(z, *copy)
        gates = [torch.zeros_like(z[:, 0]), head.gate(h).squeeze(-1)]
        if copy is not None:
            gates.append(copy[2])
        log_g = torch.log_softmax(torch.stack(gates, 1), dim=1)  # [N, 2 or 3]: gen, trans, copy
        lent, per_count = head.split(log_g[:, 1], tot)
        items, mass = nxt, cnt * per_count.unsqueeze(1)
        if copy is not None:
            a, b, _, keys, succ = copy
            items = torch.cat([items, keys, succ], 1)
            mass = torch.cat([mass, torch.cat([a, b], 1) * log_g[:, 2].exp().unsqueeze(1)], 1)
        return mix_slots(z, torch.logaddexp(log_g[:, 0], lent), items, mass)

    def log_probs(self, seqs: torch.Tensor, peer: int | None = None) -> torch.Tensor:
        """Next-item log-probabilities ``[B, n_rows]`` after ``[B, L]`` left-padded sequences: the
        mean over peers of their log-softmax (or one ``peer``'s); column 0 is ``-inf``.

        Runs in the module's current mode: call ``.eval()`` first for deterministic scores.
        """
        seqs = self._clip(seqs)
        if peer is not None:
            self._chosen(peer)  # validates the index
        ks = range(len(self.peers)) if peer is None else [peer]
        outs = [self._next_log_probs(k, seqs) for k in ks]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def _next_log_probs(self, k: int, seqs: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Peer k's next-item log-probabilities after ``seqs``; ``hidden`` = its encoder's state of
        the last position when already known (:mod:`models.incremental`)."""
        h = self._peer(k).encode(seqs) if hidden is None else hidden
        z = self._scores(k, h)
        if not self.copy_heads and not self.trans_heads:
            return torch.log_softmax(z, dim=-1)
        if not self.copy_heads:
            return self._mixture(k, z, h, None, self._latest(seqs), None)
        length = seqs.shape[1]
        ages = torch.arange(length - 1, -1, -1, device=seqs.device).view(1, 1, -1)  # latest item: 0
        real = (seqs != PAD).unsqueeze(1)
        match = (seqs == seqs[:, -1:]).unsqueeze(1)
        a, b, gate = self._copy(k)(h.unsqueeze(1), self._peer(k).item_emb(seqs), ages, real, real & (ages >= 1), match)
        return self._mixture(k, z, h, (a[:, 0], b[:, 0], gate[:, 0], seqs, successors(seqs)), self._latest(seqs), None)

    def _latest(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[B, R]``: the last R items of left-padded ``seqs``, latest first (R = ``len(config.trans_recent)``)."""
        depth = len(self.config.trans_recent)
        return _recent(seqs[:, -depth:], depth)[:, -1]

    @torch.no_grad()
    def recommend(self, seqs: torch.Tensor, k: int, peer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items (never padding) after each sequence: ``(scores [B, k], indices [B, k])``,
        best first; evaluated in eval mode (the module's mode is restored afterwards)."""
        if k < 1:
            raise ModelsError(f"k must be >= 1, not {k}")
        was_training = self.training
        if was_training:  # .eval()/.train() walk every submodule: ~2 ms a call on the worker's path
            self.eval()
        try:
            scores = self.log_probs(seqs, peer)
        finally:
            if was_training:
                self.train()
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
        for k in range(1 if self.config.share_embedding else len(self.peers)):
            gen = torch.Generator().manual_seed(self.config.seed + PEER_SEED_STRIDE * k + old)
            self._peer(k).grow(n_rows, gen)
        self._share_table()
        if self.item_bias is not None and n_rows > old:
            bias = self.item_bias.detach()
            self.item_bias = nn.Parameter(torch.cat([bias, bias.new_zeros(n_rows - old)]))
        if self.config.transitions and n_rows > old:  # new items: no successors counted yet
            for name in ("trans_next", "trans_count", "trans_total"):
                table = getattr(self, name)
                setattr(self, name, torch.cat([table, table.new_zeros((n_rows - old, *table.shape[1:]))]))
