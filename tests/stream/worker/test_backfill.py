"""Backfill events (DESIGN §4, ``"backfill": true``) in :func:`stream.worker.batch.process_batch`:
they extend the user's history and teach the baselines, but are never scored or predicted, and
what they teach shows in the predictions and prequential scores of the events after them."""

from __future__ import annotations

from typing import Any

import pytest

from stream.records import Interaction, InvalidEvent, Prediction, parse_interaction
from stream.settings import Settings
from stream.snapshots import MODEL_SCORER
from stream.worker.batch import Source, new_prequential, process_batch
from stream.worker.recommender import OnlineBaselines
from tests.stream.worker.test_batch import EchoRecommender

SETTINGS = Settings(top_k=3, max_seq_len=8)


def ev(user: str, item: str, n: int, backfill: bool = False) -> bytes:
    return Interaction(user, item, float(n), f"e{n}", backfill=backfill).to_json()


def run(batches: list[list[bytes]], baselines: OnlineBaselines | None = None) -> tuple[list[Any], dict[str, Any], Any]:
    rec, table, preq, outs, offset = EchoRecommender(), {}, new_prequential(SETTINGS.top_k, baselines), [], 0
    for raws in batches:
        batch = [Source(r, "in", 0, offset + i) for i, r in enumerate(raws)]
        offset += len(raws)
        out = process_batch(batch, table.get, rec, baselines, preq, SETTINGS)
        table.update({u: upd.value for u, upd in out.updates.items()})
        outs.append(out)
    return outs, table, (preq, rec)


PAST = [ev("u", "a", 0, True), ev("u", "a", 1, True), ev("u", "a", 2, True), ev("u", "b", 3, True)]
LIVE = [ev("u", "c", 4), ev("u", "a", 5)]


def test_backfill_events_are_applied_but_not_scored_or_predicted() -> None:
    (out,), table, (preq, rec) = run([PAST], OnlineBaselines())
    assert out.predictions == [] and out.dead_letters == [] and rec.calls == 0  # no forward pass at all
    assert out.stats.backfilled == len(PAST) == out.stats.valid and out.stats.predictions == out.stats.cold == 0
    assert out.stats.per_event == []  # the drift detectors see nothing either
    assert table["u"]["items"] == ["a", "a", "a", "b"] and table["u"]["pred"] is None and "last" not in table["u"]
    assert all(p.summary()["n"] == 0 and p.summary()["cold"] == 0 for p in preq.values())


@pytest.mark.parametrize("one_batch", [True, False], ids=["one-batch", "batch-per-event"])
def test_backfill_changes_the_later_predictions_and_baseline_scores(one_batch: bool) -> None:
    def scores(batches: list[list[bytes]]) -> tuple[list[Prediction], dict[str, dict[str, Any]]]:
        outs, _, (preq, _) = run(batches, OnlineBaselines())
        preds = [Prediction.from_json(v) for out in outs for _, v in out.predictions]
        return preds, {name: p.summary() for name, p in preq.items()}

    split = (lambda raws: [raws]) if one_batch else (lambda raws: [[r] for r in raws])
    with_past, cold = scores(split(PAST + LIVE)), scores(split(LIVE))
    # The live events only are predicted and scored, in both runs ...
    assert [p.event_id for p in with_past[0]] == [p.event_id for p in cold[0]] == ["e4", "e5"]
    for run_scores in (with_past[1], cold[1]):
        assert all((s["n"], s["cold"]) == (1, 1) for s in run_scores.values()), run_scores
    # ... but the history the backfill seeded is in the model's input ...
    assert with_past[0][0].items == ["c", "b", "a"] and cold[0][0].items == ["c"]
    # ... so the event after is a hit for the model and for the user's frequency baseline, a miss without it.
    assert with_past[1][MODEL_SCORER]["hr@3"] == 1.0 and cold[1][MODEL_SCORER]["hr@3"] == 0.0
    assert with_past[1]["user-frequency"]["hr@3"] == 1.0 and cold[1]["user-frequency"]["hr@3"] == 0.0


def test_a_backfill_event_keeps_the_prediction_before_it() -> None:
    # A live event, then a backfill event of the same user, then a live one: in one batch or in three,
    # the last event is scored against the prediction made after the first.
    raws = [ev("u", "a", 0), ev("u", "b", 1, True), ev("u", "a", 2)]
    for batches in ([raws], [[r] for r in raws]):
        outs, table, (preq, _) = run(batches)
        preds = [Prediction.from_json(v) for out in outs for _, v in out.predictions]
        assert [p.event_id for p in preds] == ["e0", "e2"] and preds[0].items == ["a"]
        s = preq[MODEL_SCORER].summary()
        assert (s["n"], s["cold"], s["hr@3"]) == (1, 1, 1.0)
        assert table["u"]["items"] == ["a", "b", "a"] and table["u"]["last"]["event_id"] == "e2"


def test_backfill_on_the_wire() -> None:
    assert parse_interaction(ev("u", "a", 1, True)).backfill is True
    assert b"backfill" not in ev("u", "a", 1) and parse_interaction(ev("u", "a", 1)).backfill is False
    assert parse_interaction(b'{"user_id": "u", "item_id": "a", "ts": 1, "backfill": null}').backfill is False
    with pytest.raises(InvalidEvent, match="wrong_type"):
        parse_interaction(b'{"user_id": "u", "item_id": "a", "ts": 1, "backfill": "yes"}')
