from __future__ import annotations

import base64
import json
import pickle

import pytest

from stream.records import (
    DEAD_LETTER_RAW_BYTES,
    REASONS,
    Interaction,
    InvalidEvent,
    Prediction,
    dead_letter,
    dead_letter_payload,
    parse_interaction,
)


def _raw(**fields: object) -> bytes:
    base: dict[str, object] = {"user_id": "u1", "item_id": "i1", "ts": 1333476000.5}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def _reason(raw: bytes | None, max_bytes: int = 65536) -> str:
    with pytest.raises(InvalidEvent) as e:
        parse_interaction(raw, max_bytes)
    assert e.value.reason in REASONS
    assert e.value.detail and str(e.value).startswith(e.value.reason)
    return e.value.reason


def test_minimal_event() -> None:
    ev = parse_interaction(_raw())
    assert ev == Interaction("u1", "i1", 1333476000.5)
    assert (ev.event_id, ev.lat, ev.lon, ev.kind) == (None, None, None, None)


def test_full_event_with_integer_ids_converted_to_str() -> None:
    ev = parse_interaction(_raw(user_id=42, item_id=7, ts=100, event_id=9, lat=40.7, lon=-74.0, kind="checkin"))
    assert ev == Interaction("42", "7", 100.0, "9", 40.7, -74.0, "checkin")
    assert type(ev.ts) is float and type(ev.user_id) is str


def test_unknown_fields_ignored_and_null_optionals_absent() -> None:
    ev = parse_interaction(_raw(extra={"a": 1}, lat=None, lon=None, event_id=None, kind=None))
    assert ev == Interaction("u1", "i1", 1333476000.5)


def test_unicode_ids() -> None:
    ev = parse_interaction(_raw(user_id="üser-☃", item_id='quote"d'))
    assert (ev.user_id, ev.item_id) == ("üser-☃", 'quote"d')


def test_round_trip() -> None:
    ev = Interaction("u", "i", 5.25, "e", -33.9, 151.2, "click")
    assert parse_interaction(ev.to_json()) == ev
    assert parse_interaction(Interaction("u", "i", 1.0).to_json()) == Interaction("u", "i", 1.0)


def test_accepts_bytearray_and_memoryview() -> None:
    raw = _raw()
    assert parse_interaction(bytearray(raw)) == parse_interaction(memoryview(raw)) == parse_interaction(raw)


def test_oversized() -> None:
    raw = _raw(pad="x" * 200)
    assert _reason(raw, max_bytes=len(raw) - 1) == "oversized"
    assert parse_interaction(raw, max_bytes=len(raw)).user_id == "u1"


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"{", b"not json", b'{"user_id": "u1",}', b"\xff\xfe{}", b'{"user_id": "\xed\xa0\x80"}',
     '{"user_id":"u"}'.encode("utf-16")],
)
def test_bad_json(raw: bytes | None) -> None:
    assert _reason(raw) == "bad_json"


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"a string"', b"42", b"null", b"true"])
def test_not_object(raw: bytes) -> None:
    assert _reason(raw) == "not_object"


@pytest.mark.parametrize("missing", ["user_id", "item_id", "ts"])
def test_missing_field(missing: str) -> None:
    with pytest.raises(InvalidEvent) as e:
        parse_interaction(_raw(**{missing: ...}))
    assert e.value.reason == "missing_field" and missing in e.value.detail


def test_null_required_field_is_missing() -> None:
    assert _reason(_raw(user_id=None)) == "missing_field"


@pytest.mark.parametrize(
    "fields",
    [
        {"user_id": 1.5}, {"user_id": True}, {"user_id": ["a"]}, {"item_id": {"id": 1}}, {"item_id": False},
        {"ts": "1333476000"}, {"ts": True}, {"ts": [1]}, {"event_id": 1.0}, {"event_id": []},
        {"lat": "40.7", "lon": -74.0}, {"lat": 40.7, "lon": True}, {"kind": 3},
    ],
)
def test_wrong_type(fields: dict[str, object]) -> None:
    assert _reason(_raw(**fields)) == "wrong_type"


