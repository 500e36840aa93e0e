"""Item 2: validation at the edge; every rejection a dead letter with a reason; bounded tracebacks."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from stream.records import REASONS, Prediction
from stream.settings import Settings
from stream.worker.batch import Source, new_prequential, process_batch
from tests.stream.worker.test_batch import EchoRecommender

pytestmark = pytest.mark.reliability
SETTINGS = Settings(top_k=3, max_id_chars=32, min_event_ts=0.0, max_event_ts_ahead=86400.0)


def _src(body: bytes, offset: int, key: bytes | None = None) -> Source:
    return Source(body, "in", 0, offset, None, key)


def _run(batch: list[Source], table: dict[str, Any] | None = None) -> Any:
    return process_batch(batch, (table or {}).get, EchoRecommender(), None, new_prequential(3), SETTINGS,
                         now=lambda: 1.7e9)


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"user_id": "u", "item_id": "\\udfff", "ts": 1}', "bad_value"),
    (b'{"user_id": "\\ud800", "item_id": "i", "ts": 1}', "bad_value"),
    (b'{"user_id": "u", "item_id": "i", "ts": 1, "event_id": "\\udc00x"}', "bad_value"),
    (b'{"user_id": "' + b"u" * 33 + b'", "item_id": "i", "ts": 1}', "bad_value"),
    (b'{"user_id": "u", "item_id": "i", "ts": -1e9}', "bad_ts"),
    (b'{"user_id": "u", "item_id": "i", "ts": 1e30}', "bad_ts"),
])
def test_hostile_values_are_dead_letters_with_a_reason(body: bytes, reason: str) -> None:
    out = _run([_src(body, 0)])
    assert not out.predictions and dict(out.stats.dead_letters) == {reason: 1}
    assert json.loads(out.dead_letters[0][1])["reason"] == reason
    assert reason in REASONS


def test_an_unencodable_item_can_never_break_other_users_predictions() -> None:
    # 300 events of a surrogate item, then new users: every one of them still gets a prediction.
    bad = [_src(b'{"user_id": "p%d", "item_id": "\\udfff", "ts": 1}' % i, i) for i in range(300)]
    good = [_src(json.dumps({"user_id": f"n{i}", "item_id": "i", "ts": 1}).encode(), 300 + i) for i in range(100)]
    out = _run(bad + good)
    assert len(out.predictions) == 100 and out.stats.dead_letters == {"bad_value": 300}
    for _, value in out.predictions:
        Prediction.from_json(value)


def test_the_key_must_be_the_user_id() -> None:
    body = b'{"user_id": "u1", "item_id": "i", "ts": 1}'
    out = _run([_src(body, 0, b"u1"), _src(body.replace(b'"i"', b'"j"'), 1, b"other"), _src(body, 2, b"")])
    assert len(out.predictions) == 1 and out.stats.dead_letters == {"key_mismatch": 2}
    assert out.updates["u1"].value["items"] == ["i"]  # the state is never split over two keys


def test_a_duplicate_event_id_is_predicted_once_across_batches() -> None:
    body = b'{"user_id": "u", "item_id": "i", "ts": 1, "event_id": "e1"}'
    table: dict[str, Any] = {}
    first = _run([_src(body, 0), _src(body, 1)])
    table.update({u: upd.value for u, upd in first.updates.items()})
    later = _run([_src(body, 2)], table)
    assert len(first.predictions) == 1 and first.stats.dead_letters == {"duplicate_event": 1}
    assert not later.predictions and later.stats.dead_letters == {"duplicate_event": 1}


def test_tracebacks_are_logged_once_per_reason_per_minute(caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.worker.batch as batch

    monkeypatch.setattr(batch, "_tracebacks", batch.RateLimitedLog(batch.log))  # nothing logged before this test
    events = [_src(json.dumps({"user_id": f"u{i}", "item_id": "boom", "ts": 1}).encode(), i) for i in range(50)]
    with caplog.at_level(logging.ERROR, logger="stream.worker.batch"):
        for _ in range(3):
            out = process_batch(events, {}.get, EchoRecommender(fail_on="boom"), None, new_prequential(3), SETTINGS,
                                now=lambda: 1.7e9)
            assert out.stats.dead_letters == {"internal_error": 50}
    tracebacks = [r for r in caplog.records if r.exc_info and r.name == "stream.worker.batch"]
    assert len(tracebacks) == 2  # one for the failed batch pass, one for the 150 failed events
