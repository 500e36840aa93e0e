"""Hot-swapping the worker's model: announced versions, and the newest promoted one at start-up.

:class:`HotSwapper` handles the messages of a :class:`stream.kafka.model_updates.ModelUpdatesReader` (in its
thread, so loading a checkpoint never blocks the event loop): a ``model`` announcement is loaded
(checksum verified, and compared with the announced sha256) and installed with
:meth:`stream.worker.recommender.OnlineRecommender.swap`, which is atomic: a batch runs entirely with the
version it started with, the next batch uses the new one, and every prediction carries the
version that made it. A checkpoint that does not load is logged and skipped (the worker keeps
serving what it has). Announcements from before the worker started are not replayed one by one:
only the newest one is applied, and only when it is newer than the served version.

:func:`newer_in_store` gives a (re)starting worker the store's live version when it is newer than
the checkpoint it was started with.

Trust (a writer of the model-updates topic is not trusted by default): with a ``model_dir``
(the worker always passes ``settings.model_dir``) only a checkpoint inside that store is loaded,
and when the store's manifest of that version records a sha256 the file must match it; with a
``key`` (``settings.signing_key()``) an announcement must carry a valid HMAC-SHA256 signature
(:meth:`stream.messages.ModelAnnouncement.verify`). Every refusal is logged, kept in
``refusals`` by reason and counted in ``hailstream_model_refusals_total{reason}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from models.checkpoint import Checkpoint, load_checkpoint
from models.errors import CheckpointError
from stream.messages import (
    ControlMessage,
    ModelAnnouncement,
    RollbackNotice,
    rollback_message,
    version_number,
)
from stream.observe.feed import set_model
from stream.observe.metrics import Metrics
from stream.trainer.model_store import ModelStore, ModelStoreError, VersionInfo
from stream.worker.guard import SwapGuard, Verdict
from stream.worker.recommender import OnlineRecommender

log = logging.getLogger(__name__)


def newer_in_store(model_dir: str | Path, current_version: str) -> tuple[VersionInfo, Checkpoint] | None:
    """The store's live version (loaded, checksum verified) when its number is greater than
    ``current_version``'s (see :func:`stream.observe.metrics.version_number`), else None. A missing or
    empty directory is not an error."""
    store = ModelStore(model_dir)
    live = store.latest_promoted()
    if live is None or live.version <= version_number(current_version):
        return None
    found = store.load_latest()
    if found is None or found[0].version <= version_number(current_version):
        return None
    return found


class HotSwapper:
    """Applies ``model`` messages to ``recommender``; see the module docstring."""

    def __init__(
        self,
        recommender: OnlineRecommender,
        metrics: Metrics | None = None,
        guard: SwapGuard | None = None,
        *,
        model_dir: str | Path | None = None,
        key: bytes | None = None,
    ) -> None:
        self.recommender = recommender
        self.model_dir = Path(model_dir).resolve() if model_dir is not None else None
        self.key = key
        self.refusals: Counter[str] = Counter()
        self.metrics = metrics
        self.guard = guard
        self.swaps = 0
        self.failures = 0
        self.rollbacks = 0
        self.refused: set[str] = set()  # versions rolled back: never served again
        self.verdicts: list[dict[str, Any]] = []
        self.last_swap: dict[str, Any] | None = None
        self._history: ModelAnnouncement | None = None
        self._lock = threading.Lock()

    def on_message(self, msg: ControlMessage, live: bool) -> None:
        """:class:`~stream.kafka.model_updates.ModelUpdatesReader` handler."""
        if isinstance(msg, RollbackNotice):
            self.refused.add(msg.version)  # the trainer re-announces the version to serve
            return
        if not isinstance(msg, ModelAnnouncement):
            return
        if live:
            self.apply(msg)
        else:
            self._history = msg

    def on_caught_up(self) -> None:
        """After the topic's history: serve its newest announcement if it is newer than ours."""
        msg, self._history = self._history, None
        if msg is not None and version_number(msg.number) > version_number(self.recommender.version):
            self.apply(msg)

    def apply(self, msg: ModelAnnouncement) -> bool:
        """Load the announced checkpoint and swap it in; False when skipped or failed."""
        version = msg.version
        with self._lock:
            if version_number(version) == version_number(self.recommender.version):
                return False  # already served ("1", an imported checkpoint, is the store's "v1")
            if version in self.refused:
                log.warning("not serving announced model %s: it was rolled back", version)
                return False
            refusal = self._refusal(msg)
            if refusal is not None:
                reason, why = refusal
                self.refusals[reason] += 1
                if self.metrics is not None:
                    self.metrics.model_refusals.labels(reason=reason).inc()
                log.error("refused announced model %s (%s): %s; still serving %s", version, reason, why,
                          self.recommender.version)
                return False
            started = time.perf_counter()
            try:
                ckpt = load_checkpoint(msg.checkpoint)
                if msg.sha256 and ckpt.sha256 != msg.sha256:
                    raise CheckpointError(
                        f"{msg.checkpoint} is not the announced {version} (sha256 differs): it was replaced"
                    )
                recorded = self._recorded_sha256(msg)
                if recorded and ckpt.sha256 != recorded:
                    raise CheckpointError(f"{msg.checkpoint} is not the store's version {msg.number} (sha256 differs)")
            except (CheckpointError, ModelStoreError, OSError) as e:
                self.failures += 1
                if self.model_dir is not None:
                    self.refusals["bad_checkpoint"] += 1
                    if self.metrics is not None:
                        self.metrics.model_refusals.labels(reason="bad_checkpoint").inc()
                log.error("cannot serve announced model %s: %s; still serving %s", version, e,
                          self.recommender.version)
                return False
            old = self.recommender.swap(ckpt.model, ckpt.vocab, version)
            if self.guard is not None:
                cut = self.guard.current
                if cut is not None:  # a window without a verdict yet: keep its scores for the record
                    self._record(cut.partial("replaced"))
                if msg.reason == "rollback":
                    self.guard.stop()  # going back to a version that served before: nothing to guard
                else:
                    self.guard.start(self.recommender.live, old)
            self.swaps += 1
            self.last_swap = {
                "version": version, "previous": old.version, "at": time.time(),
                "load_seconds": time.perf_counter() - started, "announced_at": msg.announced_at,
                "reason": msg.reason or None,
            }
            if self.metrics is not None:
                set_model(self.metrics, version, len(ckpt.vocab), swapped=True)
            log.info("hot swap: %s -> %s (%s, loaded in %.2f s)", old.version, version, msg.reason or "?",
                     self.last_swap["load_seconds"])
            return True

    def _refusal(self, msg: ModelAnnouncement) -> tuple[str, str] | None:
        """(reason, why) when ``msg`` must not be loaded at all, else None."""
        if self.key is not None:
            if msg.sig is None:
                return "unsigned", "announcements must be signed (HAILSTREAM_MODEL_UPDATES_KEY is set)"
            if not msg.verify(self.key):
                return "bad_signature", "the signature does not match (another key, or the message was altered)"
        if self.model_dir is not None:
            try:
                inside = Path(msg.checkpoint).resolve().is_relative_to(self.model_dir)
            except (OSError, ValueError):
                inside = False
            if not inside:
                return "outside_store", f"the checkpoint is not inside the model store {self.model_dir}"
        return None

    def _recorded_sha256(self, msg: ModelAnnouncement) -> str | None:
        """The sha256 the store's manifest records for the announced version (None: no store, no
        manifest, or none recorded)."""
        if self.model_dir is None:
            return None
        try:
            return ModelStore(self.model_dir).get(int(msg.number)).sha256
        except (ModelStoreError, OSError, ValueError):
            return None

    def roll_back(self, verdict: Verdict, source: str = "") -> bytes | None:
        """Apply a guard verdict: for ``rollback``, serve the previous version again (when the
        guarded one is still served), count it, and return the ``rollback`` message to publish on
        the model-updates topic; None otherwise."""
        self._record(verdict)
        if verdict.action != "rollback":
            log.info("post-swap guard: %s", verdict.reason)
        with self._lock:
            run = self.guard.last if self.guard is not None else None
            if self.guard is None or run is None or run.done is not verdict:
                return None  # another swap came first and started its own window
            self.guard.stop()  # kept or rolled back: the previous version is no longer needed
            if verdict.action != "rollback" or self.recommender.version != verdict.version:
                return None
            previous = run.previous
            self.recommender.swap(previous.model, previous.vocab, previous.version)
            self.refused.add(verdict.version)
            self.rollbacks += 1
            self.last_swap = {"version": previous.version, "previous": verdict.version, "at": time.time(),
                              "load_seconds": 0.0, "announced_at": None, "reason": "rollback"}
            if self.metrics is not None:
                self.metrics.rollbacks.labels(reason="guard").inc()
                set_model(self.metrics, previous.version, len(previous.vocab), swapped=True)
        log.warning("post-swap guard: rolled back %s -> %s: %s", verdict.version, previous.version, verdict.reason)
        return rollback_message(verdict.version, int(version_number(verdict.version)), previous.version,
                                verdict.to_dict(), source=source)

    def _record(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict.to_dict())
        del self.verdicts[:-20]
