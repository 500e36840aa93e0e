"""Typed records of the model-updates topic (DESIGN §5): version announcements and trainer signals,
and the model version labels they carry.

Every message is a JSON object with a ``type``; all are keyed :data:`CONTROL_KEY`, so they share
one partition and keep their order (a rollback announced after a promotion is applied after it):

- :class:`ModelAnnouncement` (``"model"``) — from the trainer or ``hailstream models
  promote|rollback``: serve this version. ``version`` (label ``v<n>``), ``number``, ``checkpoint``
  (absolute path in the shared model directory), ``sha256``, ``parent``, ``metrics``
  (validation), ``reason`` (``promoted``, ``promote``, ``rollback``), ``announced_at``.
- :class:`DriftSignal` (``"drift"``) — from a worker: a drift detector fired (``detector``,
  ``at_event``, ``value``, ``baseline``, ``source``); the trainer treats it as a fine-tune trigger.
- :class:`TriggerRequest` (``"trigger"``) — from an operator or a benchmark: fine-tune now
  (``reason``, default ``manual``).
- :class:`RollbackNotice` (``"rollback"``) — from a worker whose post-swap guard
  (:mod:`stream.worker.guard`) found ``version`` (``number``) worse than ``previous`` on the same
  events (``verdict``: scores, pairs, reason; ``source``): the worker already serves ``previous``
  again; the trainer marks ``version`` rejected in the store, fine-tunes from the store's live
  version again and re-announces it (``"model"``, reason ``rollback``) so that every worker serves
  it; workers never swap to a version they saw rolled back.

Unknown types are ignored by every reader, so new message kinds can be added without breaking
running processes.

>>> msg = parse_control(drift_message("accuracy", 120, 0.1, 0.3, source="w1", now=5.0))
>>> msg.type, msg.detector, msg.sent_at
('drift', 'accuracy', 5.0)
>>> parse_control(b"not json") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

CONTROL_KEY = b"hailstream-model"
MODEL = "model"
DRIFT = "drift"
TRIGGER = "trigger"
ROLLBACK = "rollback"
TYPES = (MODEL, DRIFT, TRIGGER, ROLLBACK)

_DIGITS = re.compile(r"\d+")


def version_label(version: int) -> str:
    """The label a version carries in checkpoints, predictions and logs: ``v<n>``.

    >>> version_label(3)
    'v3'
    """
    return f"v{int(version)}"


def version_number(version: str | int | float) -> float:
    """The number a model version string stands for: the number itself, else its last run of
    digits (``"v12"`` -> 12, ``"ft-0007"`` -> 7), else 0 (an unversioned initial model).

    >>> version_number("v12"), version_number("ft-0007"), version_number("initial"), version_number(3)
    (12.0, 7.0, 0.0, 3.0)
    """
    if isinstance(version, int | float):
        return float(version)
    try:
        return float(version)
    except ValueError:
        runs = _DIGITS.findall(version)
        return float(runs[-1]) if runs else 0.0


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class _Message:
    """What every model-updates record does: a ``type`` and its fields as (compact, sorted) JSON."""

    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}  # type: ignore[call-overload]

    def to_json(self) -> bytes:
        return _dump(self.to_dict())


@dataclass(frozen=True)
class ModelAnnouncement(_Message):
    """Serve ``version`` (its weights at ``checkpoint``, checksum ``sha256``)."""

    type: ClassVar[str] = MODEL
    version: str
    number: int
    checkpoint: str
    sha256: str | None = None
    parent: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = "promoted"
    announced_at: float | None = None
    #: HMAC-SHA256 (hex) of the other fields with the model-updates key (:func:`sign_announcement`)
    sig: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["sig"] is None:
            del d["sig"]
        return d

    def signed(self, key: bytes | None) -> ModelAnnouncement:
        """This announcement signed with ``key`` (unchanged when None)."""
        return self if key is None else replace(self, sig=sign_announcement(self, key))

    def verify(self, key: bytes) -> bool:
        """Whether ``sig`` is this announcement's signature with ``key`` (constant-time compare).

        >>> m = ModelAnnouncement("v2", 2, "/m/v2.safetensors", "ab").signed(b"k")
        >>> m.verify(b"k"), m.verify(b"other"), replace(m, checkpoint="/tmp/x").verify(b"k")
        (True, False, False)
        """
        return self.sig is not None and hmac.compare_digest(self.sig, sign_announcement(self, key))


def sign_announcement(msg: ModelAnnouncement, key: bytes) -> str:
    """HMAC-SHA256 (hex) over the canonical JSON (sorted keys, compact) of every field but ``sig``:
    a writer of the model-updates topic without the key cannot make workers serve a checkpoint.
    The sha256 inside the checkpoint proves integrity only; this proves origin."""
    body = {"type": msg.type, **asdict(msg)}
    body.pop("sig", None)
    return hmac.new(key, _dump(body), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class DriftSignal(_Message):
    """A worker's drift detection, for the trainer (``source`` names the worker)."""

    type: ClassVar[str] = DRIFT
    detector: str
    at_event: int
    value: float
    baseline: float
    source: str = ""
    sent_at: float | None = None


