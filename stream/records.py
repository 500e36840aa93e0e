"""Typed event records and their wire format (DESIGN §5); validation happens here, at the edge.

Every message is UTF-8 JSON, key = user_id.

>>> ev = parse_interaction(b'{"user_id": 7, "item_id": "poi-3", "ts": 1333476000, "kind": "checkin"}')
>>> ev.user_id, ev.item_id, ev.ts, ev.kind
('7', 'poi-3', 1333476000.0, 'checkin')
>>> parse_interaction(b'{"user_id": "7"}')
Traceback (most recent call last):
...
stream.records.InvalidEvent: missing_field: 'item_id' is required

A bad message becomes a dead letter with a reason, never a crashed agent::

    try:
        ev = parse_interaction(raw, settings.max_message_bytes)
    except InvalidEvent as err:
        send(settings.dead_letter_topic, dead_letter_payload(raw, err, topic, partition, offset))
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from stream.errors import StreamError

#: Every reason code :class:`InvalidEvent` can carry (a bounded set: safe as a metric label).
REASONS = ("oversized", "bad_json", "not_object", "missing_field", "wrong_type", "bad_value", "bad_ts",
           "key_mismatch", "duplicate_event")
DEFAULT_MAX_ID_CHARS = 256
#: The worker's own failure code (a bug or a corrupt table value, never the sender's fault).
INTERNAL_ERROR = "internal_error"
#: Raw bytes kept in a dead letter.
DEAD_LETTER_RAW_BYTES = 1024
DEFAULT_MAX_BYTES = 65536

_loads = json.loads
_isfinite = math.isfinite


class InvalidEvent(StreamError):
    """An input message that is not a valid interaction. ``reason`` is one of :data:`REASONS`;
    ``detail`` says what was wrong in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail))


