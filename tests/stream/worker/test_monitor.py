"""Per-batch observability: process_batch's per-event record, metrics, and drift detections."""

from __future__ import annotations

import json

import numpy as np

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.observe.drift import AccuracyDrift, DriftMonitor, InputDrift
from stream.observe.metrics import Metrics
from stream.settings import Settings
from stream.worker.batch import BatchStats, Source, new_prequential, process_batch
from stream.worker.monitor import WorkerMonitor
from stream.worker.prequential import Prequential
from stream.worker.recommender import OnlineRecommender


def _raw(user: str, item: str) -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "ts": 1.0}).encode()


def test_process_batch_records_hit_item_and_known_per_valid_event() -> None:
    vocab = ItemVocab(["a", "b"])
    rec = OnlineRecommender(HAIL(HailConfig(hidden=8, layers=1, max_len=4, dropout=0.0), vocab.rows), vocab, "v1")
    batch = [Source(_raw("u", "a"), "t", 0, 0), Source(b"{bad", "t", 0, 1), Source(_raw("u", "b"), "t", 0, 2),
             Source(_raw("u", "new"), "t", 0, 3)]
    out = process_batch(batch, lambda u: None, rec, None, new_prequential(10), Settings(top_k=10))
    # first event cold; "b" is in any top-10 of a 2-item vocabulary; "new" is not servable
    assert out.stats.per_event == [(None, "a", True), (1.0, "b", True), (0.0, "new", False)]


def test_monitor_counts_and_detects_an_accuracy_drop() -> None:
    metrics = Metrics(process_collector=False)
    preq = {"hail": Prequential(10)}
    drift = DriftMonitor(InputDrift(reference=200, window=200, check_every=50), AccuracyDrift())
    mon = WorkerMonitor(metrics, preq, drift, interval=0.0)
    rng = np.random.default_rng(0)
    found = []
    for n in range(40):  # 4000 events: hit rate 0.6, then 0.1
        p = 0.6 if n < 20 else 0.1
        stats = BatchStats(events=100, valid=100, predictions=100,
                           per_event=[(float(rng.random() < p), f"i{rng.integers(50)}", True) for _ in range(100)])
        found += mon.after_batch(stats, seconds=0.01)
    assert [d.detector for d in found] == ["accuracy"]
    assert 2000 < found[0].at_event < 2600
    assert metrics.value("hailstream_drift_detections_total", detector="accuracy") == 1.0
    assert metrics.value("hailstream_events_consumed_total") == 4000.0
    assert metrics.value("hailstream_drift_statistic_ratio", detector="accuracy") < 0.3
    assert metrics.value("hailstream_prequential_window_hr_ratio", scorer="hail") == 0.0  # nothing scored here
    mon.observe_lag({0: 5, 1: 0})
    assert metrics.value("hailstream_consumer_lag_messages", partition="0") == 5.0


def test_monitor_detects_new_items_as_input_drift() -> None:
    mon = WorkerMonitor(Metrics(process_collector=False), {"hail": Prequential(10)},
                        DriftMonitor(InputDrift(reference=300, window=300, check_every=50)), interval=0.0)
    found = []
    for n in range(20):
        known = n < 10
        stats = BatchStats(events=100, valid=100,
                           per_event=[(None, f"{'old' if known else 'new'}{i % 30}", known) for i in range(100)])
        found += mon.after_batch(stats)
    assert [d.detector for d in found][:1] == ["input_unseen"]


def test_monitor_exports_the_incremental_cache_and_counts_lookups_across_a_swap() -> None:
    vocab = ItemVocab([f"i{n}" for n in range(1, 20)])

    def model(seed: int) -> HAIL:
        return HAIL(HailConfig(hidden=8, layers=1, max_len=6, dropout=0.0, positions="start", seed=seed), vocab.rows)

    rec = OnlineRecommender(model(0), vocab, "v1", state_cache=100)
    metrics = Metrics(process_collector=False)
    mon = WorkerMonitor(metrics, {"hail": Prequential(10)}, interval=0.0, cache_stats=rec.cache_stats)
    empty = BatchStats(events=0, valid=0, predictions=0, per_event=[])
    mon.after_batch(empty, seconds=0.0)
    assert metrics.value("hailstream_state_cache_lookups_total", outcome="hit") == 0.0
    rec.recommend_batch([["i1"], ["i5", "i6"]], 3)             # two full encodes
    rec.recommend_batch([["i1", "i2"], ["i5", "i6", "i7"]], 3)  # both stepped from the cache
    mon.after_batch(empty, seconds=0.0)
    inc = rec.incremental()
    assert inc is not None and (inc.hits, inc.misses) == (2, 2)
    assert metrics.value("hailstream_state_cache_lookups_total", outcome="hit") == 2.0
    assert metrics.value("hailstream_state_cache_lookups_total", outcome="miss") == 2.0
    assert metrics.value("hailstream_state_cache_entries") == 2.0
    assert metrics.value("hailstream_state_cache_bytes") == float(inc.state_bytes) > 0
    rec.swap(model(1), vocab, "v2")  # a new version starts an empty cache; the counters go on
    rec.recommend_batch([["i1", "i2", "i3"]], 3)
    mon.after_batch(empty, seconds=0.0)
    assert metrics.value("hailstream_state_cache_lookups_total", outcome="miss") == 3.0
    assert metrics.value("hailstream_state_cache_lookups_total", outcome="hit") == 2.0
    assert metrics.value("hailstream_state_cache_entries") == 1.0