@dataclass(frozen=True)
class TriggerRequest(_Message):
    """Ask the trainer for a fine-tune now."""

    type: ClassVar[str] = TRIGGER
    reason: str = "manual"
    sent_at: float | None = None


@dataclass(frozen=True)
class RollbackNotice(_Message):
    """A worker rolled ``version`` back to ``previous`` (see :mod:`stream.worker.guard`)."""

    type: ClassVar[str] = ROLLBACK
    version: str
    number: int
    previous: str
    verdict: dict[str, Any] = field(default_factory=dict)
    reason: str = "guard"
    source: str = ""
    sent_at: float | None = None


ControlMessage = ModelAnnouncement | DriftSignal | TriggerRequest | RollbackNotice


def model_message(
    version: str,
    number: int,
    checkpoint: str | Path,
    sha256: str | None = None,
    parent: int | None = None,
    metrics: dict[str, Any] | None = None,
    reason: str = "promoted",
    now: float | None = None,
    key: bytes | None = None,
) -> bytes:
    """Announce that ``version`` (checkpoint at ``checkpoint``) is the one to serve; signed with
    ``key`` when given (``Settings.signing_key()``)."""
    return ModelAnnouncement(
        version, int(number), str(Path(checkpoint).resolve()), sha256, parent, metrics or {}, reason,
        time.time() if now is None else now,
    ).signed(key).to_json()


def drift_message(
    detector: str, at_event: int, value: float, baseline: float, source: str = "", now: float | None = None
) -> bytes:
    """A worker's drift detection, for the trainer."""
    return DriftSignal(detector, int(at_event), float(value), float(baseline), source,
                       time.time() if now is None else now).to_json()


def trigger_message(reason: str = "manual", now: float | None = None) -> bytes:
    """Ask the trainer for a fine-tune now."""
    return TriggerRequest(reason, time.time() if now is None else now).to_json()


def rollback_message(
    version: str, number: int, previous: str, verdict: dict[str, Any], source: str = "", now: float | None = None
) -> bytes:
    """A worker rolled ``version`` back to ``previous`` (see :mod:`stream.worker.guard`)."""
    return RollbackNotice(version, int(number), previous, verdict, "guard", source,
                          time.time() if now is None else now).to_json()


def parse_control(raw: bytes | None) -> ControlMessage | None:
    """The typed message, or None when it is not a control message we understand (bad JSON, not an
    object, unknown or missing type, missing or mistyped fields, a model message without
    version/checkpoint). Unknown fields are ignored (newer writers)."""
    if not raw:
        return None
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(msg, dict) or msg.get("type") not in TYPES:
        return None
    try:
        if msg["type"] == MODEL:
            if not (isinstance(msg.get("version"), str) and isinstance(msg.get("checkpoint"), str)):
                return None
            return ModelAnnouncement(
                msg["version"], int(msg.get("number") or version_number(msg["version"])), msg["checkpoint"],
                msg.get("sha256"), msg.get("parent"), dict(msg.get("metrics") or {}), str(msg.get("reason") or ""),
                msg.get("announced_at"), msg["sig"] if isinstance(msg.get("sig"), str) else None,
            )
        if msg["type"] == ROLLBACK:
            if not isinstance(msg.get("version"), str):
                return None
            return RollbackNotice(msg["version"], int(msg.get("number") or version_number(msg["version"])),
                                  str(msg.get("previous") or ""), dict(msg.get("verdict") or {}),
                                  str(msg.get("reason") or "guard"), str(msg.get("source") or ""), msg.get("sent_at"))
        if msg["type"] == DRIFT:
            return DriftSignal(str(msg.get("detector")), int(msg.get("at_event") or 0), float(msg.get("value") or 0.0),
                               float(msg.get("baseline") or 0.0), str(msg.get("source") or ""), msg.get("sent_at"))
        return TriggerRequest(str(msg.get("reason") or "manual"), msg.get("sent_at"))
    except (TypeError, ValueError):
        return None