@dataclass(slots=True, frozen=True)
class Interaction:
    """One user-item interaction as it travels on ``hailstream.interactions``.

    ``ts`` is unix seconds; ``lat``/``lon`` are both set or both ``None``; ``event_id`` and ``kind``
    are optional on the wire (``None`` when absent). ``backfill`` (wire: ``"backfill": true``, absent
    otherwise) marks a past event that seeds the user's history and the baselines without being
    scored or predicted (DESIGN §4; ``hailstream replay --backfill``).
    """

    user_id: str
    item_id: str
    ts: float
    event_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    kind: str | None = None
    backfill: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The wire fields, absent optional fields left out."""
        d: dict[str, Any] = {"user_id": self.user_id, "item_id": self.item_id, "ts": self.ts}
        if self.event_id is not None:
            d["event_id"] = self.event_id
        if self.lat is not None:
            d["lat"] = self.lat
            d["lon"] = self.lon
        if self.kind is not None:
            d["kind"] = self.kind
        if self.backfill:
            d["backfill"] = True
        return d

    def to_json(self) -> bytes:
        """UTF-8 JSON; ``parse_interaction(x.to_json()) == x``.

        >>> Interaction("u1", "i9", 12.5, event_id="e1").to_json()
        b'{"user_id":"u1","item_id":"i9","ts":12.5,"event_id":"e1"}'
        """
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def _opt_id(obj: dict[str, Any], name: str, max_chars: int = DEFAULT_MAX_ID_CHARS) -> str | None:
    v = obj.get(name)
    if v is None:
        return None
    t = type(v)
    if t is str:
        if not v.strip():
            raise InvalidEvent("bad_value", f"{name!r} is empty")
        if len(v) > max_chars:
            raise InvalidEvent("bad_value", f"{name!r} has {len(v)} characters > max_id_chars={max_chars}")
        if not v.isascii():
            try:  # a JSON escape such as "\udfff" decodes to a lone surrogate, which no output can encode
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent("bad_value", f"{name!r} is not encodable as UTF-8 (a lone surrogate escape)") from None
        return v
    if t is int:  # exact type check: bools are ints in Python but never valid ids
        return str(v)
    raise InvalidEvent("wrong_type", f"{name!r} must be a string or an integer, got {t.__name__}")


def _id(obj: dict[str, Any], name: str, max_chars: int = DEFAULT_MAX_ID_CHARS) -> str:
    v = _opt_id(obj, name, max_chars)
    if v is None:
        raise InvalidEvent("missing_field", f"{name!r} is required")
    return v


def _coord(obj: dict[str, Any], name: str, limit: float) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    t = type(v)
    if t is not float and t is not int:
        raise InvalidEvent("wrong_type", f"{name!r} must be a number, got {t.__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise InvalidEvent("bad_value", f"{name!r} is out of range") from None
    if not (_isfinite(f) and -limit <= f <= limit):
        raise InvalidEvent("bad_value", f"{name!r}={v!r} must be within [-{limit:g}, {limit:g}]")
    return f


def parse_interaction(
    raw: bytes | bytearray | memoryview | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_id_chars: int = DEFAULT_MAX_ID_CHARS,
    ts_window: tuple[float, float] | None = None,
) -> Interaction:
    """Validate one raw message into an :class:`Interaction` or raise :class:`InvalidEvent`.

    Accepted: a JSON object with ``user_id`` and ``item_id`` (strings, or integers, which are
    converted to their decimal string so ``7`` and ``"7"`` are the same user), ``ts`` (a finite
    number, unix seconds), optional ``event_id`` (string or integer, same rule), optional ``lat``
    and ``lon`` (numbers within ±90 / ±180, both or neither; JSON ``null`` = absent), optional
    ``kind`` (string) and optional ``backfill`` (boolean). Unknown fields are ignored, for forward compatibility.

    Reason codes: ``oversized`` (more than ``max_bytes``), ``bad_json`` (empty, not UTF-8, not
    JSON), ``not_object``, ``missing_field``, ``wrong_type``, ``bad_value`` (empty id, NaN/inf ts,
    coordinate out of range, lat without lon, an id longer than ``max_id_chars`` or not encodable
    as UTF-8), ``bad_ts`` (``ts`` outside ``ts_window`` = (earliest, latest), when given).
    The worker adds ``key_mismatch`` and ``duplicate_event`` (:mod:`stream.worker.batch`).

    >>> parse_interaction(b'{"user_id": "u", "item_id": "\\udfff", "ts": 1}')
    Traceback (most recent call last):
    ...
    stream.records.InvalidEvent: bad_value: 'item_id' is not encodable as UTF-8 (a lone surrogate escape)
    >>> parse_interaction(b'{"user_id": "u", "item_id": "i", "ts": 1e30}', ts_window=(0, 2e9)).ts
    Traceback (most recent call last):
    ...
    stream.records.InvalidEvent: bad_ts: 'ts'=1e+30 is outside [0, 2e+09] (min_event_ts, now + max_event_ts_ahead)
    """
    if raw is None or len(raw) == 0:
        raise InvalidEvent("bad_json", "empty message (no value)")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > max_message_bytes={max_bytes}")
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32 and lone surrogates.
        text = str(raw, "utf-8")
    except UnicodeDecodeError as e:
        raise InvalidEvent("bad_json", f"not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        obj = _loads(text)
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise InvalidEvent("bad_json", str(e)) from None
    except RecursionError:
        raise InvalidEvent("bad_json", "nested too deeply") from None
    if type(obj) is not dict:
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")

    user_id = _id(obj, "user_id", max_id_chars)
    item_id = _id(obj, "item_id", max_id_chars)
    ts = obj.get("ts")
    if ts is None:
        raise InvalidEvent("missing_field", "'ts' is required (unix seconds)")
    t = type(ts)
    if t is not float and t is not int:
        raise InvalidEvent("wrong_type", f"'ts' must be a number (unix seconds), got {t.__name__}")
    try:
        ts = float(ts)
    except OverflowError:
        raise InvalidEvent("bad_value", "'ts' is out of range") from None
    if not _isfinite(ts):
        raise InvalidEvent("bad_value", f"'ts' must be finite, got {ts!r}")
    if ts_window is not None and not ts_window[0] <= ts <= ts_window[1]:
        raise InvalidEvent("bad_ts", f"'ts'={ts:g} is outside [{ts_window[0]:g}, {ts_window[1]:g}] "
                                     "(min_event_ts, now + max_event_ts_ahead)")
    event_id = _opt_id(obj, "event_id", max_id_chars)
    lat = _coord(obj, "lat", 90.0)
    lon = _coord(obj, "lon", 180.0)
    if (lat is None) != (lon is None):
        raise InvalidEvent("bad_value", "'lat' and 'lon' must be given together")
    kind = obj.get("kind")
    if kind is not None:
        if type(kind) is not str:
            raise InvalidEvent("wrong_type", f"'kind' must be a string, got {type(kind).__name__}")
        if len(kind) > max_id_chars or (not kind.isascii() and not _encodable(kind)):
            raise InvalidEvent("bad_value", "'kind' is too long or not encodable as UTF-8")
    backfill = obj.get("backfill") or False
    if type(backfill) is not bool:
        raise InvalidEvent("wrong_type", f"'backfill' must be true or false, got {type(backfill).__name__}")
    return Interaction(user_id, item_id, ts, event_id, lat, lon, kind, backfill)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(slots=True, frozen=True)
class Prediction:
    """The top-k next targets predicted after one event, as published on ``hailstream.predictions``.

    ``event_id`` is the id of the triggering interaction, so ``(user_id, event_id)`` identifies a
    prediction and duplicates after a restart are detectable; ``ts`` is the event time of the
    triggering interaction and ``produced_at`` the wall-clock unix time of publication.

    >>> p = Prediction("u1", "e1", ["a", "b"], [-0.5, -1.25], 2, "v3", 10.0, 11.0)
    >>> Prediction.from_json(p.to_json()) == p
    True
    """

    user_id: str
    event_id: str
    items: list[str]
    scores: list[float]
    k: int
    model_version: str
    ts: float
    produced_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "event_id": self.event_id,
            "items": self.items,
            "scores": self.scores,
            "k": self.k,
            "model_version": self.model_version,
            "ts": self.ts,
            "produced_at": self.produced_at,
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON bytes (compact)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Prediction:
        """Parse a prediction message (for consumers and reconciliation); raises
        :class:`InvalidEvent` when a field is missing."""
        try:
            d = json.loads(raw)
            return cls(
                str(d["user_id"]), str(d["event_id"]), [str(i) for i in d["items"]],
                [float(s) for s in d["scores"]], int(d["k"]), str(d["model_version"]),
                float(d["ts"]), float(d["produced_at"]),
            )
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidEvent("bad_json", str(e)) from None
        except KeyError as e:
            raise InvalidEvent("missing_field", f"{e.args[0]!r} is required") from None
        except TypeError as e:
            raise InvalidEvent("wrong_type", str(e)) from None


def _raw_text(raw: bytes, truncated: bool) -> tuple[str, str]:
    """``(text, encoding)``: the bytes as UTF-8 text when they decode (a multi-byte character cut
    by our truncation is dropped), otherwise base64."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        # Truncation can split the last character (at most 3 bytes); anything earlier is binary.
        if truncated and e.start >= len(raw) - 3 and e.reason == "unexpected end of data":
            return raw[: e.start].decode("utf-8"), "utf-8"
        return base64.b64encode(raw).decode("ascii"), "base64"


