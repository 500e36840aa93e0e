"""The per-batch logic of the stream worker, as plain functions (no event loop, no broker).

Per event (DESIGN §1): 1 validate (bad -> dead letter with a reason) 2 score the prediction
published after the same user's previous event (prequential) 3 append the item to the user's
sequence 4 predict the top-k with the live model 5 publish the prediction. :func:`process_batch`
does all of it for a micro-batch, with ONE forward pass of the model, and returns what the agent
must send and store; :mod:`stream.worker.app` only moves bytes.

The user state (one table value per user, JSON) is ``{"items": [last max_seq_len item ids],
"pred": [top-k published after the last event] or None, "last": {"event_id", "scores",
"model_version", "produced_at"} of that prediction, "off": [partition, offset, epoch],
"eids": [the user's last event ids], "w": where the model's window starts in ``items``, with
``HAILSTREAM_WINDOW_STRIDE`` (:mod:`stream.worker.window`)}`` (``last`` is what ``GET /users/<id>/recommendations``
serves, :mod:`stream.worker.web`; states written before it existed lack it): ``off`` is the source position of the last applied event,
and events at or before it are skipped, which keeps the sequence exact when a crash makes the
broker redeliver events already applied (BROKER.md). ``epoch`` identifies the input topic (the
broker's cluster id and the topic's id, :func:`stream.kafka.topics.topic_epoch`): a position
stored under another epoch belongs to a topic that no longer exists (a new broker, a recreated
topic), so the event is processed, not skipped (``stats.resets``). Every skipped event is counted
(``stats.duplicates``, the ``hailstream_duplicates_skipped_total`` metric, ``duplicates_skipped``
in the stats file) and so is every reset (``hailstream_position_resets_total``, ``position_resets``).

Edge checks beyond :func:`stream.records.parse_interaction`: the message key must be the user id
(``key_mismatch``; a null key too). The record is NOT re-keyed: its state would live on another
partition than the user's other events, split between two owners after a rebalance. An event
whose ``event_id`` is among the user's last :data:`RECENT_EVENT_IDS` is ``duplicate_event``. Both
are dead letters, like every rejection.

>>> from models.hail import HAIL, HailConfig
>>> from models.vocab import ItemVocab
>>> from stream.settings import Settings
>>> vocab = ItemVocab(["a", "b", "c"])
>>> rec = OnlineRecommender(HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows), vocab, "v1")
>>> batch = [Source(b'{"user_id": "u", "item_id": "a", "ts": 1}', "in", 0, 0),
...          Source(b'{"user_id": "u", "item_id": "b", "ts": 2}', "in", 0, 1),
...          Source(b'not json', "in", 0, 2)]
>>> out = process_batch(batch, lambda user: None, rec, None, new_prequential(3), Settings(top_k=3))
>>> len(out.predictions), len(out.dead_letters), out.updates["u"].value["items"], out.stats.cold
(2, 1, ['a', 'b'], 1)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stream.errors import StreamError
from stream.records import INTERNAL_ERROR, InvalidEvent, Prediction, dead_letter, parse_interaction
from stream.settings import Settings
from stream.snapshots import MODEL_SCORER, SAMPLE_SUFFIX
from stream.worker.edge import RateLimitedLog, Source, applied_check
from stream.worker.guard import SwapGuard, Verdict
from stream.worker.prequential import Prequential
from stream.worker.recommender import OnlineBaselines, OnlineRecommender, Ranked
from stream.worker.window import extend, model_len

log = logging.getLogger(__name__)

SCORE_DECIMALS = 6
#: Event ids remembered per user to predict a re-sent event once.
RECENT_EVENT_IDS = 16

UserState = dict[str, Any]
StateGetter = Callable[[str], "UserState | None"]


class Update(NamedTuple):
    """A new table value for one user, with the source partition its changelog record belongs to."""

    partition: int
    value: UserState


@dataclass
class BatchStats:
    """What one batch did (added to :class:`stream.worker.stats.WorkerStats` by the caller)."""

    events: int = 0
    valid: int = 0
    predictions: int = 0
    duplicates: int = 0
    #: events whose stored position belonged to another epoch of the topic (processed, not skipped)
    resets: int = 0
    cold: int = 0
    #: backfill events: applied to the history and the baselines, not scored, no prediction
    backfilled: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: wall seconds per phase: "prepare" (validate, sequences), "inference" (the forward pass),
    #: "baselines" (scoring, learning and predicting the baselines), "finish" (the model's
    #: prequential score, building the predictions); the phases add up to the batch
    seconds: dict[str, float] = field(default_factory=dict)
    #: the same phases in CPU seconds of the thread that ran the batch (``time.thread_time``):
    #: what the batch cost, whatever else the machine was doing
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: one entry per valid event, in input order: (prequential hit@k of the prediction published
    #: before it, or None when cold; its item id; whether the live model's vocabulary knows the
    #: item), what the drift detectors (:class:`stream.observe.drift.DriftMonitor`) are fed with
    per_event: list[tuple[float | None, str, bool]] = field(default_factory=list)


@dataclass
class BatchResult:
    """What the agent sends and stores for one batch.

    ``predictions`` and ``dead_letters`` are (key, value) byte pairs for the predictions and
    dead-letter topics, in input order; ``updates`` holds the last new state per user.
    """

    predictions: list[tuple[bytes, bytes]]
    dead_letters: list[tuple[bytes | None, bytes]]
    updates: dict[str, Update]
    model_version: str
    stats: BatchStats
    #: the post-swap guard's verdict when this batch ended a guard window (see stream.worker.guard)
    verdict: Verdict | None = None


def new_prequential(k: int, baselines: OnlineBaselines | None = None, window: int = 1000) -> dict[str, Prequential]:
    """One :class:`Prequential` per scorer: the model (``"hail"``), each baseline, and when the
    baselines predict for a user sample only, the model on that same sample (``"hail@sample"``),
    so that the comparison is made on the same events."""
    out = {MODEL_SCORER: Prequential(k, window)}
    if baselines is not None:
        for name in baselines.names:
            out[name] = Prequential(k, window)
        if baselines.sample_every > 1:
            out[MODEL_SCORER + SAMPLE_SUFFIX] = Prequential(k, window)
    return out


@dataclass
class _Pending:
    src: Source
    user: str
    item: str
    event_id: str
    ts: float
    lat: float | None
    lon: float | None
    items: list[str]
    window: list[str]  # what the model reads: ``items``, or its strided window (``w``)
    prev: list[str] | None  # prediction from the table (an earlier batch) ...
    prev_index: int | None  # ... or from an earlier event of this batch (its index in `pending`)
    state: UserState


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


_tracebacks = RateLimitedLog(log)


def _internal_error(src: Source, exc: BaseException) -> tuple[bytes | None, bytes]:
    _tracebacks.exception(f"{INTERNAL_ERROR}:{type(exc).__name__}", "internal error on %s:%s:%s",
                          src.topic, src.partition, src.offset)
    detail = f"{type(exc).__name__}: {exc}"
    return None, dead_letter(src.raw, INTERNAL_ERROR, detail, src.topic, src.partition, src.offset)


def _reject(stats: BatchStats, dead: list[tuple[bytes | None, bytes]], src: Source, reason: str, detail: str) -> None:
    stats.dead_letters[reason] += 1
    dead.append((None, dead_letter(src.raw, reason, detail, src.topic, src.partition, src.offset)))


def process_batch(
    batch: Sequence[Source | tuple[bytes | None, str, int, int]],
    get_state: StateGetter,
    recommender: OnlineRecommender,
    baselines: OnlineBaselines | None,
    prequential: Mapping[str, Prequential],
    settings: Settings,
    now: Callable[[], float] = time.time,
    guard: SwapGuard | None = None,
    epoch: str | None = None,
) -> BatchResult:
    """Validate, score, update and predict a micro-batch; see the module docstring.

    ``batch`` holds :class:`Source` messages or plain ``(raw, topic, partition, offset)`` tuples.
    ``get_state(user_id)`` reads the table (None for a new user); the returned ``updates`` must be
    written back by the caller. Within the batch the events of one user are applied in order, and
    each prediction sees exactly the user's sequence up to its own event. Never raises for a bad
    or failing event: it becomes a dead letter (``internal_error`` for our own failures).

    With a ``guard`` guarding a swap, the previous version's top-k is computed for every event
    the new version serves (one more forward pass, never published) and both are scored on the
    user's next event; :attr:`BatchResult.verdict` carries the guard's verdict when one is due.
    ``epoch`` is the input topic's current epoch (see the module docstring), stored with each
    applied position.
    """
    stats = BatchStats(events=len(batch))
    t0, c0 = time.perf_counter(), time.thread_time()
    dead: list[tuple[bytes | None, bytes]] = []
    local: dict[str, UserState] = {}
    last_index: dict[str, int] = {}
    updates: dict[str, Update] = {}
    pending: list[_Pending] = []
    # the state after each user's last event of the batch (backfill or not), and the backfill
    # states that carry a prediction this batch has yet to make (see _carry)
    final: dict[str, Update] = {}
    carry: list[tuple[UserState, UserState]] = []
    max_len = settings.max_seq_len
    k = settings.top_k
    stride = settings.worker.window_stride
    window = model_len(recommender, max_len) if stride else max_len

    # 1 + 3: validate and extend each user's sequence, in input order.
    ts_window = (settings.min_event_ts, now() + settings.max_event_ts_ahead)
    for item in batch:
        src = item if isinstance(item, Source) else Source(*item)
        try:
            ev = parse_interaction(src.raw, settings.max_message_bytes, settings.max_id_chars, ts_window)
        except InvalidEvent as err:
            _reject(stats, dead, src, err.reason, err.detail)
            continue
        try:
            user = ev.user_id
            if src.key is not None and src.key != user.encode():
                _reject(stats, dead, src, "key_mismatch", "the message key is null" if not src.key else
                        "the message key is not the user_id (produce with key = user_id)")
                continue
            state = local.get(user)
            if state is None:
                state = get_state(user)
            check = applied_check(state, src, epoch)
            if check == "applied":
                stats.duplicates += 1
                continue
            # Event ids are unique within one epoch of the topic: a new topic is a new stream.
            eids = list(state.get("eids") or ()) if state and check != "reset" else []
            if check == "reset":
                stats.resets += 1
            if ev.event_id is not None:
                if ev.event_id in eids:
                    _reject(stats, dead, src, "duplicate_event",
                            "this user's event_id was already predicted (a re-sent event)")
                    continue
                eids.append(ev.event_id)
                del eids[:-RECENT_EVENT_IDS]
            items, start = extend(state, ev.item_id, max_len, window, stride)
            prev_index = last_index.get(user)
            prev = None if prev_index is not None or not state else state.get("pred")
            new_state: UserState = {"items": items, "pred": None, "off": [src.partition, src.offset]}
            if stride:
                new_state["w"] = start
            if epoch is not None:
                new_state["off"].append(epoch)
            if eids:
                new_state["eids"] = eids
            if ev.backfill:
                # DESIGN §4: a past event seeds the history and the baselines; nothing is scored or
                # predicted, and the user's next event is scored against the prediction made before it.
                pending_state = pending[prev_index].state if prev_index is not None else None
                _carry(state, new_state, pending_state, carry)
                if baselines is not None:
                    baselines.learn_one(user, ev.item_id, ev.lat, ev.lon)
                local[user] = new_state
                final[user] = Update(src.partition, new_state)
                stats.backfilled += 1
                stats.valid += 1
                continue
            event_id = ev.event_id if ev.event_id is not None else f"{src.topic}:{src.partition}:{src.offset}"
            pending.append(
                _Pending(src, user, ev.item_id, event_id, ev.ts, ev.lat, ev.lon, items, items[start:] if start else items,
                         prev, prev_index, new_state)
            )
            local[user] = new_state
            last_index[user] = len(pending) - 1
            final[user] = Update(src.partition, new_state)
        except Exception as exc:  # our bug or a corrupt table value: never kill the agent
            stats.dead_letters[INTERNAL_ERROR] += 1
            dead.append(_internal_error(src, exc))

    # 4: one forward pass for the whole batch (per-event retry only if the batch fails).
    t1, c1 = time.perf_counter(), time.thread_time()
    # For the drift detectors' unseen-item share (a duck-typed recommender may have no vocabulary).
    live = getattr(recommender, "live", None)
    known: Container[str] = live.vocab if live is not None else _Everything()
    version, answers = _recommend(recommender, [p.window for p in pending], k)
    run = guard.current if guard is not None else None
    shadow: list[list[str]] | None = None
    if run is not None and pending:
        if version == run.new.version:
            try:
                shadow = run.shadow_topk([p.window for p in pending], k)
            except Exception:
                _tracebacks.exception("shadow", "shadow scoring with %s failed for a batch", run.previous.version)
        if shadow is None:  # these users' next events cannot be paired
            for p in pending:
                run.shadow.pop(p.user, None)
    t2, c2 = time.perf_counter(), time.thread_time()
    base_wall = base_cpu = 0.0

    # 2 + 5: score against the previous prediction, learn the baselines, publish.
    predictions: list[tuple[bytes, bytes]] = []
    results: list[list[str] | None] = []
    model_preq = prequential.get(MODEL_SCORER)
    sample_preq = prequential.get(MODEL_SCORER + SAMPLE_SUFFIX)
    for i, (p, answer) in enumerate(zip(pending, answers, strict=True)):
        try:
            prev = results[p.prev_index] if p.prev_index is not None else p.prev
            if prev is None:
                stats.cold += 1
            if run is not None:
                if p.prev_index is None:
                    run.score(run.shadow.pop(p.user, None), prev, p.item, k)
                elif shadow is not None:
                    run.score(shadow[p.prev_index], prev, p.item, k)
            if model_preq is not None:
                score = model_preq.update(prev, p.item)
                hit = None if score is None else score[0]
            else:
                hit = None if prev is None else float(p.item in prev[:k])
            stats.per_event.append((hit, p.item, p.item in known))
            if baselines is not None:
                b0, bc0 = time.perf_counter(), time.thread_time()
                sampled = baselines.sampled(p.user)
                if sampled:
                    prev_b = baselines.previous(p.user)
                    for name in baselines.names:
                        scorer = prequential.get(name)
                        if scorer is not None:
                            scorer.update(prev_b.get(name) if prev_b else None, p.item)
                    if sample_preq is not None:
                        sample_preq.update(prev, p.item)
                baselines.learn_one(p.user, p.item, p.lat, p.lon)
                if sampled:
                    baselines.predict_one(p.user, p.items, k)
                base_wall += time.perf_counter() - b0
                base_cpu += time.thread_time() - bc0
            if answer is None:
                raise StreamError("the model failed on this event's sequence (see the worker log)")
            items, scores = answer
            produced_at = now()
            rounded = [round(float(s), SCORE_DECIMALS) for s in scores]  # builtin floats: see test_state_types
            value = Prediction(p.user, p.event_id, items, rounded, k, version, p.ts, produced_at).to_json()
            predictions.append((p.user.encode(), value))
            stats.predictions += 1
            if p.src.timestamp is not None:
                stats.latencies.append(produced_at - p.src.timestamp)
            p.state["pred"] = items
            p.state["last"] = {"event_id": p.event_id, "scores": rounded, "model_version": version, "produced_at": produced_at}
            results.append(items)
            if run is not None and shadow is not None:
                run.shadow[p.user] = shadow[i]
                run.served += 1
        except Exception as exc:
            stats.dead_letters[INTERNAL_ERROR] += 1
            dead.append(_internal_error(p.src, exc))
            # The interaction still happened: its item stays in the sequence, with no prediction.
            results.append(None)
        stats.valid += 1
    for dst, src_state in carry:
        _carry(src_state, dst, None, [])
    updates.update(final)
    t3, c3 = time.perf_counter(), time.thread_time()
    stats.seconds = {"prepare": t1 - t0, "inference": t2 - t1, "baselines": base_wall, "finish": t3 - t2 - base_wall}
    stats.cpu_seconds = {"prepare": c1 - c0, "inference": c2 - c1, "baselines": base_cpu,
                         "finish": max(0.0, c3 - c2 - base_cpu)}
    return BatchResult(predictions, dead, updates, version, stats, run.verdict() if run is not None else None)


def _carry(state: UserState | None, new_state: UserState, pending: UserState | None,
           later: list[tuple[UserState, UserState]]) -> None:
    """Keep the prediction of ``state`` (``pred`` and ``last``) in ``new_state``, a backfill
    event's; when it is ``pending`` (an earlier event of this batch, predicted later), note it in
    ``later`` to copy once predicted."""
    if pending is not None:
        later.append((new_state, pending))
        return
    new_state["pred"] = state.get("pred") if state else None
    if state and "last" in state:
        new_state["last"] = state["last"]


def _recommend(
    recommender: OnlineRecommender, histories: list[list[str]], k: int
) -> tuple[str, list[Ranked | None]]:
    if not histories:
        return recommender.version, []
    try:
        version, answers = recommender.recommend_batch_versioned(histories, k)
        return version, list(answers)
    except Exception:
        _tracebacks.exception("batch_inference", "batched inference failed for %d events; retrying them one by one",
                              len(histories))
    version = recommender.version
    out: list[Ranked | None] = []
    for h in histories:
        try:
            out.append(recommender.recommend_batch([h], k)[0])
        except Exception:
            out.append(None)
    return version, out


def replay_states(events: Iterable[tuple[str, str]], max_len: int) -> dict[str, list[str]]:
    """The per-user sequences a worker's table must hold after ``events`` (user, item) in order:
    the reference for reconciliation tests and tools.

    >>> replay_states([("u", "a"), ("v", "x"), ("u", "b"), ("u", "c")], max_len=2)
    {'u': ['b', 'c'], 'v': ['x']}
    """
    out: dict[str, list[str]] = {}
    for user, item in events:
        seq = out.setdefault(user, [])
        seq.append(item)
        if len(seq) > max_len:
            del seq[0]
    return out
