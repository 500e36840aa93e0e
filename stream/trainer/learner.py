"""The incremental learning lifecycle, without any I/O but the model store: learn from events,
decide when to fine-tune, fine-tune a candidate, gate it, promote or reject it.

:class:`Learner` is what ``hailstream trainer`` runs around a Kafka consumer, and what the
streaming benchmark runs in-process on a replayed event sequence (same code, same protocol):

1. :meth:`Learner.learn_one` per event: the item enters the bounded vocabulary
   (:class:`models.capacity.ItemCapacity`: grows, recycles a long-unseen item's row, or refuses)
   and the :class:`stream.trainer.window.TrainingWindow` (recent window + user context + reservoir).
2. :meth:`Learner.due` says whether a fine-tune should start: every ``every_events`` events, every
   ``every_seconds`` seconds, or after :meth:`Learner.request` (a drift signal, an operator), once
   at least ``min_new_events`` new events arrived since the last one. A drift signal first waits
   for ``drift_wait`` events of the new regime (default 2 x ``holdout``; other triggers wait with
   it), so that the gate's held-out slice and part of the training data come after the change.
3. :meth:`Learner.prepare` snapshots the data (cheap; the stream may go on meanwhile),
   :meth:`Learner.run` does the heavy part (safe in another thread): a copy of the live model,
   grown for new items with recycled rows re-initialised (:func:`models.capacity.candidate_from`),
   fine-tuned with its own loss (all K peers jointly with MED for HAIL; bounded steps,
   :func:`models.trainer.fine_tune`) on the window minus its newest ``holdout`` events plus the
   reservoir; then the **validation gate**: candidate and live model both replay the held-out
   slice prequentially (each event scored against the top-k after the history before it; the
   slice is the window's newest ``holdout`` events by event time, which the candidate never
   trained on) and :func:`stream.trainer.gate.compare` decides on the paired per-event ``gate_metric``:
   at least ``gate_min_events`` scored events, and the candidate better than live with
   ``gate_confidence`` (or, with ``tolerance > 0``, worse by at most ``tolerance``). A tie is a
   rejection: only evidence promotes.
4. :meth:`Learner.finish` promotes (a new store version, the new live model) or rejects (recorded,
   counted). The caller announces promotions (see ``stream.trainer.process``).

>>> import torch
>>> from models.hail import HAIL, HailConfig
>>> from models.vocab import ItemVocab
>>> torch.manual_seed(0) and None
>>> vocab = ItemVocab(["a", "b", "c"])
>>> model = HAIL(HailConfig(hidden=8, layers=1, max_len=5, dropout=0.0), vocab.rows)
>>> cfg = TrainerSettings(window=40, holdout=8, every_events=30, min_new_events=10, steps=5, tolerance=1.0,
...                       gate_min_events=8)
>>> learner = Learner(model, vocab, "v1", 1, cfg)
>>> for n in range(30):
...     _ = learner.learn_one(f"u{n % 3}", "abcd"[n % 4])
>>> learner.due()
'events'
>>> out = learner.step()
>>> out.outcome, out.version, learner.live.version, len(learner.live.vocab)
('promoted', 'v2', 'v2', 4)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.capacity import Admission, ItemCapacity, RecyclingVocab, candidate_from, changed_rows
from models.hail import HAIL
from models.metrics import TOPK_METRICS, topk_metrics
from models.trainer import fine_tune, left_pad, make_windows
from models.vocab import ItemVocab
from stream.errors import StreamError
from stream.messages import version_label
from stream.settings import TrainerSettings
from stream.trainer.gate import compare
from stream.trainer.model_store import ModelStore
from stream.trainer.window import TrainingWindow
from stream.worker.recommender import OnlineRecommender

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LiveState:
    """The version the trainer fine-tunes from (and that the workers serve)."""

    model: HAIL
    vocab: ItemVocab
    version: str
    number: int


@dataclass
class Progress:
    """Where a running fine-tune is: ``phase`` ``"training"`` (``step`` of ``steps`` done) or
    ``"gating"`` (scoring the held-out slice), since ``started`` (``time.time()``).

    >>> p = Progress(phase="training", step=20, steps=60, started=100.0)
    >>> p.to_dict(now=110.0)["eta_s"]   # 10 s for 20 steps: 40 steps left, 20 s
    20.0
    """

    phase: str = "queued"
    step: int = 0
    steps: int = 0
    started: float = 0.0

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """The stats file's form, with ``elapsed_s`` and the training phase's ``eta_s`` (None
        before the first step), from the mean step time so far."""
        elapsed = max(0.0, (time.time() if now is None else now) - self.started) if self.started else 0.0
        eta = elapsed / self.step * (self.steps - self.step) if self.phase == "training" and self.step else None
        return {"phase": self.phase, "step": self.step, "steps": self.steps, "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(eta, 1)}


@dataclass
class Job:
    """A fine-tune's inputs, snapshotted by :meth:`Learner.prepare`; ``progress`` is updated by
    :meth:`Learner.run` as it goes (read by the trainer's stats from another thread)."""

    reason: str
    base: LiveState
    vocab: RecyclingVocab
    windows: torch.Tensor
    holdout: list[tuple[list[str], str]]
    seq: int
    requested_at: float
    new_rows: int
    recycled_rows: int
    progress: Progress = field(default_factory=Progress)


@dataclass
class Outcome:
    """How one fine-tune ended. ``outcome``: promoted, rejected or failed; ``version`` is the
    promoted (or recorded rejected) version's label; ``candidate``/``live`` the gate's metrics."""

    reason: str
    outcome: str
    parent: str
    parent_number: int | None = None
    version: str | None = None
    number: int | None = None
    candidate: dict[str, float] = field(default_factory=dict)
    live: dict[str, float] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    loss: float = float("nan")
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    train_rows: int = 0
    holdout: int = 0
    new_rows: int = 0
    recycled_rows: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    requested_at: float = 0.0
    error: str | None = None
    model: HAIL | None = field(default=None, repr=False)
    vocab: ItemVocab | None = field(default=None, repr=False)
    checkpoint: str | None = None
    sha256: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (no model)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "vocab")}




