"""The per-process sections of :class:`stream.settings.Settings`: :class:`WorkerSettings`
(``settings.worker``, variables ``HAILSTREAM_<NAME>``) and :class:`TrainerSettings`
(``settings.trainer``, variables ``HAILSTREAM_TRAINER_<NAME>``). Each field's description is the
help of its flag (``hailstream worker --help``, ``hailstream trainer --help``).

>>> TrainerSettings(every_events=100, on_drift=False).drift_events
2000
>>> TrainerSettings(holdout=20000)
Traceback (most recent call last):
...
stream.errors.SettingsError: HAILSTREAM_TRAINER_HOLDOUT (holdout) must be in 0..window-1 events, not 20000 (window 20000)
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stream.errors import SettingsError

GATE_METRICS = ("hr@10", "ndcg@10", "mrr@10")
#: The prefix of the environment variables of each section ("" = HAILSTREAM_<NAME>).
SECTION_PREFIX = {"worker": "", "trainer": "trainer_"}

_CONFIG = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=False)


class WorkerSettings(BaseModel):
    """Settings of ``hailstream worker`` (the Faust worker process)."""

    model_config = _CONFIG

    checkpoint: Path | None = Field(None, description="model checkpoint (.safetensors) to serve")
    stats_file: Path | None = Field(None, description="JSON file rewritten every second with live counters")
    timeline: Path | None = Field(None, description="append the run's timeline (JSON lines) here, for `hailstream report`")
    timeline_every: int = Field(200, description="events between two accuracy points of the timeline")
    batch_size: int = Field(256, description="micro-batch size: events per forward pass")
    batch_timeout: float = Field(
        0.01, description="longest wait of the consumer's fetch on the broker for new data (10..500 ms); "
        "with --no-batch-greedy also how long a micro-batch waits to fill"
    )
    batch_greedy: bool = Field(
        True, description="a micro-batch closes as soon as no more events are queued (and, while the worker "
        "keeps up, the next one fills while it is handled); off: Faust's take, waiting batch_timeout for each "
        "batch to fill"
    )
    baselines: bool = Field(True, description="score the baselines prequentially beside the model")
    baseline_sample_every: int = Field(1, description="baselines predict for 1 in N users")
    threads: int = Field(1, description="torch intra-op threads")
    length_buckets: int = Field(1, description="forward passes per batch, grouped by history length (1 = one pass)")
    state_cache: int = Field(
        20000, description="incremental inference: cached encoder states (LRU; GRU4Rec peers, or SASRec peers "
        "trained with --positions start; 0 = off)"
    )
    window_stride: int = Field(
        0, description="0: the model reads each user's last max_len items (the window slides every event, so "
        "a cached state is re-encoded once a user has max_len items); N > 0: the window starts at a multiple of "
        "N and moves only when it would exceed max_len (max_len - N + 1 to max_len items), so the state cache "
        "steps it N - 1 events in N (bench/window_stride.py measures the accuracy)"
    )
    state_cache_mb: int = Field(
        512, description="incremental inference: most MB of cached encoder states (a SASRec state grows with "
        "the history: ~2 KB per item for 2 peers of 2 layers at hidden 64)"
    )
    peer: int | None = Field(None, description="serve one peer network instead of the ensemble")
    datadir: Path | None = Field(None, description="Faust data directory (default: a temporary directory)")
    max_users: int = Field(
        200_000, description="per-user states kept in memory; the least recently updated beyond it are dropped "
        "(they start cold again); 0 = unbounded"
    )
    baseline_max_items: int = Field(
        50_000, description="items the baselines keep counts and transitions for; a new item beyond it takes the "
        "least recently seen one's place; 0 = unbounded"
    )
    baseline_max_next: int = Field(
        32, description="successors the Markov baseline keeps per item (the least frequent goes); 0 = unbounded"
    )
    epoch_refresh: float = Field(5.0, description="seconds between two reads of the input topic's epoch (0 = at start only)")
    web: bool = Field(False, description="serve GET /users/<id>/recommendations (Faust's web server on "
                      "web_bind:web_port; any worker answers, asking the owner of the user's partition)")
    web_bind: str = Field("127.0.0.1", description="address the web server listens on")
    web_port: int = Field(6066, description="web server port (each worker on one host needs its own)")
    web_host: str | None = Field(None, description="host name the other workers reach this one at "
                                 "(default web_bind; set it when web_bind is 0.0.0.0)")
    metrics_port: int = Field(9464, description="/metrics port on metrics_bind (0 = any free port)")
    # the post-swap guard (stream.worker.guard)
    guard_events: int = Field(1000, description="post-swap guard: scored events per window (0 = no guard)")
    guard_min_events: int = Field(200, description="post-swap guard: the fewest scored pairs before a rollback")
    guard_tolerance: float = Field(0.0, description="post-swap guard: how much worse the new version may be")
    guard_confidence: float = Field(0.95, description="post-swap guard: confidence of a rollback, in [0.5, 1)")
    # the drift detectors (stream.observe.drift)
    adwin_delta: float = Field(0.002, description="ADWIN's delta (smaller = fewer, later detections; tune per data set)")
    drift_min_drop: float = Field(0.125, description="smallest accuracy drop reported, relative to the level before")
    drift_min_effect: float = Field(0.05, description="input popularity drift: relative excess over the threshold")
    drift_persistence: int = Field(3, description="input drift: checks in a row over the threshold")

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        for name in ("batch_size", "timeline_every", "baseline_sample_every", "threads", "length_buckets"):
            if int(getattr(self, name)) < 1:
                raise SettingsError(f"HAILSTREAM_{name.upper()} ({name}) must be >= 1, got {getattr(self, name)!r}")
        if self.state_cache < 0:
            raise SettingsError(f"HAILSTREAM_STATE_CACHE (state_cache) must be >= 0 (0 = off), got {self.state_cache!r}")
        if self.window_stride < 0:
            raise SettingsError(f"HAILSTREAM_WINDOW_STRIDE (window_stride) must be >= 0 (0 = off), got {self.window_stride!r}")
        if self.state_cache_mb < 1:
            raise SettingsError(f"HAILSTREAM_STATE_CACHE_MB (state_cache_mb) must be >= 1, got {self.state_cache_mb!r}")
        if not (math.isfinite(self.batch_timeout) and self.batch_timeout >= 0):
            raise SettingsError(
                f"HAILSTREAM_BATCH_TIMEOUT (batch_timeout) must be a finite number of seconds >= 0, got {self.batch_timeout!r}"
            )
        if self.baseline_max_items < 0 or self.baseline_max_next < 0:
            raise SettingsError("HAILSTREAM_BASELINE_MAX_ITEMS and HAILSTREAM_BASELINE_MAX_NEXT must be >= 0 (0 = unbounded)")
        if self.max_users < 0 or not (math.isfinite(self.epoch_refresh) and self.epoch_refresh >= 0):
            raise SettingsError("HAILSTREAM_MAX_USERS must be >= 0 (0 = unbounded) and HAILSTREAM_EPOCH_REFRESH >= 0")
        for name in ("web_port", "metrics_port"):
            if not 0 <= int(getattr(self, name)) <= 65535:
                raise SettingsError(f"HAILSTREAM_{name.upper()} ({name}) must be a TCP port 0..65535, got {getattr(self, name)!r}")
        if self.web and self.web_port == 0:
            raise SettingsError("HAILSTREAM_WEB_PORT (web_port) must be a fixed port with HAILSTREAM_WEB: the other "
                                "workers forward requests to it")
        if self.guard_events < 0 or self.guard_min_events < 1 or self.guard_tolerance < 0:
            raise SettingsError("HAILSTREAM_GUARD_EVENTS must be >= 0 (0 = no post-swap guard), HAILSTREAM_GUARD_MIN_EVENTS "
                                ">= 1 and HAILSTREAM_GUARD_TOLERANCE >= 0")
        if not 0.5 <= self.guard_confidence < 1:
            raise SettingsError(f"HAILSTREAM_GUARD_CONFIDENCE (guard_confidence) must be in [0.5, 1), got {self.guard_confidence!r}")
        if not 0 < self.adwin_delta < 1:
            raise SettingsError(f"HAILSTREAM_ADWIN_DELTA (adwin_delta) must be in (0, 1), got {self.adwin_delta!r}")
        if not 0 <= self.drift_min_drop < 1 or self.drift_min_effect < 0 or self.drift_persistence < 1:
            raise SettingsError("HAILSTREAM_DRIFT_MIN_DROP must be in [0, 1), HAILSTREAM_DRIFT_MIN_EFFECT >= 0 and "
                                "HAILSTREAM_DRIFT_PERSISTENCE >= 1")
        return self


class TrainerSettings(BaseModel):
    """Settings of ``hailstream trainer``: the lifecycle (:mod:`stream.trainer.learner` explains each
    step) and the process. ``min_idle`` (events an item must be unseen before its row may be
    recycled) defaults to ``window``; ``item_capacity=None`` lets the vocabulary grow without
    bound. ``keep_rejected`` keeps rejected candidates' weights in the store; ``keep_versions``
    promoted versions keep their weights (older ones are pruned). A trigger set to ``none`` is off.

    The gate (:func:`stream.trainer.gate.compare`): a candidate is promoted when at least
    ``gate_min_events`` held-out events were scored and it beats the live version on them with
    ``gate_confidence`` (one-sided, paired); ``tolerance`` > 0 lets a candidate through that is
    worse by at most that much (absolute ``gate_metric``), e.g. 1.0 promotes every candidate."""

    model_config = _CONFIG

    checkpoint: Path | None = Field(
        None, description="initial model, imported as v1 when the model store (HAILSTREAM_MODEL_DIR) is empty")
    stats_file: Path | None = Field(None, description="JSON file rewritten every second with counters")
    threads: int = Field(1, description="torch intra-op threads for fine-tuning")
    nice: int = Field(10, description="CPU priority offset of the fine-tune thread (0-19; 0 = same as the worker)")
    metrics_port: int = Field(9465, description="/metrics port on metrics_bind (0 = any free port)")
    window: int = Field(20000, description="events in the training window")
    span: float | None = Field(None, description="at most this many seconds of event time in the window")
    reservoir: int = Field(2000, description="older events kept as a uniform reservoir")
    holdout: int = Field(1000, description="newest events held out for the validation gate")
    max_users: int = Field(100_000, description="users whose sequences the window keeps")
    every_events: int | None = Field(5000, description="fine-tune every N new events (none = off)")
    every_seconds: float | None = Field(None, description="fine-tune every T seconds (none = off)")
    on_drift: bool = Field(True, description="fine-tune on the workers' drift signals",
                           json_schema_extra={"flag": "drift"})
    drift_wait: int | None = Field(None, description="new events to wait for after a drift signal (default 2 x holdout)")
    min_new_events: int = Field(500, description="new events needed before any fine-tune")
    steps: int = Field(50, description="optimizer steps per fine-tune")
    lr: float = Field(1e-3, description="fine-tune learning rate")
    batch_size: int = Field(32, description="training windows per step")
    weight_decay: float = Field(0.0, description="AdamW weight decay")
    tolerance: float = Field(0.0, description="the candidate may be this much worse than live on the gate metric")
    gate_min_events: int = Field(200, description="held-out events the gate needs scored before it may promote")
    gate_confidence: float = Field(0.95, description="the gate's one-sided paired confidence, in [0.5, 1)")
    gate_metric: str = Field("ndcg@10", description=f"validation gate metric: {', '.join(GATE_METRICS)}")
    k: int = Field(10, description="cut-off of the gate metrics (10)")
    item_capacity: int | None = Field(100_000, description="rows of the item vocabulary (none = unbounded)")
    min_idle: int | None = Field(None, description="events an item must be unseen before its row is recycled (default window)")
    seed: int = Field(0, description="seed of sampling and fine-tuning")
    keep_rejected: bool = Field(False, description="keep rejected candidates' weights in the store")
    keep_versions: int = Field(10, description="promoted versions that keep their weights")

    @property
    def drift_events(self) -> int:
        """Events to collect after a drift signal before its fine-tune starts (``drift_wait``,
        default twice the held-out slice: the newest half gates, the rest is new training data)."""
        return 2 * self.holdout if self.drift_wait is None else self.drift_wait

    @model_validator(mode="after")
    def _check(self) -> TrainerSettings:
        def fail(name: str, message: str) -> SettingsError:
            return SettingsError(f"HAILSTREAM_TRAINER_{name.upper()} ({name}) {message}")

        if self.holdout < 0 or self.holdout >= self.window:
            raise fail("holdout", f"must be in 0..window-1 events, not {self.holdout} (window {self.window})")
        if self.gate_metric not in GATE_METRICS:
            raise fail("gate_metric", f"must be one of {GATE_METRICS}, not {self.gate_metric!r}")
        if self.k != 10:
            raise fail("k", "must be 10: the validation gate scores @10, as the prequential metrics do")
        for name in ("every_events", "every_seconds"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise fail(name, f"must be > 0 (or none to disable that trigger), not {v!r}")
        if self.drift_wait is not None and self.drift_wait < 0:
            raise fail("drift_wait", f"must be >= 0 events (or none for 2 x holdout), not {self.drift_wait}")
        if 0 < self.holdout < self.gate_min_events:
            raise SettingsError(
                f"HAILSTREAM_TRAINER_HOLDOUT: holdout ({self.holdout} events) < gate_min_events ({self.gate_min_events}): "
                "the gate would reject every candidate; hold out more events or lower gate_min_events"
            )
        if not 0.5 <= self.gate_confidence < 1:
            raise fail("gate_confidence", f"must be in [0.5, 1), not {self.gate_confidence!r}")
        if self.steps < 1 or self.batch_size < 1 or self.min_new_events < 0 or self.tolerance < 0:
            raise SettingsError("HAILSTREAM_TRAINER_STEPS and _BATCH_SIZE must be >= 1, "
                                "_MIN_NEW_EVENTS and _TOLERANCE >= 0")
        if self.threads < 1 or not 0 <= self.nice <= 19:
            raise SettingsError("HAILSTREAM_TRAINER_THREADS must be >= 1 and HAILSTREAM_TRAINER_NICE in 0..19")
        if not 0 <= self.metrics_port <= 65535:
            raise fail("metrics_port", f"must be a TCP port 0..65535, got {self.metrics_port!r}")
        return self
