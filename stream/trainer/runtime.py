"""The trainer's loop (:class:`TrainerRuntime`): consume the interactions topic into the learner,
follow the model-updates topic (drift signals, triggers, operators' promotions, workers' rollbacks),
run fine-tunes in a background thread, announce promoted versions, export metrics and the stats file."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.errors import StreamError
from stream.kafka.clients import make_consumer, make_producer
from stream.kafka.model_updates import ModelUpdatesReader
from stream.messages import (
    CONTROL_KEY,
    ControlMessage,
    DriftSignal,
    ModelAnnouncement,
    RollbackNotice,
    TriggerRequest,
    model_message,
)
from stream.observe.feed import count_trigger, observe_finetune, observe_lag, set_model
from stream.observe.metrics import TRIGGER_REASONS, Metrics
from stream.records import InvalidEvent, parse_interaction
from stream.settings import Settings
from stream.snapshots import TrainerSnapshot, write_stats
from stream.trainer.learner import Job, Learner, Outcome

log = logging.getLogger(__name__)

HISTORY_IN_STATS = 20


def consumer_group(settings: Settings) -> str:
    """The trainer's consumer group: its own, so it sees every event the workers see.

    >>> consumer_group(Settings(app_id="hs"))
    'hs-trainer'
    """
    return f"{settings.app_id}-trainer"


class TrainerRuntime:
    """The trainer's loop around a :class:`Learner`; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        learner: Learner,
        *,
        metrics: Metrics | None = None,
        stats_path: Path | str | None = None,
        stats_interval: float = 1.0,
        nice: int = 0,
    ) -> None:
        self.settings = settings
        self.nice = nice
        self.learner = learner
        self.metrics = metrics
        self.stats_path = Path(stats_path) if stats_path is not None else None
        self.stats_interval = stats_interval
        self.stop_event = threading.Event()
        self.events = 0
        self.invalid = 0
        self.warm_events = 0
        self.announced: list[dict[str, Any]] = []
        self.metrics_url: str | None = None
        self._job: Job | None = None
        self._result: Outcome | None = None
        self._thread: threading.Thread | None = None
        self._warm_until: dict[Any, int] = {}
        self._to_rewind: set[Any] = set()
        self._follow: ModelAnnouncement | None = None
        self._rollbacks: list[RollbackNotice] = []
        self.rolled_back: list[str] = []
        self._consumer: Any = None
        self._producer: Any = None
        self.started_at = time.time()
        if metrics is not None:
            set_model(metrics, learner.live.version, len(learner.live.vocab))

    # -- control messages (from the listener thread) ----------------------------------------
    def on_control(self, msg: ControlMessage, live: bool) -> None:
        if not live:
            return  # drift signals and triggers from before this process started are stale
        if isinstance(msg, DriftSignal):
            log.info("drift signal from %s: %s", msg.source or "a worker", msg.detector)
            self.learner.request("drift")
        elif isinstance(msg, TriggerRequest):
            reason = msg.reason or "manual"
            self.learner.request(reason if reason in TRIGGER_REASONS else "manual")
        elif isinstance(msg, RollbackNotice):
            self._rollbacks.append(msg)
        elif isinstance(msg, ModelAnnouncement) and msg.version != self.learner.live.version:
            # An operator promoted or rolled back (hailstream models ...): fine-tune from that one.
            self._follow = msg

    def _apply_rollbacks(self) -> None:
        """A worker's guard rolled a version back: reject it in the store; if it was live, go
        back to the store's live version and announce it (reason ``rollback``)."""
        while self._rollbacks:
            msg = self._rollbacks.pop(0)
            version, store = msg.version, self.learner.store
            log.warning("worker %s rolled back %s: %s", msg.source or "?", version, msg.verdict.get("reason", ""))
            if store is None:
                continue
            try:
                number = int(msg.number or version.lstrip("v"))
                if store.get(number).status == "promoted":
                    store.set_status(number, "rejected")
            except (ValueError, StreamError) as e:
                log.error("cannot mark %s rejected in the store: %s", version, e)
                continue
            self.rolled_back.append(version)
            if version != self.learner.live.version:
                continue  # already fine-tuning from another version
            found = store.load_latest()
            if found is None:
                log.error("rolled back %s but the store has no other live version", version)
                continue
            info, ckpt = found
            self.learner.set_live(ckpt.model, ckpt.vocab, info.label, info.version)
            if self.metrics is not None:
                set_model(self.metrics, info.label, len(ckpt.vocab), swapped=True)
            self._publish(model_message(info.label, info.version, store.checkpoint_path(info.version), info.sha256,
                                        info.parent, info.metrics, reason="rollback",
                                        key=self.settings.signing_key()), info.label)

    def _follow_store(self) -> None:
        """Make the store's live version the learner's (after an operator's promote/rollback)."""
        msg, self._follow = self._follow, None
        store = self.learner.store
        if msg is None or store is None:
            return
        found = store.load_latest()
        if found is None or found[0].label == self.learner.live.version:
            return
        info, ckpt = found
        log.info("the live version is now %s (%s): fine-tuning from it", info.label, msg.reason or "?")
        self.learner.set_live(ckpt.model, ckpt.vocab, info.label, info.version)
        if self.metrics is not None:
            set_model(self.metrics, info.label, len(ckpt.vocab), swapped=True)

    # -- Kafka ------------------------------------------------------------------------------
    def _make_consumer(self) -> Any:
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        runtime = self

        class Rewind(ConsumerRebalanceListener):
            # Runs on kafka-python's IO thread, where blocking calls are refused: only note the
            # partitions; the main loop rewinds them (see _rewind).
            def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            def on_partitions_assigned(self, assigned: Any) -> None:
                runtime._to_rewind.update(assigned)

        consumer = make_consumer(self.settings, group_id=consumer_group(self.settings), enable_auto_commit=True,
                                 auto_commit_interval_ms=1000, max_poll_records=2000)
        consumer.subscribe([self.settings.interactions_topic], listener=Rewind())
        return consumer

    def _rewind(self, polled: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """Refill the window after a (re)start: re-read up to ``window`` events (spread over the
        newly assigned partitions) before their committed offsets; those are learned but trigger
        nothing (:attr:`_warm_until`). Records this poll returned for a rewound partition are
        dropped: they come again after the seek."""
        tps, self._to_rewind = set(self._to_rewind), set()
        per = math.ceil(self.learner.config.window / max(1, len(tps)))
        rewound = set()
        for tp in tps:
            committed = self._consumer.committed(tp)
            if committed:
                self._warm_until[tp] = committed
                self._consumer.seek(tp, max(0, committed - per))
                rewound.add(tp)
        return {tp: r for tp, r in polled.items() if tp not in rewound}

    def _consume(self, records: Sequence[Any], tp: Any) -> None:
        warm_until = self._warm_until.get(tp, -1)
        limit = self.settings.max_message_bytes
        for r in records:
            try:
                ev = parse_interaction(r.value, limit)
            except InvalidEvent:
                self.invalid += 1  # the workers dead-letter it; the trainer just skips it
                continue
            # A backfill event (a past the model was trained on) fills the window like the warm-up,
            # without counting towards a fine-tune.
            if r.offset < warm_until or ev.backfill:
                self.learner.learn_one(ev.user_id, ev.item_id, ev.ts, count=False)
                self.warm_events += 1
            else:
                self.learner.learn_one(ev.user_id, ev.item_id, ev.ts)
                self.events += 1

    # -- fine-tunes ---------------------------------------------------------------------------
    def _start_job(self, reason: str) -> None:
        job = self.learner.prepare(reason)
        self._job, self._result = job, None
        if self.metrics is not None:
            count_trigger(self.metrics, reason if reason in TRIGGER_REASONS else "manual")
        log.info("fine-tune %d starts (%s): %d training rows, %d held out, %d new and %d recycled item rows",
                 job.seq, reason, len(job.windows), len(job.holdout), job.new_rows, job.recycled_rows)

        def work() -> None:
            if self.nice:
                # Linux gives each thread its own priority: only the fine-tune yields the CPU, the
                # consumer loop keeps pace with the stream.
                with contextlib.suppress(OSError, AttributeError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            self._result = self.learner.run(job)

        self._thread = threading.Thread(target=work, name=f"fine-tune-{job.seq}", daemon=True)
        self._thread.start()

    def _finish_job(self) -> Outcome | None:
        if self._thread is None or self._thread.is_alive():
            return None
        self._thread.join()
        result, self._thread, self._job = self._result, None, None
        if result is None:  # the thread died outside Learner.run's own error handling
            return None
        out = self.learner.finish(result)
        if self.metrics is not None:
            observe_finetune(self.metrics, out.outcome, out.seconds,
                             None if math.isnan(out.last_loss) else out.last_loss,
                             out.candidate.get("hr@10"), out.live.get("hr@10"))
        if out.outcome == "promoted" and out.checkpoint is not None and out.number is not None:
            self.announce(out)
        return out

    def announce(self, out: Outcome) -> None:
        """Tell the workers: a model message on the model-updates topic (waits for the ack)."""
        assert out.version is not None and out.number is not None and out.checkpoint is not None
        metrics = {"candidate": out.candidate, "live": out.live, "trigger": out.reason,
                   "requested_at": out.requested_at, "seconds": out.seconds}
        value = model_message(out.version, out.number, out.checkpoint, out.sha256, out.parent_number, metrics,
                              key=self.settings.signing_key())
        self._publish(value, out.version)
        if self.metrics is not None:
            set_model(self.metrics, out.version, len(self.learner.live.vocab), swapped=True)

    def _publish(self, value: bytes, version: str) -> None:
        """A model message on the model-updates topic (waits for the ack)."""
        if self._producer is None:
            self._producer = make_producer(self.settings, linger_ms=0)
        try:
            self._producer.send(self.settings.model_updates_topic, key=CONTROL_KEY, value=value).get(timeout=30)
            self.announced.append(json.loads(value))
            log.info("announced %s on %s", version, self.settings.model_updates_topic)
        except Exception as e:  # the version is in the store: a restarting worker still finds it
            log.error("could not announce %s: %s; workers pick it up from the store on restart", version, e)

    @property
    def busy(self) -> bool:
        """Whether a fine-tune is running."""
        return self._thread is not None

    # -- the loop -----------------------------------------------------------------------------
    def snapshot(self) -> TrainerSnapshot:
        lrn = self.learner
        return TrainerSnapshot(
            events=self.events,
            warm_events=self.warm_events,
            invalid=self.invalid,
            live_version=lrn.live.version,
            rolled_back=list(self.rolled_back),
            fine_tunes=lrn.fine_tunes,
            outcomes=dict(lrn.outcomes),
            running=self.busy,
            progress=self._job.progress.to_dict() if self.busy and self._job is not None else None,
            pending_request=lrn.pending_request,
            window=len(lrn.window),
            vocabulary={"items": len(lrn.capacity.vocab), "capacity": lrn.capacity.capacity,
                        "grown": lrn.capacity.grown, "recycled": lrn.capacity.recycled,
                        "refused": lrn.capacity.refused},
            history=lrn.history[-HISTORY_IN_STATS:],
            announced=self.announced[-HISTORY_IN_STATS:],
            metrics_url=self.metrics_url,
            uptime_s=time.time() - self.started_at,
            written_at=time.time(),
        )

    def _observe_lag(self) -> None:
        if self.metrics is None or self._consumer is None:
            return
        lags = {}
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is not None:
                lags[tp.partition] = hw - self._consumer.position(tp)
        observe_lag(self.metrics, lags)

    def run(self) -> None:
        """Consume, learn, fine-tune and promote until :meth:`stop` (or SIGTERM when started by
        :func:`run_trainer`)."""
        listener = ModelUpdatesReader(self.settings, self.on_control, name="trainer-control").start()
        self._consumer = self._make_consumer()
        next_stats = 0.0
        try:
            while not self.stop_event.is_set():
                polled = self._consumer.poll(timeout_ms=100)
                if self._to_rewind:
                    polled = self._rewind(polled)
                for tp, records in polled.items():
                    self._consume(records, tp)
                    if self.metrics is not None:
                        self.metrics.events_consumed.inc(len(records))
                self._finish_job()
                if self._rollbacks:
                    self._apply_rollbacks()
                if self._follow is not None:
                    self._follow_store()
                if not self.busy:
                    reason = self.learner.due()
                    if reason is not None:
                        self._start_job(reason)
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + self.stats_interval
                    self._observe_lag()
                    self.write_stats()
        finally:
            listener.stop()
            with contextlib.suppress(Exception):
                self._consumer.close()
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    self._producer.close(timeout=5)
            self.write_stats()

    def stop(self) -> None:
        self.stop_event.set()

    def write_stats(self) -> None:
        if self.stats_path is not None:
            try:
                write_stats(self.stats_path, self.snapshot().to_dict())
            except OSError as e:
                log.warning("cannot write trainer stats to %s: %s", self.stats_path, e)