def score_pairs(
    model: HAIL, vocab: ItemVocab, pairs: Sequence[tuple[Sequence[str], str]], k: int = 10, batch_size: int = 256
) -> np.ndarray:
    """Per-event HR/NDCG/MRR@k [n, 3] of ``model`` on (history, next item) pairs of external ids:
    each pair is scored against the top-k the model gives after its history (unknown ids are
    dropped; a history with no known item gets an empty list, a miss)."""
    rec = OnlineRecommender(model, vocab, "gate")
    rows = np.zeros((len(pairs), 3))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        answers = rec.recommend_batch([h for h, _ in chunk], k)
        for j, ((items, _), (_, actual)) in enumerate(zip(answers, chunk, strict=True)):
            rows[start + j] = topk_metrics(items[:k], actual)
    return rows


def summarise(rows: np.ndarray, k: int = 10) -> dict[str, float]:
    """Means of :func:`score_pairs` rows as ``{"hr@k", "ndcg@k", "mrr@k", "n"}``."""
    n = len(rows)
    means = rows.mean(axis=0).tolist() if n else [0.0, 0.0, 0.0]
    out: dict[str, float] = {f"{c}@{k}": v for c, v in zip(TOPK_METRICS, means, strict=True)}
    out["n"] = n
    return out


def gate_scores(
    model: HAIL, vocab: ItemVocab, pairs: Sequence[tuple[Sequence[str], str]], k: int = 10, batch_size: int = 256
) -> dict[str, float]:
    """Prequential HR/NDCG/MRR@k of ``model`` on (history, next item) pairs (see :func:`score_pairs`).

    >>> from models.hail import HailConfig
    >>> v = ItemVocab(["a", "b"]); m = HAIL(HailConfig(hidden=8, layers=1, max_len=3), v.rows)
    >>> s = gate_scores(m, v, [(["a"], "b"), (["zz"], "a")], k=10)  # two items: "b" is in any top-10
    >>> s["hr@10"], s["n"]
    (0.5, 2)
    """
    return summarise(score_pairs(model, vocab, pairs, k, batch_size), k)


