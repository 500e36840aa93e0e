"""Incremental next-item inference: per-sequence cached encoder state, exact against the full re-encode.

:class:`IncrementalScorer` serves :meth:`models.hail.HAIL.log_probs`-equal scores for a batch of
(unpadded) index sequences, caching each answered sequence's encoder state so that the next
sequence that extends it by one item costs one step instead of a re-encode. The cache is keyed by
the sequence's content (its index bytes), not by a user id: a state is by construction the full
encoder's state after exactly those items, so a hit can never be stale for its key, whichever
user it came from; an LRU bound (``capacity`` entries, and optionally ``max_bytes``) caps memory. A user whose window slides
(its history is already ``max_len`` long) or whose sequence changed otherwise (an item became
known after a vocabulary change) simply misses and is re-encoded in full; full windows are
therefore not cached at all. **The cache only pays while windows fill**: on a mature stream, where
most users have ``max_len`` items or more, almost every event slides and is re-encoded (no exact
state of a model that reads only the last ``max_len`` items survives dropping the oldest one).

Which encoders have an exact incremental state:

- GRU4Rec: the GRU's hidden state of every layer after the sequence's last item (``[layers, H]``
  per peer); one GRU step from it equals the packed full run up to float rounding.
- SASRec with ``positions="start"``: the keys and values of every block at every position
  (``[layers, 2, t, H]`` per peer, :meth:`models.encoders.SASRecEncoder.step`). With the default
  ``positions="end"`` there is none: a new item renumbers every earlier position, so every key and
  value of every block changes; those models are re-encoded in full.
- BERT4Rec (bidirectional): none; :meth:`IncrementalScorer.supports` is False and callers use
  ``HAIL.log_probs``.

The copy/repeat output (``history="copy"``) needs only the last position's hidden state and the
window's items, so it is computed from the cached encoder state as it is from a re-encode. Without
it, the scores of all peers are made in one batched product (``[P, B, H] @ [P, H, V]``), and
:meth:`IncrementalScorer.top_k` (the worker's path) goes through it in cache-sized blocks of rows
without building the ``[B, V]`` mean (:func:`mean_log_softmax_topk`).

>>> import torch
>>> from models.hail import HAIL, HailConfig
>>> model = HAIL(HailConfig(encoders=("gru4rec",), hidden=8, layers=1, max_len=4, dropout=0.0), n_rows=7).eval()
>>> inc = IncrementalScorer(model, capacity=100)
>>> seqs = [np.array([1, 2]), np.array([3])]
>>> _ = inc.log_probs(seqs); lp = inc.log_probs([np.array([1, 2, 5])])
>>> inc.hits, inc.misses, bool(torch.allclose(lp, model.log_probs(torch.tensor([[1, 2, 5]])), atol=1e-5))
(1, 2, True)
>>> sas = HAIL(HailConfig(hidden=8, layers=2, max_len=4, dropout=0.0, positions="start"), n_rows=7).eval()
>>> inc = IncrementalScorer(sas, capacity=100)
>>> _ = inc.log_probs(seqs); lp = inc.log_probs([np.array([1, 2, 5])])
>>> inc.hits, bool(torch.allclose(lp, sas.log_probs(torch.tensor([[1, 2, 5]])), atol=1e-5))
(1, True)
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

from models.encoders import GRU4RecEncoder, SASRecEncoder, SequenceEncoder
from models.errors import ModelsError
from models.hail import HAIL
from models.padding import left_pad
from models.vocab import PAD

ONE_GROUP_CHAINS = 64
"""Up to this many chains in a batch are stepped as one group, padded to the longest
(:meth:`IncrementalScorer._hidden`); more are grouped by length."""

BLOCK_FLOATS = 1 << 18
"""Logits per block of :func:`mean_log_softmax_topk` (1 MiB of float32): small enough to stay in
one core's cache between the product, the log-softmax, the peer sum and the top-k."""


