"""Messages on the model-updates topic (DESIGN §5): version announcements and trainer signals.

Every message is a JSON object with a ``type``; all are keyed :data:`CONTROL_KEY`, so they share
one partition and keep their order (a rollback announced after a promotion is applied after it):

- ``"model"`` — from the trainer or ``hailstream models promote|rollback``: serve this version.
  ``version`` (label ``v<n>``), ``number``, ``checkpoint`` (absolute path in the shared model
  directory), ``sha256``, ``parent``, ``metrics`` (validation), ``reason`` (``promoted``,
  ``promote``, ``rollback``), ``announced_at``.
- ``"drift"`` — from a worker: a drift detector fired (``detector``, ``at_event``, ``value``,
  ``baseline``, ``source``); the trainer treats it as a fine-tune trigger.
- ``"trigger"`` — from an operator or a benchmark: fine-tune now (``reason``, default ``manual``).
- ``"rollback"`` — from a worker whose post-swap guard (:mod:`stream.guard`) found ``version``
  (``number``) worse than ``previous`` on the same events (``verdict``: scores, pairs, reason;
  ``source``): the worker already serves ``previous`` again; the trainer marks ``version``
  rejected in the store, fine-tunes from the store's live version again and re-announces it
  (``"model"``, reason ``rollback``) so that every worker serves it; workers never swap to a
  version they saw rolled back.

Unknown types are ignored by every reader, so new message kinds can be added without breaking
running processes.

>>> msg = parse_control(drift_message("accuracy", 120, 0.1, 0.3, source="w1", now=5.0))
>>> msg["type"], msg["detector"], msg["sent_at"]
('drift', 'accuracy', 5.0)
>>> parse_control(b"not json") is None
True
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

CONTROL_KEY = b"hailstream-model"
MODEL = "model"
DRIFT = "drift"
TRIGGER = "trigger"
ROLLBACK = "rollback"
TYPES = (MODEL, DRIFT, TRIGGER, ROLLBACK)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def model_message(
    version: str,
    number: int,
    checkpoint: str | Path,
    sha256: str | None = None,
    parent: int | None = None,
    metrics: dict[str, Any] | None = None,
    reason: str = "promoted",
    now: float | None = None,
) -> bytes:
    """Announce that ``version`` (checkpoint at ``checkpoint``) is the one to serve."""
    return _dump({
        "type": MODEL, "version": version, "number": int(number), "checkpoint": str(Path(checkpoint).resolve()),
        "sha256": sha256, "parent": parent, "metrics": metrics or {}, "reason": reason,
        "announced_at": time.time() if now is None else now,
    })


def drift_message(
    detector: str, at_event: int, value: float, baseline: float, source: str = "", now: float | None = None
) -> bytes:
    """A worker's drift detection, for the trainer."""
    return _dump({
        "type": DRIFT, "detector": detector, "at_event": int(at_event), "value": float(value),
        "baseline": float(baseline), "source": source, "sent_at": time.time() if now is None else now,
    })


def trigger_message(reason: str = "manual", now: float | None = None) -> bytes:
    """Ask the trainer for a fine-tune now."""
    return _dump({"type": TRIGGER, "reason": reason, "sent_at": time.time() if now is None else now})


def rollback_message(
    version: str, number: int, previous: str, verdict: dict[str, Any], source: str = "", now: float | None = None
) -> bytes:
    """A worker rolled ``version`` back to ``previous`` (see :mod:`stream.guard`)."""
    return _dump({
        "type": ROLLBACK, "version": version, "number": int(number), "previous": previous, "verdict": verdict,
        "reason": "guard", "source": source, "sent_at": time.time() if now is None else now,
    })


def parse_control(raw: bytes | None) -> dict[str, Any] | None:
    """The message as a dict, or None when it is not a control message we understand (bad JSON,
    not an object, unknown or missing type, a model message without version/checkpoint)."""
    if not raw:
        return None
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(msg, dict) or msg.get("type") not in TYPES:
        return None
    if msg["type"] == MODEL and not (isinstance(msg.get("version"), str) and isinstance(msg.get("checkpoint"), str)):
        return None
    if msg["type"] == ROLLBACK and not isinstance(msg.get("version"), str):
        return None
    return msg