def dead_letter(
    raw: bytes | bytearray | memoryview | None,
    reason: str,
    detail: str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
) -> bytes:
    """The JSON message for the dead-letter topic.

    Fields: ``reason``, ``detail``, ``error`` (``"reason: detail"``), the source ``topic``,
    ``partition``, ``offset``, ``raw`` (the first :data:`DEAD_LETTER_RAW_BYTES` bytes of the
    message), ``raw_encoding`` (``"utf-8"`` when those bytes are valid UTF-8 text, else
    ``"base64"`` of the bytes: lossless either way), ``raw_bytes`` (the original size),
    ``truncated`` and ``failed_at`` (unix seconds). A multi-byte character split by the truncation
    is dropped from the text.

    >>> d = json.loads(dead_letter(b"x" * 2000, "oversized", "too big", "t", 0, 5))
    >>> len(d["raw"]), d["truncated"], d["raw_encoding"], d["error"]
    (1024, True, 'utf-8', 'oversized: too big')
    """
    data = b"" if raw is None else bytes(raw)
    truncated = len(data) > DEAD_LETTER_RAW_BYTES
    text, encoding = _raw_text(data[:DEAD_LETTER_RAW_BYTES], truncated)
    payload = {
        "reason": reason,
        "detail": detail,
        "error": f"{reason}: {detail}",
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "raw": text,
        "raw_encoding": encoding,
        "raw_bytes": len(data),
        "truncated": truncated,
        "failed_at": time.time(),
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def dead_letter_payload(
    raw: bytes | bytearray | memoryview | None,
    error: BaseException | str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
) -> bytes:
    """:func:`dead_letter` from an exception: an :class:`InvalidEvent` keeps its reason; any other
    exception becomes reason ``"error"`` with ``"TypeName: message"`` as the detail (a crash while
    processing a valid-looking event); a string is used as the detail with reason ``"error"``."""
    if isinstance(error, InvalidEvent):
        return dead_letter(raw, error.reason, error.detail, topic, partition, offset)
    if isinstance(error, BaseException):
        return dead_letter(raw, "error", f"{type(error).__name__}: {error}", topic, partition, offset)
    return dead_letter(raw, "error", str(error), topic, partition, offset)