def mean_log_softmax_topk(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int, block: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of the mean over peers of ``log_softmax(hidden[p] @ weight[p] + bias)``:
    ``hidden [P, B, H]``, ``weight [P, H, V]``, ``bias [V]``; returns ``(values [B, k],
    indices [B, k])``, best first.

    The same as taking the log-softmax, the mean over peers and then the top-k, at about half the
    CPU time (bench/inference_cost.py): rows go in blocks of ``block`` (default: about
    :data:`BLOCK_FLOATS` logits per block), so each block's ``[P, rows, V]`` logits are still in
    cache for every pass over them, and the division by ``P`` is made on the ``k`` winners only
    (it preserves the order). The floats are those of the unblocked computation up to the
    product's rounding: a matrix product over fewer rows may round differently.

    >>> g = torch.Generator().manual_seed(0)
    >>> h, w, b = torch.randn(2, 5, 4, generator=g), torch.randn(2, 4, 9, generator=g), torch.zeros(9)
    >>> values, indices = mean_log_softmax_topk(h, w, b, k=3, block=2)
    >>> ref = torch.topk(torch.log_softmax(torch.baddbmm(b, h, w), dim=-1).mean(0), 3, dim=-1)
    >>> bool(torch.equal(indices, ref.indices)), bool(torch.allclose(values, ref.values))
    (True, True)
    """
    peers, batch, _ = hidden.shape
    rows = block or max(1, BLOCK_FLOATS // (peers * weight.shape[-1]))
    rows = -(-batch // -(-batch // rows))  # blocks of equal size: 32 rows as 16 + 16, not 26 + 6
    values, indices = [], []
    for start in range(0, batch, rows):
        lp = torch.log_softmax(torch.baddbmm(bias, hidden[:, start : start + rows], weight), dim=-1)
        total = lp[0] if peers == 1 else torch.add(lp[0], lp[1])  # a new tensor, not a clone + add
        for p in range(2, peers):
            total.add_(lp[p])
        top = torch.topk(total, k, dim=-1)
        values.append(top.values)
        indices.append(top.indices)
    out = torch.cat(values)
    return (out.div_(peers) if peers > 1 else out), torch.cat(indices)


def _exact_state(net: SequenceEncoder) -> bool:
    if type(net) is GRU4RecEncoder:
        return True
    return type(net) is SASRecEncoder and net.positions == "start"


class IncrementalScorer:
    """Cached-state scoring of one (eval-mode) HAIL model; build a new one per model version.

    ``capacity`` = most cached sequences (about one per active user); 0 disables the cache (every
    sequence is re-encoded, still with the batched scoring). ``max_bytes`` also bounds the cached
    state tensors' bytes (a SASRec state grows with the sequence: ~2 KB per item for 2 peers of
    2 layers at hidden 64; a GRU4Rec state is ~1 KB whatever the length).
    """

    def __init__(self, model: HAIL, capacity: int, peer: int | None = None, max_bytes: int | None = None) -> None:
        if capacity < 0:
            raise ModelsError(f"capacity must be >= 0 (0 = no cache), not {capacity}")
        if max_bytes is not None and max_bytes < 0:
            raise ModelsError(f"max_bytes must be >= 0 or None (no bound), not {max_bytes}")
        self.max_bytes = max_bytes
        if not self.supports(model):
            raise ModelsError(
                "incremental inference needs GRU4Rec peers, or SASRec peers with positions='start' "
                "(train with --positions start)"
            )
        self.model = model
        self.capacity = capacity
        if peer is not None:
            model._chosen(peer)  # validates the index
        self.peers = list(range(len(model.peers))) if peer is None else [peer]
        self._nets = [model.networks[k] for k in self.peers]
        self._gru = isinstance(self._nets[0], GRU4RecEncoder)
        self._n_rows = model.n_rows
        self._full_key = 8 * model.config.max_len  # bytes of a full window's key
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._weights = self._stack_weights()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def supports(model: HAIL) -> bool:
        """True when every peer has an exact incremental state: GRU4Rec, or SASRec with positions
        from the start (one kind for all peers)."""
        nets = model.networks
        return all(_exact_state(n) for n in nets) and len({type(n) for n in nets}) == 1

    def _stack_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.stack([n.item_emb.weight.detach() for n in self._nets]).transpose(1, 2)  # [P, H, V]
        bias = torch.zeros(w.shape[-1], dtype=w.dtype)
        bias[PAD] = float("-inf")
        if self.model.item_bias is not None:
            bias = bias + self.model.item_bias.detach()
        return w, bias

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        self._cache.clear()
        self._bytes = 0

    @property
    def state_bytes(self) -> int:
        """Bytes of the cached state tensors (what ``max_bytes`` bounds)."""
        return self._bytes

    def bytes_per_entry(self) -> float:
        """Measured memory of one cached sequence (key bytes + state tensor), averaged over the cache."""
        if not self._cache:
            return 0.0
        total = 0
        for key, state in self._cache.items():
            total += sys.getsizeof(key) + sys.getsizeof(state) + state.untyped_storage().nbytes()
        # the OrderedDict's own slot per entry (hash table + linked-list node), roughly
        total += sys.getsizeof(self._cache) + 100 * len(self._cache)
        return total / len(self._cache)

    def _refresh(self) -> None:
        if self.model.n_rows != self._n_rows:  # grown in place: new rows, new stacked weights
            self._n_rows = self.model.n_rows
            self._weights = self._stack_weights()
            self.clear()

    @torch.inference_mode()
    def log_probs(self, seqs: Sequence[np.ndarray]) -> torch.Tensor:
        """``[B, n_rows]`` next-item log-probabilities after each non-empty index sequence (oldest
        first, at most ``max_len`` items): the mean over peers of their log-softmax, as
        :meth:`HAIL.log_probs`."""
        self._refresh()
        hidden = self._hidden(seqs)  # [P, B, H]
        if self.model.copy_heads or self.model.trans_heads:
            padded = left_pad(seqs, max(len(s) for s in seqs))
            lp = torch.stack([self.model._next_log_probs(k, padded, hidden[p]) for p, k in enumerate(self.peers)])
        else:
            w, bias = self._weights
            lp = torch.log_softmax(torch.baddbmm(bias, hidden, w), dim=-1)  # [P, B, V]
        if lp.shape[0] == 1:
            return lp[0]
        # A running sum of the [B, V] slices: ~10x faster on CPU than .mean(0) over the peer axis.
        acc = lp[0].clone()
        for p in range(1, lp.shape[0]):
            acc.add_(lp[p])
        return acc.div_(lp.shape[0])

    @torch.inference_mode()
    def top_k(self, seqs: Sequence[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B, k], indices [B, k])``: the top ``k`` of :meth:`log_probs`, best first,
        without building the ``[B, n_rows]`` matrix when the model has no extra output heads
        (:func:`mean_log_softmax_topk`)."""
        if self.model.copy_heads or self.model.trans_heads:
            top = torch.topk(self.log_probs(seqs), k, dim=-1)
            return top.values, top.indices
        self._refresh()
        hidden = self._hidden(seqs)
        return mean_log_softmax_topk(hidden, *self._weights, k)

    def _hidden(self, seqs: Sequence[np.ndarray]) -> torch.Tensor:
        """``[P, B, H]``: each sequence's last hidden state per peer. Rounds of (1) a full encode of
        the sequences with nothing to step from, then (2) one batched step of every chain that
        starts at a cached state: a cached prefix plus the pending sequences that extend it one
        item at a time (one user's successive windows in one batch) go as one chunk of new items."""
        keys = [np.ascontiguousarray(s, dtype=np.int64).tobytes() for s in seqs]
        hidden: list[torch.Tensor | None] = [None] * len(seqs)
        todo = list(range(len(seqs)))
        while todo:
            pending = {keys[i] for i in todo}
            heads = [i for i in todo if not self._steppable(keys[i][:-8], pending)]
            if heads:
                self._full(heads, seqs, keys, hidden)
                self.misses += len(heads)
            done = set(heads)
            todo = [i for i in todo if i not in done]
            if todo:
                done = self._chains(todo, seqs, keys, hidden)
                self.hits += len(done)
                todo = [i for i in todo if i not in done]
        return torch.stack([h for h in hidden if h is not None], dim=1)  # [P, B, H]

    def _steppable(self, prefix: bytes, pending: set[bytes]) -> bool:
        return bool(prefix) and (prefix in self._cache or prefix in pending)

    def _chains(self, todo: list[int], seqs: Sequence[np.ndarray], keys: list[bytes],
                hidden: list[torch.Tensor | None]) -> set[int]:
        """Step every pending sequence that reaches a cached prefix through pending ones; returns
        the rows answered."""
        rows_of: dict[bytes, list[int]] = {}
        for i in todo:
            rows_of.setdefault(keys[i], []).append(i)
        root: dict[bytes, bytes] = {}  # pending key -> the cached state its chain starts from
        for key in sorted(rows_of, key=len):
            prefix = key[:-8]
            if prefix in root:
                root[key] = root[prefix]
            elif prefix and prefix in self._cache:
                root[key] = prefix
        if not root:
            return set()
        parents = {k[:-8] for k in root}
        tips = [k for k in root if k not in parents]
        roots = [root[t] for t in tips]
        chunks = [seqs[rows_of[t][0]][len(r) // 8 :] for t, r in zip(tips, roots, strict=True)]
        base_state = {r: self._cache[r] for r in set(roots)}  # before remembering evicts any
        # Chains of similar length go together (a chunk is padded to its group's longest); a few
        # chains go as one group: then a step per group costs more than the padding saves.
        groups: dict[int, list[int]] = {}
        for b, c in enumerate(chunks):
            groups.setdefault(0 if len(chunks) <= ONE_GROUP_CHAINS else (len(c) - 1).bit_length(), []).append(b)
        answered: set[int] = set()
        for members in groups.values():
            out, tip_states = self._advance([base_state[roots[b]] for b in members], [chunks[b] for b in members])
            for j, b in enumerate(members):
                key, base = tips[b], roots[b]
                while key != base:  # every sequence on the chain: its output after its own last item
                    q = (len(key) - len(base)) // 8 - 1
                    for i in rows_of[key]:
                        hidden[i] = out[:, j, q]
                        answered.add(i)
                    key = key[:-8]
                self._remember(tips[b], tip_states[j])
        for r in set(roots) - set(tips):  # their users have moved on
            self._forget(r)
        return answered

    def _cacheable(self, key: bytes) -> bool:
        # A full window is never stepped from: the user's next window drops its oldest item.
        return bool(self.capacity) and len(key) < self._full_key

    def _remember(self, key: bytes, state: torch.Tensor) -> None:
        if not self._cacheable(key):
            return
        self._forget(key)
        self._cache[key] = state
        self._bytes += state.untyped_storage().nbytes()
        while len(self._cache) > self.capacity or (self.max_bytes is not None and self._bytes > self.max_bytes):
            self._forget(next(iter(self._cache)))  # the least recently stored

    def _forget(self, key: bytes) -> None:
        state = self._cache.pop(key, None)
        if state is not None:
            self._bytes -= state.untyped_storage().nbytes()

    def _advance(self, states: list[torch.Tensor], chunks: list[np.ndarray]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each cached ``state`` followed by its ``chunk`` of new items: the output states after
        every new item ``[P, N, Q, H]`` and each row's state after its whole chunk."""
        lengths = [len(c) for c in chunks]
        q_len = max(lengths)
        items = torch.zeros(len(chunks), q_len, dtype=torch.long)
        for j, c in enumerate(chunks):
            items[j, : len(c)] = torch.as_tensor(np.asarray(c, dtype=np.int64))
        if self._gru:
            return self._advance_gru(states, items, lengths)
        return self._advance_sasrec(states, items, lengths)

    def _advance_gru(self, states: list[torch.Tensor], items: torch.Tensor, lengths: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        before = torch.stack(states, dim=2)  # [P, layers, N, H]
        outs, finals = [], []
        for p, net in enumerate(self._nets):
            assert isinstance(net, GRU4RecEncoder)
            x = net.item_emb(items) * math.sqrt(net.hidden)
            packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
            seq_out, h = net.gru(packed, before[p].contiguous())
            seq_out, _ = pad_packed_sequence(seq_out, batch_first=True, total_length=items.shape[1])
            outs.append(net.norm(net.out(seq_out)))  # [N, Q, H]
            finals.append(h)  # [layers, N, H]
        final = torch.stack(finals)  # [P, layers, N, H]
        return torch.stack(outs), [final[:, :, j].clone() for j in range(len(states))]

    def _advance_sasrec(self, states: list[torch.Tensor], items: torch.Tensor,
                        lengths: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # states[j]: [P, layers, 2, t_j, H]; right-padded into one [P, layers, 2, N, T, H] block
        past_len = [int(s.shape[3]) for s in states]
        size = states[0].shape
        past = states[0].new_zeros(size[0], size[1], 2, len(states), max(past_len), size[4])
        for j, s in enumerate(states):
            past[:, :, :, j, : past_len[j]] = s
        past_real = torch.arange(max(past_len)).unsqueeze(0) < torch.as_tensor(past_len).unsqueeze(1)  # [N, T]
        positions = torch.as_tensor(past_len).unsqueeze(1) + 1 + torch.arange(items.shape[1]).unsqueeze(0)
        new_real = torch.arange(items.shape[1]).unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)  # [N, Q]
        outs, news = [], []
        for p, net in enumerate(self._nets):
            assert isinstance(net, SASRecEncoder)
            blocks = [(past[p, n, 0], past[p, n, 1]) for n in range(size[1])]
            h, new = net.step(items, positions, blocks, past_real, new_real)
            outs.append(h)
            news.append(torch.stack([torch.stack(kv) for kv in new]))  # [layers, 2, N, Q, H]
        added = torch.stack(news)  # [P, layers, 2, N, Q, H]
        finals = [torch.cat([s, added[:, :, :, j, : lengths[j]]], dim=3) for j, s in enumerate(states)]
        return torch.stack(outs), finals

    def _full(self, rows: list[int], seqs: Sequence[np.ndarray], keys: list[bytes], hidden: list[torch.Tensor | None]) -> None:
        if self._gru:
            tensors = [torch.as_tensor(np.asarray(seqs[i], dtype=np.int64)) for i in rows]
            outs, finals = [], []
            for net in self._nets:
                assert isinstance(net, GRU4RecEncoder)
                xs = [net.item_emb(t) * math.sqrt(net.hidden) for t in tensors]
                _, h = net.gru(pack_sequence(xs, enforce_sorted=False))  # h: [layers, B, H], original order
                outs.append(net.norm(net.out(h[-1])))
                finals.append(h)
            out, final = torch.stack(outs), torch.stack(finals)  # [P, B, H], [P, layers, B, H]
            for j, i in enumerate(rows):
                hidden[i] = out[:, j]
                self._remember(keys[i], final[:, :, j].clone())
            return
        lengths = [len(seqs[i]) for i in rows]
        padded = left_pad([seqs[i] for i in rows], max(lengths))
        # Only windows that can grow are remembered: the keys/values of full ones are not kept.
        keep = [j for j, i in enumerate(rows) if self._cacheable(keys[i])]
        outs, kvs = [], []
        for net in self._nets:
            assert isinstance(net, SASRecEncoder)
            blocks: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if keep else None
            outs.append(net._encode_last(padded, blocks))
            if blocks:
                rows_kept = torch.as_tensor(keep)
                kvs.append(torch.stack([torch.stack(kv)[:, rows_kept] for kv in blocks]))  # [layers, 2, K, L, H]
        out = torch.stack(outs)
        for j, i in enumerate(rows):
            hidden[i] = out[:, j]
        if keep:
            state = torch.stack(kvs)  # [P, layers, 2, K, L, H]; row j's items are its last n_j columns
            width = state.shape[4]
            for n, j in enumerate(keep):
                self._remember(keys[rows[j]], state[:, :, :, n, width - lengths[j]:].clone())
