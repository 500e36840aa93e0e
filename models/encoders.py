"""Sequence encoders: one peer network of the HAIL ensemble = item embedding table + encoder.

Input sequences are item indices ``[B, L]``, left-padded with 0, the latest item at the last
position. Every encoder is causal (position t sees items <= t) and ignores padding, so the hidden
state of the last position does not depend on how much padding precedes the sequence.

- :class:`SASRecEncoder`: causal self-attention (Kang & McAuley 2018; layout after
  pmixer/SASRec.pytorch, pre-LN): scaled item embedding + learned position embedding, blocks of
  LayerNorm -> multi-head attention -> residual, LayerNorm -> point-wise feed-forward -> residual,
  final LayerNorm.
- :class:`GRU4RecEncoder`: embedding -> GRU -> linear (Hidasi et al. 2016, as in RecBole), with
  SASRec's input scale and final LayerNorm.
- :class:`BERT4RecEncoder`: the same blocks without the causal mask (Sun et al. 2019, the base
  network of the HAIL authors' code): trained as a cloze model (random items replaced by a learned
  mask token, each predicted from both sides), it predicts the next item through a mask token
  appended after the sequence. It is the one encoder that is not causal; the HAIL ensemble builds
  its cloze samples (:attr:`SequenceEncoder.cloze`).

Serving cost: in eval mode :meth:`SASRecEncoder.encode` takes a faster, equivalent path (up to
float rounding) that computes only the last position's query in the final block, and drops the
columns that are padding in every row; training and :meth:`SequenceEncoder.hidden_states` keep
the reference all-positions path.

Both share their input and output item embeddings: :meth:`SequenceEncoder.logits` is the only
place that scores items (``h @ E^T``, padding column at ``-inf``).

>>> import torch
>>> enc = make_encoder("sasrec", n_rows=6, hidden=8, layers=1, heads=1, dropout=0.0, max_len=4).eval()
>>> seq = torch.tensor([[0, 0, 3, 5]])
>>> enc.hidden_states(seq).shape, enc.encode(seq).shape, enc.logits(enc.encode(seq)).shape
(torch.Size([1, 4, 8]), torch.Size([1, 8]), torch.Size([1, 6]))
>>> bool(torch.isinf(enc.logits(enc.encode(seq))[0, 0]))
True
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.errors import ModelsError
from models.names import POSITIONS
from models.vocab import PAD

ENCODERS = ("sasrec", "gru4rec", "bert4rec")
ACTIVATIONS = ("relu", "gelu")
EMBEDDING_STD = 0.02


def init_item_rows(weight: torch.Tensor, start: int, generator: torch.Generator | None = None) -> None:
    """Initialise rows ``start..`` of an item table in place: normal(0, 0.02); row 0 (padding) = 0.

    Used at construction and when the table grows, so new rows look like the first ones did.
    """
    with torch.no_grad():
        rows = weight[start:]
        rows.copy_(torch.randn(rows.shape, generator=generator, dtype=rows.dtype) * EMBEDDING_STD)
        if start == 0:
            weight[PAD].zero_()


class SequenceEncoder(nn.Module):
    """Base class: owns the item table; subclasses implement :meth:`forward`.

    ``cloze`` is False for next-item (causal) encoders: hidden state t predicts item t + 1.
    """

    cloze = False

    def __init__(self, n_rows: int, hidden: int, max_len: int) -> None:
        super().__init__()
        if n_rows < 2:
            raise ModelsError(f"an item table needs padding plus at least one item (n_rows >= 2), not {n_rows}")
        self.hidden = hidden
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_rows, hidden, padding_idx=PAD)
        init_item_rows(self.item_emb.weight, 0)

    @property
    def n_rows(self) -> int:
        return self.item_emb.num_embeddings

    def forward(self, item_emb_of_seq: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` embeddings and ``[B, L]`` bool padding mask (True = pad) -> ``[B, L, H]``."""
        raise NotImplementedError

    def hidden_states(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state of every position: ``[B, L]`` item indices -> ``[B, L, H]``."""
        if seq.dim() != 2:
            raise ModelsError(f"sequences must be a [B, L] LongTensor, got shape {tuple(seq.shape)}")
        return self(self.item_emb(seq), seq == PAD)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position (the next-item query): ``[B, L]`` -> ``[B, H]``."""
        return self.hidden_states(seq)[:, -1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each hidden state: ``[..., H]`` -> ``[..., n_rows]``, column 0 = -inf."""
        weight = self.item_emb.weight
        # The padding mask rides along as the addmm bias: no extra pass over the [N, V] scores.
        mask = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        mask[PAD] = float("-inf")
        flat = torch.addmm(mask, hidden.reshape(-1, hidden.shape[-1]), weight.T)
        return flat.reshape(*hidden.shape[:-1], weight.shape[0])

    def grow(self, n_rows: int, generator: torch.Generator | None = None) -> None:
        """Enlarge the item table to ``n_rows``; existing rows are kept bit-identical."""
        old = self.item_emb.weight
        if n_rows < old.shape[0]:
            raise ModelsError(f"cannot shrink the item table from {old.shape[0]} to {n_rows} rows")
        if n_rows == old.shape[0]:
            return
        new = torch.empty(n_rows, old.shape[1], dtype=old.dtype)
        init_item_rows(new, old.shape[0], generator)
        new = new.to(old.device)
        with torch.no_grad():
            new[: old.shape[0]] = old
        emb = nn.Embedding(n_rows, old.shape[1], padding_idx=PAD, device=old.device, dtype=old.dtype)
        emb.weight = nn.Parameter(new, requires_grad=old.requires_grad)
        self.item_emb = emb


class _FeedForward(nn.Module):
    """Point-wise feed-forward of SASRec (two 1x1 convolutions = two linears)."""

    def __init__(self, hidden: int, dropout: float, ffn: int | None = None, activation: str = "relu") -> None:
        super().__init__()
        inner = ffn or hidden
        act: nn.Module = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.net = nn.Sequential(
            nn.Linear(hidden, inner), act, nn.Dropout(dropout), nn.Linear(inner, hidden), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SASRecEncoder(SequenceEncoder):
    """Causal self-attention encoder (pre-LN SASRec).

    ``positions="end"`` (the default) counts positions from the end (last item = 1), which for a
    window of exactly ``max_len`` is SASRec.pytorch's numbering. ``"start"`` counts them from the
    window's first real item (first item = 1), as RecBole's SASRec and GPT-style models do: a
    training query at position t then looks like a serving query after t items, and appending an
    item leaves every earlier position's input unchanged (what a key/value cache needs). Either
    way the output does not depend on the padding length.

    >>> enc = SASRecEncoder(6, 8, 1, 1, 0.0, 4, positions="start").eval()
    >>> enc.positions_of(torch.tensor([[0, 0, 3, 5], [1, 2, 3, 4]])).tolist()
    [[0, 0, 1, 2], [1, 2, 3, 4]]
    """

    def __init__(
        self, n_rows: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int,
        ffn: int | None = None, activation: str = "relu", positions: str = "end",
    ) -> None:
        super().__init__(n_rows, hidden, max_len)
        if activation not in ACTIVATIONS:
            raise ModelsError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        if positions not in POSITIONS:
            raise ModelsError(f"positions must be one of {POSITIONS}, not {positions!r}")
        self.positions = positions
        if hidden % heads:
            raise ModelsError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.pos_emb = nn.Embedding(max_len + 1, hidden, padding_idx=PAD)
        nn.init.normal_(self.pos_emb.weight, std=EMBEDDING_STD)
        with torch.no_grad():
            self.pos_emb.weight[PAD].zero_()
        self.emb_dropout = nn.Dropout(dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(layers))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True) for _ in range(layers)
        )
        self.ff_norms = nn.ModuleList(nn.LayerNorm(hidden, eps=1e-8) for _ in range(layers))
        self.ffs = nn.ModuleList(_FeedForward(hidden, dropout, ffn, activation) for _ in range(layers))
        self.last_norm = nn.LayerNorm(hidden, eps=1e-8)

    def _attention_mask(self, padding: torch.Tensor) -> torch.Tensor:
        """``[B*heads, L, L]`` bool, True = blocked: future keys and padding keys. The diagonal stays
        open so padded queries (never read) attend to themselves instead of producing NaN rows."""
        length = padding.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=padding.device).tril()
        allowed = causal & ~padding.unsqueeze(1)
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=padding.device)
        return (~allowed).repeat_interleave(self.heads, dim=0)

    def forward(self, item_emb_of_seq: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        batch, length, _ = item_emb_of_seq.shape
        if length > self.max_len:
            raise ModelsError(f"sequence length {length} exceeds max_len {self.max_len}; keep the last max_len items")
        x = self.emb_dropout(self._embed(item_emb_of_seq, padding))
        mask = self._attention_mask(padding)
        for attn_norm, attn, ff_norm, ff in zip(self.attn_norms, self.attns, self.ff_norms, self.ffs, strict=True):
            q = attn_norm(x)
            x = x + attn(q, q, q, attn_mask=mask, need_weights=False)[0]
            x = x + ff(ff_norm(x))
        return self.last_norm(x)

    def positions_of(self, seq_or_padding: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` position indices (1.. for real items, 0 for padding) of a batch of item
        indices, or of a bool padding mask (True = pad)."""
        padding = seq_or_padding if seq_or_padding.dtype == torch.bool else seq_or_padding == PAD
        batch, length = padding.shape
        if self.positions == "start":
            positions = (~padding).long().cumsum(1)
        else:
            positions = torch.arange(length, 0, -1, device=padding.device).expand(batch, length)
        return positions.masked_fill(padding, PAD)

    def _embed(self, item_emb_of_seq: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Scaled item embeddings plus positions (:meth:`positions_of`; padding gets 0)."""
        return item_emb_of_seq * math.sqrt(self.hidden) + self.pos_emb(self.positions_of(padding))

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state of the last position; in eval mode via :meth:`_encode_last` (same answer,
        about half the work per peer); in train mode via the reference path (dropout RNG order)."""
        if self.training:
            return super().encode(seq)
        if seq.dim() != 2:
            raise ModelsError(f"sequences must be a [B, L] LongTensor, got shape {tuple(seq.shape)}")
        return self._encode_last(seq)

    def _encode_last(self, seq: torch.Tensor, keys: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Eval-mode ``encode``: the same blocks as :meth:`forward` without dropout, written with
        ``scaled_dot_product_attention`` and the module's own weights, where the final block
        computes the query, attention and feed-forward of the last position only (its keys and
        values still come from every position). With ``keys`` (a list), appends each block's
        ``(K, V)`` ``[B, L', H]`` (L' = the columns kept: all-padding columns are dropped)."""
        if seq.shape[1] > self.max_len:
            raise ModelsError(f"sequence length {seq.shape[1]} exceeds max_len {self.max_len}; keep the last max_len items")
        padding = seq == PAD
        # Columns that are padding in every row change nothing (positions count from either end
        # of the real items and padded keys are masked): drop them, keeping at least the last column.
        real = (~padding).any(0)
        first = int(real.to(torch.int8).argmax()) if bool(real.any()) else seq.shape[1] - 1
        if first:
            seq, padding = seq[:, first:], padding[:, first:]
        batch, length = seq.shape
        x = self._embed(self.item_emb(seq), padding)
        # True = may attend (SDPA's convention): earlier-or-same non-padding keys, plus the
        # diagonal so that an all-padding row attends to itself, exactly as in _attention_mask.
        allowed = _causal(length, seq.device) & ~padding.unsqueeze(1)
        allowed |= _diagonal(length, seq.device)
        allowed = allowed.unsqueeze(1)  # [B, 1, L, L]: broadcast over heads
        n_blocks = len(self.attns)
        for n, (attn_norm, attn, ff_norm, ff) in enumerate(
            zip(self.attn_norms, self.attns, self.ff_norms, self.ffs, strict=True)
        ):
            q = attn_norm(x)
            mask = allowed
            if n < n_blocks - 1:
                query, k, v = self._projections(attn, q).chunk(3, dim=-1)
            else:  # the last block: only the last position's query
                k, v = self._keys(attn, q)
                query, x, mask = self._query(attn, q[:, -1:]), x[:, -1:], allowed[:, :, -1:]
            if keys is not None:
                keys.append((k, v))
            x = x + self._attend(attn, query, k, v, mask)
            x = x + ff(ff_norm(x))
        return self.last_norm(x[:, -1])

    def step(
        self, items: torch.Tensor, positions: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]],
        past_real: torch.Tensor, new_real: torch.Tensor,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """New items appended to cached keys/values (eval mode; exact only with
        ``positions="start"``, where earlier positions never change).

        ``items``, ``positions``, ``new_real`` ``[B, Q]``: up to Q new items per row (oldest first),
        their positions (1-based from the window's start) and which slots hold one (the rest are
        right padding); ``past`` = per block ``(K, V)`` ``[B, T, H]`` of the earlier positions,
        ``past_real`` ``[B, T]`` bool (False = no earlier item there). Returns the hidden state
        after each new item ``[B, Q, H]`` (what :meth:`encode` gives for the sequence up to it)
        and per block the new items' ``(k, v)`` ``[B, Q, H]``.
        """
        if self.positions != "start":
            raise ModelsError("step() needs positions='start': with positions from the end every key changes")
        q_len = items.shape[1]
        x = self.item_emb(items) * math.sqrt(self.hidden) + self.pos_emb(positions.masked_fill(~new_real, PAD))
        among_new = (_causal(q_len, items.device) & new_real.unsqueeze(1)) | _diagonal(q_len, items.device)
        allowed = torch.cat([past_real.unsqueeze(1).expand(-1, q_len, -1), among_new], 2).unsqueeze(1)  # [B, 1, Q, T+Q]
        new = []
        for (attn_norm, attn, ff_norm, ff), (pk, pv) in zip(
            zip(self.attn_norms, self.attns, self.ff_norms, self.ffs, strict=True), past, strict=True
        ):
            q, k, v = self._projections(attn, attn_norm(x)).chunk(3, dim=-1)
            new.append((k, v))
            x = x + self._attend(attn, q, torch.cat([pk, k], 1), torch.cat([pv, v], 1), allowed)
            x = x + ff(ff_norm(x))
        return self.last_norm(x), new

    @staticmethod
    def _projections(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Queries, keys and values in one product: ``[..., 3H]``."""
        assert isinstance(attn, nn.MultiheadAttention)
        return F.linear(x, attn.in_proj_weight, attn.in_proj_bias)

    def _query(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(attn, nn.MultiheadAttention) and attn.in_proj_bias is not None
        hid = self.hidden
        return F.linear(x, attn.in_proj_weight[:hid], attn.in_proj_bias[:hid])

    def _keys(self, attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(attn, nn.MultiheadAttention) and attn.in_proj_bias is not None
        hid = self.hidden
        k, v = F.linear(x, attn.in_proj_weight[hid:], attn.in_proj_bias[hid:]).chunk(2, dim=-1)
        return k, v

    def _attend(
        self, attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """``nn.MultiheadAttention`` (eval mode, no weights returned) from projected queries ``q``
        ``[B, Lq, H]`` and keys/values ``[B, L, H]``; ``allowed`` is ``[B, 1, Lq, L]`` bool."""
        assert isinstance(attn, nn.MultiheadAttention)
        hid, heads = self.hidden, self.heads
        batch, lq, _ = q.shape
        d = hid // heads
        q = q.reshape(batch, lq, heads, d).transpose(1, 2)
        k = k.reshape(batch, -1, heads, d).transpose(1, 2)
        v = v.reshape(batch, -1, heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return attn.out_proj(out.transpose(1, 2).reshape(batch, lq, hid))


@functools.lru_cache(maxsize=64)
def _causal(length: int, device: torch.device) -> torch.Tensor:
    """Lower-triangular ``[L, L]`` bool (cached per shape: the serving path asks for few shapes)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


@functools.lru_cache(maxsize=64)
def _diagonal(length: int, device: torch.device) -> torch.Tensor:
    return torch.eye(length, dtype=torch.bool, device=device)


class GRU4RecEncoder(SequenceEncoder):
    """Scaled embedding -> dropout -> GRU -> linear -> LayerNorm. Padding is skipped by packing, so
    the state at each real position depends only on real items.

    The input scale (sqrt(hidden)) and the final LayerNorm are SASRec's: with output embeddings
    tied to input embeddings of std 0.02, RecBole's plain layout starts with logits near 0 and
    barely learns in a short budget (Foursquare NYC, 4 epochs: valid NDCG@10 0.026 without, 0.185
    with them)."""

    def __init__(self, n_rows: int, hidden: int, layers: int, dropout: float, max_len: int) -> None:
        super().__init__(n_rows, hidden, max_len)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bias=True)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-8)

    def forward(self, item_emb_of_seq: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = item_emb_of_seq.shape
        lengths = (~padding).sum(1)
        # Rotate each row so its items start at column 0 (packing wants right padding), run, rotate back.
        cols = torch.arange(length, device=padding.device).expand(batch, length)
        shift = (length - lengths).unsqueeze(1)
        to_left = ((cols + shift) % length).unsqueeze(-1).expand(-1, -1, hidden)
        x = self.emb_dropout(item_emb_of_seq * math.sqrt(self.hidden)).gather(1, to_left)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        back = ((cols - shift) % length).unsqueeze(-1).expand(-1, -1, hidden)
        return self.norm(self.out(out.gather(1, back)))


class BERT4RecEncoder(SASRecEncoder):
    """Bidirectional self-attention with a learned mask token (BERT4Rec).

    :meth:`hidden_states` takes an optional ``masked`` ``[B, L]`` bool: those positions are fed
    the mask token instead of their item (and count as real, not padding). :meth:`encode` appends
    one mask token after the sequence (dropping the oldest item when the sequence is already
    ``max_len`` long) and returns its hidden state: the next-item query.

    >>> enc = make_encoder("bert4rec", n_rows=6, hidden=8, layers=1, heads=2, dropout=0.0, max_len=4).eval()
    >>> enc.encode(torch.tensor([[0, 1, 2, 3]])).shape, enc.cloze
    (torch.Size([1, 8]), True)
    """

    cloze = True

    def __init__(
        self, n_rows: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int,
        ffn: int | None = None, activation: str = "gelu", positions: str = "end",
    ) -> None:
        super().__init__(n_rows, hidden, layers, heads, dropout, max_len, ffn, activation, positions)
        self.mask_emb = nn.Parameter(torch.randn(hidden) * EMBEDDING_STD)

    def _attention_mask(self, padding: torch.Tensor) -> torch.Tensor:
        """Every real key is visible from every query (no causal mask); diagonal open as in SASRec."""
        length = padding.shape[1]
        allowed = (~padding).unsqueeze(1).expand(-1, length, -1)
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=padding.device)
        return (~allowed).repeat_interleave(self.heads, dim=0)

    def hidden_states(self, seq: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        if seq.dim() != 2:
            raise ModelsError(f"sequences must be a [B, L] LongTensor, got shape {tuple(seq.shape)}")
        emb = self.item_emb(seq)
        padding = seq == PAD
        if masked is not None:
            emb = torch.where(masked.unsqueeze(-1), self.mask_emb.to(emb.dtype).expand_as(emb), emb)
            padding = padding & ~masked
        return self(emb, padding)

    def with_trailing_mask(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(seq', masked)``: ``seq`` plus one padding column flagged as the mask slot, keeping
        at most ``max_len`` columns."""
        if seq.shape[1] >= self.max_len:
            seq = seq[:, seq.shape[1] - self.max_len + 1 :]
        seq = torch.cat([seq, torch.zeros_like(seq[:, :1])], dim=1)
        masked = torch.zeros_like(seq, dtype=torch.bool)
        masked[:, -1] = True
        return seq, masked

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        if seq.dim() != 2:
            raise ModelsError(f"sequences must be a [B, L] LongTensor, got shape {tuple(seq.shape)}")
        seq, masked = self.with_trailing_mask(seq)
        return self.hidden_states(seq, masked)[:, -1]


def make_encoder(
    kind: str, n_rows: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int,
    ffn: int | None = None, activation: str | None = None, positions: str = "end",
) -> SequenceEncoder:
    """Build an encoder by name (one of :data:`ENCODERS`). ``ffn`` (inner width of the
    feed-forward, default ``hidden``), ``activation`` (default ReLU; GELU for BERT4Rec) and
    ``positions`` (:class:`SASRecEncoder`) apply to the self-attention encoders."""
    if kind == "sasrec":
        return SASRecEncoder(n_rows, hidden, layers, heads, dropout, max_len, ffn, activation or "relu", positions)
    if kind == "bert4rec":
        return BERT4RecEncoder(n_rows, hidden, layers, heads, dropout, max_len, ffn, activation or "gelu", positions)
    if kind == "gru4rec":
        return GRU4RecEncoder(n_rows, hidden, layers, dropout, max_len)
    raise ModelsError(f"unknown encoder {kind!r}; use one of {ENCODERS}")
