"""The trainer's settings (:class:`TrainerConfig`) and their command-line flags.

Kept free of torch and Kafka imports, so that building the ``hailstream`` argument parser stays
cheap for every command.

>>> import argparse
>>> ap = argparse.ArgumentParser(); add_trainer_arguments(ap)
>>> config_from_args(ap.parse_args(["--every-events", "100", "--no-drift"]))
TrainerConfig(window=20000, ..., every_events=100, ..., on_drift=False, ...)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import StreamError

GATE_METRICS = ("hr@10", "ndcg@10", "mrr@10")


@dataclass
class TrainerConfig:
    """Settings of the lifecycle (:mod:`stream.learner` explains each step). ``min_idle`` (events an item must be
    unseen before its row may be recycled) defaults to ``window``; ``item_capacity=None`` lets the
    vocabulary grow without bound. ``keep_rejected`` keeps rejected candidates' weights in the
    store; ``keep_versions`` promoted versions keep their weights (older ones are pruned).

    The gate (:func:`stream.gate.compare`): a candidate is promoted when at least
    ``gate_min_events`` held-out events were scored and it beats the live version on them with
    ``gate_confidence`` (one-sided, paired); ``tolerance`` > 0 lets a candidate through that is
    worse by at most that much (absolute ``gate_metric``), e.g. 1.0 promotes every candidate."""

    window: int = 20000
    span: float | None = None
    reservoir: int = 2000
    holdout: int = 1000
    max_users: int = 100_000
    every_events: int | None = 5000
    every_seconds: float | None = None
    on_drift: bool = True
    drift_wait: int | None = None
    min_new_events: int = 500
    steps: int = 50
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    tolerance: float = 0.0
    gate_min_events: int = 200
    gate_confidence: float = 0.95
    gate_metric: str = "ndcg@10"
    k: int = 10
    item_capacity: int | None = 100_000
    min_idle: int | None = None
    seed: int = 0
    keep_rejected: bool = False
    keep_versions: int = 10

    @property
    def drift_events(self) -> int:
        """Events to collect after a drift signal before its fine-tune starts (``drift_wait``,
        default twice the held-out slice: the newest half gates, the rest is new training data)."""
        return 2 * self.holdout if self.drift_wait is None else self.drift_wait

    def __post_init__(self) -> None:
        if self.holdout < 0 or self.holdout >= self.window:
            raise StreamError(f"holdout must be in 0..window-1 events, not {self.holdout} (window {self.window})")
        if self.gate_metric not in GATE_METRICS:
            raise StreamError(f"gate_metric must be one of {GATE_METRICS}, not {self.gate_metric!r}")
        if self.k != 10:
            raise StreamError("the validation gate scores @10 (k=10), as the prequential metrics do")
        for name in ("every_events", "every_seconds"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise StreamError(f"{name} must be > 0 (or None to disable that trigger), not {v!r}")
        if self.drift_wait is not None and self.drift_wait < 0:
            raise StreamError(f"drift_wait must be >= 0 events (or None for 2 x holdout), not {self.drift_wait}")
        if 0 < self.holdout < self.gate_min_events:
            raise StreamError(
                f"holdout ({self.holdout} events) < gate_min_events ({self.gate_min_events}): the gate would reject "
                "every candidate; hold out more events or lower gate_min_events"
            )
        if not 0.5 <= self.gate_confidence < 1:
            raise StreamError(f"gate_confidence must be in [0.5, 1), not {self.gate_confidence!r}")
        if self.steps < 1 or self.batch_size < 1 or self.min_new_events < 0 or self.tolerance < 0:
            raise StreamError("steps and batch_size must be >= 1, min_new_events and tolerance >= 0")


#: TrainerConfig fields settable from the command line, with their types.
CLI_FIELDS: dict[str, type] = {
    "window": int, "span": float, "reservoir": int, "holdout": int, "every_events": int, "every_seconds": float,
    "min_new_events": int, "drift_wait": int, "steps": int, "lr": float, "batch_size": int, "tolerance": float,
    "gate_min_events": int, "gate_confidence": float, "item_capacity": int,
    "max_users": int, "seed": int, "keep_versions": int,
}


def add_trainer_arguments(ap: argparse.ArgumentParser) -> None:
    """The trainer's flags (for ``python -m stream.trainer`` and ``hailstream trainer``)."""
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="initial model, imported as v1 when the model store (HAILSTREAM_MODEL_DIR) is empty")
    ap.add_argument("--stats-file", type=Path, default=None, help="JSON file rewritten every second with counters")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for fine-tuning")
    ap.add_argument("--nice", type=int, default=10,
                    help="CPU priority offset of the fine-tune thread (0-19; 0 = same as the worker)")
    ap.add_argument("--no-drift", action="store_true", help="ignore drift signals from the workers")
    ap.add_argument("--keep-rejected", action="store_true", help="keep rejected candidates' weights in the store")
    defaults = TrainerConfig()
    for name, typ in CLI_FIELDS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=typ, default=None,
                        help=f"(default {getattr(defaults, name)})")


def config_from_args(args: argparse.Namespace) -> TrainerConfig:
    values: dict[str, Any] = {n: getattr(args, n) for n in CLI_FIELDS if getattr(args, n, None) is not None}
    values["on_drift"] = not args.no_drift
    values["keep_rejected"] = bool(args.keep_rejected)
    return dataclasses.replace(TrainerConfig(), **values)