class Learner:
    """The lifecycle state machine; see the module docstring. ``now`` is the clock of the
    ``every_seconds`` trigger (monotonic seconds); ``store=None`` keeps versions in memory only
    (benchmarks)."""

    def __init__(
        self,
        model: HAIL,
        vocab: ItemVocab,
        version: str,
        number: int,
        config: TrainerSettings | None = None,
        store: ModelStore | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = cfg = config or TrainerSettings()
        self.store = store
        self._now = now
        model.eval()
        self.live = LiveState(model, vocab, version, int(number))
        min_idle = cfg.window if cfg.min_idle is None else cfg.min_idle
        self.capacity = ItemCapacity(vocab, cfg.item_capacity, min_idle)
        self.window = TrainingWindow(cfg.window, cfg.span, model.config.max_len, cfg.reservoir, cfg.max_users, cfg.seed)
        self.events = 0
        self._since = 0  # events since the last fine-tune started
        self._last_at = now()
        self._requested: tuple[str, float, int] | None = None  # reason, time, self.events at the request
        self._seq = 0
        self.outcomes: dict[str, int] = {"promoted": 0, "rejected": 0, "failed": 0}
        self.history: list[dict[str, Any]] = []

    def set_live(self, model: HAIL, vocab: ItemVocab, version: str, number: int) -> None:
        """Fine-tune from another version from now on (an operator's promote or rollback). A
        fine-tune running meanwhile finishes as ``failed`` (its parent is no longer live)."""
        model.eval()
        self.live = LiveState(model, vocab, version, int(number))

    # -- the stream -------------------------------------------------------------------------
    def learn_one(self, user: str, item: str, ts: float = 0.0, count: bool = True) -> Admission:
        """One event, in stream order. ``count=False`` learns it without counting it towards the
        ``every_events`` trigger (events re-read to refill the window after a restart)."""
        adm = self.capacity.observe(item)
        self.window.add(user, item, ts)
        self.events += 1
        self._since += count
        return adm

    def request(self, reason: str = "drift") -> None:
        """Ask for a fine-tune (a drift signal, an operator); it starts once :meth:`due` allows.
        Drift requests are ignored when ``on_drift`` is off."""
        if reason == "drift" and not self.config.on_drift:
            return
        if self._requested is None:
            self._requested = (reason, time.time(), self.events)

    @property
    def pending_request(self) -> str | None:
        return self._requested[0] if self._requested else None

    def due(self, now: float | None = None) -> str | None:
        """The reason a fine-tune should start now (``drift``/``manual``, ``events``,
        ``schedule``), or None."""
        cfg = self.config
        if self._since < max(cfg.min_new_events, 1) or len(self.window) < cfg.holdout + 2:
            return None
        if self._requested is not None:
            reason, _, at = self._requested
            if reason == "drift" and self.events - at < cfg.drift_events:
                return None  # collect the new regime first; scheduled triggers wait too
            return reason
        if cfg.every_events is not None and self._since >= cfg.every_events:
            return "events"
        t = self._now() if now is None else now
        if cfg.every_seconds is not None and t - self._last_at >= cfg.every_seconds:
            return "schedule"
        return None

    # -- one fine-tune ----------------------------------------------------------------------
    def prepare(self, reason: str) -> Job:
        """Snapshot what a fine-tune needs and reset the triggers."""
        cfg = self.config
        requested_at = self._requested[1] if self._requested else time.time()
        self._requested = None
        self._since = 0
        self._last_at = self._now()
        self._seq += 1
        vocab = self.capacity.vocab.copy()
        max_len = self.live.model.config.max_len
        seqs = [s for s in (self._indices(vocab, q) for q in self.window.sequences(cfg.holdout)) if s.size > 1]
        parts = [make_windows(seqs, max_len)] if seqs else []
        rows = [r for r in (self._indices(vocab, q) for q in self.window.reservoir_rows()) if r.size > 1]
        if rows:
            parts.append(left_pad(rows, max_len + 1))
        windows = torch.cat(parts) if parts else torch.zeros((0, max_len + 1), dtype=torch.long)
        base = self.live
        new_rows = max(0, vocab.rows - base.vocab.rows)
        recycled = int(changed_rows(base.vocab, vocab).size)
        return Job(reason, base, vocab, windows, self.window.holdout(cfg.holdout), self._seq, requested_at,
                   new_rows, recycled)

    @staticmethod
    def _indices(vocab: ItemVocab, ids: Sequence[str]) -> np.ndarray:
        idx = vocab.lookup(ids)
        return idx[idx > 0]

    def run(self, job: Job) -> Outcome:
        """Fine-tune a candidate and gate it (no side effect on the learner: may run in another
        thread while :meth:`learn_one` goes on). Failures come back as ``outcome="failed"``."""
        cfg = self.config
        out = Outcome(job.reason, "failed", job.base.version, train_rows=len(job.windows), holdout=len(job.holdout),
                      new_rows=job.new_rows, recycled_rows=job.recycled_rows, requested_at=job.requested_at)
        started = time.perf_counter()
        try:
            if len(job.windows) == 0:
                raise StreamError("no training data in the window (every sequence has < 2 known items)")
            cand = candidate_from(job.base.model, job.base.vocab, job.vocab, seed=cfg.seed + job.seq)
            job.progress.phase, job.progress.steps, job.progress.started = "training", cfg.steps, time.time()

            def at(step: int) -> None:
                job.progress.step = step

            stats = fine_tune(cand, job.windows, cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                              seed=cfg.seed + job.seq, weight_decay=cfg.weight_decay, on_step=at)
            job.progress.phase = "gating"
            cand.eval()
            out.loss, out.first_loss, out.last_loss = stats["loss"], stats["first_loss"], stats["last_loss"]
            out.train_seconds = stats["seconds"]
            if not np.isfinite(out.last_loss):
                raise StreamError(f"fine-tune diverged (loss {out.last_loss}); lower the learning rate")
            out.model, out.vocab = cand, job.vocab
            if job.holdout:
                cand_rows = score_pairs(cand, job.vocab, job.holdout, cfg.k)
                live_rows = score_pairs(job.base.model, job.base.vocab, job.holdout, cfg.k)
                out.candidate, out.live = summarise(cand_rows, cfg.k), summarise(live_rows, cfg.k)
                col = TOPK_METRICS.index(cfg.gate_metric.split("@")[0])
                verdict = compare(cand_rows[:, col], live_rows[:, col], min_events=cfg.gate_min_events,
                                  tolerance=cfg.tolerance, confidence=cfg.gate_confidence)
                out.gate = verdict.to_dict()
                ok = verdict.ok
            else:
                ok = True  # no held-out slice configured: trust the fine-tune
            out.outcome = "promoted" if ok else "rejected"
        except Exception as e:
            log.exception("fine-tune %d (%s) failed", job.seq, job.reason)
            out.outcome, out.error = "failed", f"{type(e).__name__}: {e}"
        out.seconds = time.perf_counter() - started
        return out

    def finish(self, out: Outcome) -> Outcome:
        """Apply a fine-tune's outcome: promote (store + live) or record the rejection."""
        cfg = self.config
        if out.parent != self.live.version:  # the live version changed meanwhile (not by us)
            out.outcome, out.error = "failed", f"live version moved from {out.parent} to {self.live.version}"
        out.parent_number = self.live.number
        metrics = {"candidate": out.candidate, "live": out.live, "gate": out.gate, "loss": out.last_loss, "train_rows": out.train_rows,
                   "holdout": out.holdout, "seconds": out.seconds, "requested_at": out.requested_at}
        if out.outcome == "promoted" and out.model is not None and out.vocab is not None:
            if self.store is not None:
                info = self.store.add(out.model, out.vocab, status="promoted", parent=self.live.number,
                                      metrics=metrics, trigger=out.reason)
                out.version, out.number, out.sha256 = info.label, info.version, info.sha256
                out.checkpoint = str(self.store.checkpoint_path(info.version))
                self.store.prune(cfg.keep_versions)
            else:
                out.number = self.live.number + 1
                out.version = version_label(out.number)
            self.live = LiveState(out.model, out.vocab, out.version, out.number)
        elif out.outcome == "rejected" and self.store is not None:
            keep = cfg.keep_rejected and out.model is not None
            info = self.store.add(out.model if keep else None, out.vocab if keep else None, status="rejected",
                                  parent=self.live.number, metrics=metrics, trigger=out.reason)
            out.version, out.number = info.label, info.version
        self.outcomes[out.outcome] = self.outcomes.get(out.outcome, 0) + 1
        self.history.append(out.summary())
        log.info("fine-tune (%s): %s %s; gate %s %.4f vs live %.4f (%s); %.1f s", out.reason, out.outcome,
                 out.version or "", cfg.gate_metric, out.candidate.get(cfg.gate_metric, float("nan")),
                 out.live.get(cfg.gate_metric, float("nan")), out.gate.get("reason", "no held-out slice"),
                 out.seconds)
        return out

    def step(self, now: float | None = None) -> Outcome | None:
        """Synchronously fine-tune if :meth:`due`; returns the outcome or None."""
        reason = self.due(now)
        if reason is None:
            return None
        return self.finish(self.run(self.prepare(reason)))

    @property
    def fine_tunes(self) -> int:
        return sum(self.outcomes.values())

    def __repr__(self) -> str:
        return (f"Learner(live={self.live.version}, events={self.events}, {self.capacity!r}, "
                f"outcomes={self.outcomes})")
