"""The run timeline: the writer/reader round trip, torn lines, and what the worker's per-batch code
(:func:`stream.worker.pipeline.handle_batch`, no broker) records: points, drift, a hot swap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.errors import StreamError
from stream.messages import model_message, parse_control
from stream.observe.drift import Detection, DriftMonitor, InputDrift
from stream.observe.metrics import Metrics
from stream.observe.timeline import Timeline, read_timeline
from stream.settings import Settings
from stream.trainer.model_store import ModelStore
from stream.worker.batch import MODEL_SCORER, Source
from stream.worker.monitor import WorkerMonitor
from stream.worker.pipeline import handle_batch
from stream.worker.prequential import Prequential
from stream.worker.recommender import OnlineRecommender
from stream.worker.runtime import build_runtime

ITEMS = "abcdef"


def _preq() -> dict[str, Prequential]:
    preq = {"hail": Prequential(10, window=4), "markov": Prequential(10, window=4)}
    preq["hail"].update(["a"], "a")
    preq["hail"].update(["a"], "b")
    return preq


def test_round_trip_of_every_record_kind(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "timeline.jsonl"
    preq = _preq()
    clock = iter(range(100, 200))
    with Timeline(path, every=10, version="v1", clock=lambda: float(next(clock))) as tl:
        tl.after_batch(6, "v1", preq)  # below the first multiple of 10: no point
        tl.after_batch(6, "v1", preq, [Detection("accuracy", 12, 0.1, 0.4)])
        tl.after_batch(25, "v2", preq, reason="drift")
        tl.finish(preq)  # nothing after the last point: no extra point
    records = read_timeline(path)
    assert [(r["kind"], r["events"]) for r in records] == [
        ("drift", 12), ("point", 12), ("version", 12), ("point", 37)]
    drift, point, version, last = records
    assert drift == {"kind": "drift", "t": 100.0, "events": 12, "detector": "accuracy", "at_event": 12,
                     "value": 0.1, "baseline": 0.4, "direction": "down"}
    assert point["version"] == "v1" and point["k"] == 10
    assert point["window"] == {"hail": {"n": 2, "hr@10": 0.5, "ndcg@10": 0.5}, "markov": {"n": 0, "hr@10": 0.0, "ndcg@10": 0.0}}
    assert version == {"kind": "version", "t": 102.0, "events": 12, "old": "v1", "new": "v2", "reason": "drift"}
    assert last["version"] == "v2"
    assert all(line.endswith("}") for line in path.read_text().splitlines())  # one record per line


def test_finish_writes_a_last_point_for_the_events_after_the_latest_one(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tl = Timeline(path, every=10)
    tl.after_batch(12, "v1", _preq())
    tl.after_batch(9, "v1", _preq())
    assert tl.written["point"] == 1  # never two points less than `every` events apart
    tl.finish(_preq())
    tl.close()  # idempotent
    assert [(r["kind"], r["events"]) for r in read_timeline(path)] == [("point", 12), ("point", 21)]
    with pytest.raises(StreamError, match="closed"):
        tl.point(_preq())


def test_a_torn_last_line_is_skipped_and_a_restarted_writer_continues(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with Timeline(path, every=10) as tl:
        tl.after_batch(10, "v1", _preq())
    with open(path, "a") as f:
        f.write('{"kind": "point", "events": 2')  # a worker killed mid-write
    assert [r["events"] for r in read_timeline(path)] == [10]
    with Timeline(path, every=10) as tl:  # the torn line stays a line of its own
        assert tl.events == 10
        tl.after_batch(10, "v1", _preq())
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["events"] == 20
    assert [r["events"] for r in read_timeline(path)] == [10, 20]  # the torn line in the middle is skipped


def test_missing_or_foreign_files_raise_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StreamError, match="hailstream demo") as err:
        read_timeline(tmp_path / "nope.jsonl")
    assert "--timeline" in str(err.value)
    with pytest.raises(StreamError, match="directory"):
        read_timeline(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(StreamError, match="no timeline records"):
        read_timeline(tmp_path / "x.csv")
    (tmp_path / "empty.jsonl").write_text("")
    assert read_timeline(tmp_path / "empty.jsonl") == []
    with pytest.raises(StreamError, match=">= 1"):
        Timeline(tmp_path / "t.jsonl", every=0)


def _model(rows: int, seed: int) -> HAIL:
    torch.manual_seed(seed)
    return HAIL(HailConfig(n_peers=2, hidden=16, layers=1, max_len=20, seed=seed), rows)


def _event(i: int, item: str) -> Source:
    raw = json.dumps({"user_id": f"u{i % 10}", "item_id": item, "ts": float(i)}).encode()
    return Source(raw, "in", 0, i)


def test_the_worker_batch_code_records_points_drift_and_a_hot_swap(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.add(_model(len(ITEMS) + 1, 0), ItemVocab(ITEMS), status="promoted")
    store.add(_model(len(ITEMS) + 1, 1), ItemVocab(ITEMS), status="promoted", parent=1)
    settings = Settings(top_k=10, model_dir=tmp_path / "models")
    rec = OnlineRecommender(store.load(1).model, store.load(1).vocab, "v1")
    metrics = Metrics(process_collector=False)
    runtime = build_runtime(settings, rec, metrics=metrics, offload=False, prequential_window=100)
    assert runtime.swapper is not None and runtime.baselines is not None
    # A detector that sees the switch to unknown items below within a few hundred events.
    runtime.monitor = WorkerMonitor(metrics, runtime.prequential,
                                    DriftMonitor(InputDrift(reference=200, window=200, check_every=50)), interval=0.0)
    runtime.timeline = Timeline(tmp_path / "timeline.jsonl", every=100, version=rec.version)
    table: dict[str, Any] = {}
    info = store.get(2)
    announce = parse_control(model_message(info.label, info.version, store.checkpoint_path(2), info.sha256,
                                           reason="drift"))
    assert announce is not None
    for b in range(20):  # 1000 events in batches of 50; unknown items from event 500 on
        batch = [_event(i, ITEMS[i % 6] if i < 500 else f"new{i % 40}") for i in range(50 * b, 50 * b + 50)]
        result = handle_batch(runtime, settings, batch, table.get).result
        assert result is not None
        for user, upd in result.updates.items():
            table[user] = upd.value
        if b == 12:  # announced while batch 13 waits: batch 13 is the first served by v2
            assert runtime.swapper.apply(announce)
    runtime.timeline.finish(runtime.prequential)

    records = read_timeline(tmp_path / "timeline.jsonl")
    points = [r for r in records if r["kind"] == "point"]
    assert [p["events"] for p in points] == list(range(100, 1001, 100))
    assert set(points[-1]["window"]) == {MODEL_SCORER, *runtime.baselines.names}
    assert points[-1]["window"][MODEL_SCORER]["n"] == 100  # the prequential window is full
    assert [p["version"] for p in points] == ["v1"] * 6 + ["v2"] * 4
    versions = [r for r in records if r["kind"] == "version"]
    assert [(v["old"], v["new"], v["events"], v.get("reason")) for v in versions] == [("v1", "v2", 650, "drift")]
    drifts = [r for r in records if r["kind"] == "drift"]
    assert drifts and all(d["events"] > 500 for d in drifts)
    assert "input_unseen" in {d["detector"] for d in drifts}
    assert len(drifts) == len(runtime.monitor.detections)


def test_a_failing_timeline_is_dropped_and_the_worker_goes_on(tmp_path: Path) -> None:
    vocab = ItemVocab(ITEMS)
    rec = OnlineRecommender(_model(vocab.rows, 0), vocab, "v1")
    settings = Settings(top_k=10)
    runtime = build_runtime(settings, rec, offload=False)
    runtime.timeline = Timeline(tmp_path / "t.jsonl", every=1)
    runtime.timeline.close()  # as if the disk went away: every write fails
    result = handle_batch(runtime, settings, [_event(0, "a"), _event(1, "b")], lambda u: None).result
    assert result.stats.predictions == 2 and runtime.timeline is None
