"""``hailstream trainer``: the incremental trainer, its own process (the worker's event loop never
waits for training).

- Consumes the interactions topic with its own consumer group (``<app_id>-trainer``; kafka-python,
  the fast session settings of BROKER.md) and feeds every valid event to a
  :class:`stream.trainer.learner.Learner` (window, reservoir, bounded vocabulary).
- Reads the model-updates topic (:class:`stream.kafka.model_updates.ModelUpdatesReader`): ``drift`` messages from
  the workers and ``trigger`` messages request a fine-tune; a ``rollback`` from a worker's
  post-swap guard marks that version ``rejected`` in the store and, when it was the live one,
  makes the store's live version (its predecessor) the one to fine-tune from, re-announced on the
  topic (reason ``rollback``) so that every worker serves it.
- Fine-tunes in a background thread, so consumption goes on meanwhile (torch gets ``threads``
  intra-op threads, 1 by default, and the thread runs at a lower CPU priority, ``nice`` 10 by
  default, so that a worker sharing the machine keeps its throughput); the outcome is applied in the
  main loop: a promoted candidate becomes a new version in the model store
  (``settings.model_dir``) and is then announced on the model-updates topic (version, checkpoint
  path, validation metrics); a rejected one is recorded and counted.
- Restart: resumes from the store's live version (the ``--checkpoint`` is only imported as ``v1``
  into an empty store), and re-reads up to ``window`` events before its committed offsets to
  refill the window (those events do not count towards the ``every_events`` trigger).
- Serves ``/metrics`` on ``settings.metrics_bind:settings.trainer.metrics_port`` and, optionally,
  writes a JSON stats file every second.

:mod:`stream.trainer.runtime` is the loop; this module opens the learner and runs the process.
Run from a shell: ``hailstream trainer --checkpoint model.safetensors``.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from stream.errors import StreamError
from stream.lifeline import arm_exit_deadline, stop_self, watch_parent
from stream.observe.metrics import Metrics, MetricsServer, serve_metrics
from stream.settings import Settings, TrainerSettings
from stream.trainer.learner import Learner
from stream.trainer.model_store import ModelStore
from stream.trainer.runtime import TrainerRuntime

log = logging.getLogger(__name__)


def open_learner(
    settings: Settings, config: TrainerSettings | None = None, checkpoint: Path | str | None = None
) -> Learner:
    """A :class:`Learner` on the store's live version; an empty store first imports
    ``checkpoint`` as its first promoted version (defaults: ``settings.trainer`` and its checkpoint)."""
    config = settings.trainer if config is None else config
    checkpoint = config.checkpoint if checkpoint is None else checkpoint
    store = ModelStore(settings.model_dir)
    latest = store.load_latest()
    if latest is None:
        if checkpoint is None:
            raise StreamError(
                f"no promoted model in {store.directory} and no --checkpoint given: pass the initial model "
                "(hailstream train ... --out DIR; then --checkpoint DIR/model.safetensors) or set HAILSTREAM_MODEL_DIR"
            )
        info = store.import_checkpoint(checkpoint)
        log.info("model store %s was empty: imported %s as %s", store.directory, checkpoint, info.label)
        latest = store.load_latest()
        if latest is None:
            raise StreamError(f"the checkpoint imported into {store.directory} does not load back; check the disk")
    info, ckpt = latest
    log.info("trainer resumes from %s (%d items)", info.label, len(ckpt.vocab))
    return Learner(ckpt.model, ckpt.vocab, info.label, info.version, config, store)


def run_trainer(settings: Settings, *, serve: bool = True) -> TrainerRuntime:
    """Run the trainer in this process until SIGTERM/SIGINT; returns the runtime (final counters).
    Everything comes from ``settings.trainer`` (:class:`~stream.settings.TrainerSettings`):
    ``threads`` bounds torch's intra-op threads and ``nice`` lowers the fine-tune thread's CPU
    priority (fine-tuning shares the machine with workers; 0 = as the rest)."""
    from stream.kafka.topics import ensure_topics

    settings.configure_logging()
    ts = settings.trainer
    torch.set_num_threads(max(1, ts.threads))
    ensure_topics(settings)
    learner = open_learner(settings)
    metrics = Metrics(process="trainer", app_id=settings.app_id)
    runtime = TrainerRuntime(settings, learner, metrics=metrics, stats_path=ts.stats_file, nice=ts.nice)
    server: MetricsServer | None = None
    if serve:
        server = serve_metrics(metrics, ts.metrics_port, settings.metrics_bind)
        runtime.metrics_url = server.url
        log.info("trainer metrics on %s", server.url)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        def stop(*_: Any) -> None:
            arm_exit_deadline(before_exit=runtime.write_stats)  # bounded, even with the broker gone
            runtime.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    watch_parent(lambda: stop_self(before_exit=runtime.write_stats))
    try:
        runtime.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.close()
    return runtime
