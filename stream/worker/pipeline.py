"""What the agent does with one micro-batch, as one plain function (:func:`handle_batch`), run off
the event loop and unit-tested without one.

In order, each step once: note the batch's input positions (for the consumer lag), run
:func:`stream.worker.batch.process_batch` (validate, score, predict; with the post-swap guard's
shadow scoring), apply the guard's verdict (a rollback, :mod:`stream.worker.guard`), observe the result
(:class:`stream.worker.monitor.WorkerMonitor`: metrics and drift), feed the run's timeline, and
turn the drift detections into :class:`stream.messages.DriftSignal` messages for the trainer. The
:class:`BatchOutcome` it returns is everything the agent writes, through a
:class:`stream.worker.sink.Sink`; nothing here sends or stores anything itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from stream.errors import StreamError
from stream.messages import drift_message
from stream.observe.detection import Detection
from stream.records import INTERNAL_ERROR, dead_letter
from stream.settings import Settings
from stream.worker.batch import BatchResult, Source, StateGetter, Update, process_batch
from stream.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    """What the agent writes for one batch: table ``updates``, ``predictions``, ``dead_letters``
    and drift ``signals`` (values for the model-updates topic). ``result`` is None when the whole
    batch failed (then every message is a dead letter)."""

    updates: dict[str, Update] = field(default_factory=dict)
    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    signals: list[bytes] = field(default_factory=list)
    #: rollback notices of the post-swap guard (values for the model-updates topic)
    rollbacks: list[bytes] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    result: BatchResult | None = None
    failed: int = 0


def handle_batch(
    runtime: WorkerRuntime, settings: Settings, batch: Sequence[Source], get_state: StateGetter
) -> BatchOutcome:
    """One batch, start to end (see the module docstring). Never raises: a batch that fails
    outside :func:`process_batch`'s own per-event isolation becomes ``internal_error`` dead letters."""
    for s in batch:
        if s.offset >= runtime.positions.get(s.partition, -1):
            runtime.positions[s.partition] = s.offset + 1
    started = time.perf_counter()
    swapper = runtime.swapper
    try:
        result = process_batch(batch, get_state, runtime.recommender, runtime.baselines, runtime.prequential, settings,
                               guard=swapper.guard if swapper is not None else None, epoch=runtime.epoch)
    except Exception as exc:  # process_batch isolates events; this is a last line of defence
        log.exception("a batch of %d events failed; dead-lettering it", len(batch))
        detail = f"{type(exc).__name__}: {exc}"
        return BatchOutcome(
            dead_letters=[(None, dead_letter(s.raw, INTERNAL_ERROR, detail, s.topic, s.partition, s.offset))
                          for s in batch],
            failed=len(batch),
        )
    source = f"{settings.app_id}:{os.getpid()}"
    rollbacks: list[bytes] = []
    if result.verdict is not None and swapper is not None:
        notice = swapper.roll_back(result.verdict, source=source)
        if notice is not None:
            rollbacks.append(notice)
    if result.stats.duplicates or result.stats.resets:
        _explain_skips(result.stats.duplicates, result.stats.resets, runtime.epoch)
    found: list[Detection] = []
    if runtime.monitor is not None:
        try:
            found = runtime.monitor.after_batch(result.stats, time.perf_counter() - started)
        except Exception:  # observability must never stop predictions
            log.exception("observing a batch failed")
    if runtime.timeline is not None:
        record_timeline(runtime, result, found)
    signals = [drift_message(d.detector, d.at_event, d.value, d.baseline, source=source) for d in found]
    return BatchOutcome(result.updates, result.predictions, result.dead_letters, signals, rollbacks, found, result)


_last_explained = [0.0]


def _explain_skips(skipped: int, resets: int, epoch: str | None) -> None:
    """One log line a minute at most: why events were skipped or re-processed."""
    now = time.monotonic()
    if now - _last_explained[0] < 60.0:
        return
    _last_explained[0] = now
    if skipped:
        log.info("skipped %d redelivered events already applied to their users' state (topic epoch %s); "
                 "counted in hailstream_duplicates_skipped_total", skipped, epoch or "unknown: offsets only")
    if resets:
        log.warning("%d events sat at or before positions stored under another epoch of the input topic "
                    "(a new broker or a recreated topic; now %s): processed, not skipped", resets, epoch)


def record_timeline(runtime: WorkerRuntime, result: BatchResult, found: Sequence[Detection]) -> None:
    """Feed the runtime's timeline one processed batch (in the batch thread). A failing timeline
    (a full disk) is logged once and closed: the worker keeps serving without it."""
    timeline = runtime.timeline
    if timeline is None:
        return
    swap = runtime.swapper.last_swap if runtime.swapper is not None else None
    reason = swap.get("reason") if swap and swap.get("version") == result.model_version else None
    try:
        timeline.after_batch(result.stats.events, result.model_version, runtime.prequential, found, reason)
    except (OSError, StreamError, ValueError) as e:
        log.error("cannot write the timeline %s (%s); the worker goes on WITHOUT it", timeline.path, e)
        runtime.timeline = None
        with contextlib.suppress(OSError):
            timeline.close()