@pytest.mark.parametrize(
    "raw",
    [
        _raw(user_id=""), _raw(item_id="   "), _raw(event_id=""),
        b'{"user_id": "u", "item_id": "i", "ts": NaN}',
        b'{"user_id": "u", "item_id": "i", "ts": Infinity}',
        b'{"user_id": "u", "item_id": "i", "ts": -Infinity}',
        b'{"user_id": "u", "item_id": "i", "ts": 1e400}',
        b'{"user_id": "u", "item_id": "i", "ts": 1' + b"0" * 400 + b"}",
        _raw(lat=91.0, lon=0.0), _raw(lat=-90.5, lon=0.0), _raw(lat=0.0, lon=180.01), _raw(lat=0.0, lon=-181),
        _raw(lat=40.0), _raw(lon=-74.0),
        b'{"user_id": "u", "item_id": "i", "ts": 1, "lat": NaN, "lon": 0}',
    ],
)
def test_bad_value(raw: bytes) -> None:
    assert _reason(raw) == "bad_value"


def test_coordinate_bounds_are_inclusive() -> None:
    ev = parse_interaction(_raw(lat=-90, lon=180))
    assert (ev.lat, ev.lon) == (-90.0, 180.0)


def test_invalid_event_pickles() -> None:
    err = pickle.loads(pickle.dumps(InvalidEvent("bad_value", "x")))
    assert (err.reason, err.detail) == ("bad_value", "x")


def test_prediction_json() -> None:
    p = Prediction("u1", "fsq:5", ["a", "b", "c"], [-0.1, -0.2, -0.3], 3, "v7", 100.0, 101.5)
    d = json.loads(p.to_json())
    assert d == {
        "user_id": "u1", "event_id": "fsq:5", "items": ["a", "b", "c"], "scores": [-0.1, -0.2, -0.3],
        "k": 3, "model_version": "v7", "ts": 100.0, "produced_at": 101.5,
    }
    assert Prediction.from_json(p.to_json()) == p


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{", "bad_json"), (b'{"user_id": "u"}', "missing_field"), (b'{"user_id": "u", "event_id": "e", "items": 3, '
     b'"scores": [], "k": 1, "model_version": "v", "ts": 1, "produced_at": 2}', "wrong_type")],
)
def test_prediction_from_bad_json(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as e:
        Prediction.from_json(raw)
    assert e.value.reason == reason


def test_dead_letter_small_utf8() -> None:
    d = json.loads(dead_letter(b'{"user_id": 1', "bad_json", "Expecting ','", "hailstream.interactions", 2, 17))
    assert d["raw"] == '{"user_id": 1' and d["raw_encoding"] == "utf-8"
    assert (d["reason"], d["detail"], d["error"]) == ("bad_json", "Expecting ','", "bad_json: Expecting ','")
    assert (d["topic"], d["partition"], d["offset"]) == ("hailstream.interactions", 2, 17)
    assert d["raw_bytes"] == 13 and d["truncated"] is False and d["failed_at"] > 0


def test_dead_letter_truncates_to_1kib() -> None:
    d = json.loads(dead_letter(b"a" * 5000, "oversized", "x", "t", 0, 0))
    assert len(d["raw"]) == DEAD_LETTER_RAW_BYTES and d["truncated"] is True and d["raw_bytes"] == 5000


def test_dead_letter_drops_a_character_cut_by_truncation() -> None:
    raw = b"a" * (DEAD_LETTER_RAW_BYTES - 1) + "☃".encode() * 10  # the snowman straddles the cut
    d = json.loads(dead_letter(raw, "oversized", "x", "t", 0, 0))
    assert d["raw_encoding"] == "utf-8" and d["raw"] == "a" * (DEAD_LETTER_RAW_BYTES - 1)


def test_dead_letter_binary_is_base64() -> None:
    raw = b"\xff\x00\xfe" * 10
    d = json.loads(dead_letter(raw, "bad_json", "not UTF-8", "t", 1, 2))
    assert d["raw_encoding"] == "base64" and base64.b64decode(d["raw"]) == raw


def test_dead_letter_of_none_value() -> None:
    d = json.loads(dead_letter(None, "bad_json", "empty", "t", 0, 0))
    assert d["raw"] == "" and d["raw_bytes"] == 0


def test_dead_letter_payload_from_errors() -> None:
    raw = b'{"user_id": ""}'
    try:
        parse_interaction(raw)
    except InvalidEvent as err:
        d = json.loads(dead_letter_payload(raw, err, "t", 0, 3))
    assert (d["reason"], d["detail"]) == ("bad_value", "'user_id' is empty")
    d = json.loads(dead_letter_payload(raw, RuntimeError("boom"), "t", 0, 3))
    assert d["reason"] == "error" and d["detail"] == "RuntimeError: boom"
    d = json.loads(dead_letter_payload(raw, "model crashed", "t", 0, 3))
    assert (d["reason"], d["detail"]) == ("error", "model crashed")
