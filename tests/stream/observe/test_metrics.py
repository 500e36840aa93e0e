"""The metrics module: names and types declared once, bounded labels, helpers that match the
worker's records, and a real ``/metrics`` endpoint."""

from __future__ import annotations

import ast
import socket
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.errors import StreamError
from stream.messages import version_number
from stream.observe import metrics as M
from stream.observe.drift import Detection, DriftMonitor, InputDrift
from stream.observe.feed import (
    count_trigger,
    observe_batch,
    observe_batch_stats,
    observe_drift,
    observe_finetune,
    observe_lag,
    observe_prequential,
    set_model,
)
from stream.observe.metrics import (
    ALLOWED_LABELS,
    Metrics,
    declared_families,
    declared_metric_names,
    serve_metrics,
)
from stream.worker.batch import BatchStats
from stream.worker.prequential import Prequential

ROOT = Path(__file__).resolve().parents[3]
METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
# Unit (or kind) suffixes a gauge/histogram name may end with.
UNITS = ("_seconds", "_ratio", "_messages", "_events", "_items", "_version", "_k", "_loss", "_bytes", "_entries")


def declarations() -> list[tuple[str, str]]:
    """(class, name) of every prometheus_client metric constructed in stream/observe/metrics.py."""
    tree = ast.parse((ROOT / "stream" / "observe" / "metrics.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in METRIC_CLASSES:
            first = node.args[0]
            assert isinstance(first, ast.Constant), "metric names are literals, so they can be grepped"
            out.append((node.func.id, str(first.value)))
    return out


def test_every_metric_is_declared_once_with_a_conventional_name() -> None:
    decl = declarations()
    dupes = [n for n, c in Counter(n for _, n in decl).items() if c > 1]
    assert not dupes, f"declared more than once: {dupes}"
    for cls, name in decl:
        assert name.startswith("hailstream_"), name
        if cls == "Counter":
            assert name.endswith("_total"), name
        elif cls == "Info":
            assert not name.endswith("_info"), "prometheus_client appends _info itself"
        else:
            assert name.endswith(UNITS), f"{name}: end the name with its unit ({', '.join(UNITS)})"
            assert not name.endswith("_total"), f"{name}: only counters end in _total"
    families = declared_families(Metrics())
    assert {n.removesuffix("_total") for _, n in decl} == set(families)


def test_no_other_module_declares_metrics() -> None:
    for path in list((ROOT / "stream").rglob("*.py")) + list((ROOT / "models").rglob("*.py")):
        if path.name == "metrics.py" and path.parent.name == "observe":
            continue
        text = path.read_text()
        assert "prometheus_client" not in text, f"{path}: declare metrics in stream/observe/metrics.py and import them"


def test_labels_are_bounded() -> None:
    m = Metrics()
    # Create a child of every labelled metric so that its label names show in the samples.
    observe_lag(m, {0: 1})
    observe_prequential(m, {"hail": Prequential(10)})
    observe_drift(m, DriftMonitor().states())
    observe_finetune(m, "promoted", 1.0, candidate_hr=0.3, live_hr=0.2)
    for name, (kind, labels) in declared_families(m).items():
        if kind == "info":
            assert "process" in labels
            continue
        assert set(labels) <= ALLOWED_LABELS, f"{name} has labels {labels}: no per-user or per-item label"
    assert "user" not in str(declared_families(m)) and "item_id" not in str(declared_families(m))


def test_fresh_registries_coexist() -> None:
    a, b = Metrics(), Metrics(process="trainer")
    observe_batch(a, events=5, predictions=5)
    assert a.value("hailstream_events_consumed_total") == 5.0
    assert b.value("hailstream_events_consumed_total") == 0.0
    (info,) = [s for f in b.registry.collect() if f.name == "hailstream_process" for s in f.samples]
    assert info.labels["process"] == "trainer" and info.labels["app_id"] == "hailstream" and info.labels["version"]


def test_declared_names_include_exposition_suffixes() -> None:
    names = declared_metric_names(Metrics())
    for n in [
        "hailstream_events_consumed_total",
        "hailstream_dead_letters_total",
        "hailstream_prediction_latency_seconds_bucket",
        "hailstream_prediction_latency_seconds_sum",
        "hailstream_prediction_latency_seconds_count",
        "hailstream_consumer_lag_messages",
        "hailstream_prequential_window_hr_ratio",
        "hailstream_process_info",
        "process_resident_memory_bytes",
    ]:
        assert n in names, n
    assert "hailstream_events_consumed" not in names  # the bare family name is never exposed
    assert "process_resident_memory_bytes" not in declared_metric_names(Metrics(process_collector=False))


def test_observe_batch_stats_from_the_worker_record() -> None:
    m = Metrics()
    stats = BatchStats(events=10, valid=8, predictions=7, duplicates=1, cold=2,
                       dead_letters=Counter({"bad_json": 1, "internal_error": 1}), latencies=[0.02, 0.2, -0.01])
    observe_batch_stats(m, stats, seconds=0.03)
    observe_batch_stats(m, BatchStats(events=2, valid=2, predictions=2))
    v = m.value
    assert v("hailstream_events_consumed_total") == 12
    assert v("hailstream_predictions_published_total") == 9
    assert v("hailstream_duplicates_skipped_total") == 1
    assert v("hailstream_cold_events_total") == 2
    assert v("hailstream_dead_letters_total", reason="bad_json") == 1
    assert v("hailstream_dead_letters_total", reason="internal_error") == 1
    assert v("hailstream_dead_letters_total", reason="oversized") == 0  # known reasons exist as 0
    assert v("hailstream_prediction_latency_seconds_count") == 3
    assert v("hailstream_prediction_latency_seconds_bucket", le="0.005") == 1  # the skewed one, as 0
    assert v("hailstream_prediction_latency_seconds_sum") == pytest.approx(0.22)
    assert v("hailstream_batch_size_events_count") == 2 and v("hailstream_batch_size_events_sum") == 12
    assert v("hailstream_batch_processing_seconds_count") == 1  # only the batch that was timed
    assert v("hailstream_last_batch_timestamp_seconds") > 0  # type: ignore[operator]
    with pytest.raises(StreamError):
        observe_batch(m, events=-1)


def test_observe_prequential_lag_and_drift() -> None:
    m = Metrics()
    hail, pop = Prequential(k=10, window=2), Prequential(k=10, window=2)
    for pred, actual in [(["a"], "a"), (["b"], "x"), (["c"], "c")]:
        hail.update(pred, actual)
        pop.update(["z"], actual)
    observe_prequential(m, {"hail": hail, "popularity": pop})
    assert m.value("hailstream_prequential_window_hr_ratio", scorer="hail") == 0.5
    assert m.value("hailstream_prequential_hr_ratio", scorer="hail") == pytest.approx(2 / 3)
    assert m.value("hailstream_prequential_window_ndcg_ratio", scorer="popularity") == 0.0
    assert m.value("hailstream_prequential_window_mrr_ratio", scorer="hail") == 0.5
    assert m.value("hailstream_prequential_scored_events", scorer="hail") == 3
    assert m.value("hailstream_prequential_k") == 10

    observe_lag(m, {0: 5, 3: -2})
    assert m.value("hailstream_consumer_lag_messages", partition="0") == 5
    assert m.value("hailstream_consumer_lag_messages", partition="3") == 0

    mon = DriftMonitor(InputDrift(reference=4, window=4, check_every=1, persistence=1))
    found = []
    for item in "aaaazzzz":
        found += mon.update(1.0, item, item == "a")
    observe_drift(m, mon.states(), found, now=123.0)
    assert m.value("hailstream_drift_detections_total", detector="input_unseen") == 1
    assert m.value("hailstream_drift_detections_total", detector="accuracy") == 0
    assert m.value("hailstream_drift_last_detection_timestamp_seconds", detector="input_unseen") == 123.0
    assert m.value("hailstream_drift_statistic_ratio", detector="accuracy") == 1.0
    assert m.value("hailstream_drift_window_events", detector="input_unseen") is not None
    observe_drift(m, [], [Detection("accuracy", 9, 0.1, 0.5)])
    assert m.value("hailstream_drift_detections_total", detector="accuracy") == 1


def test_model_lifecycle_helpers() -> None:
    m = Metrics(process="trainer")
    set_model(m, "v3", vocab_items=100, now=50.0)
    set_model(m, "v4", vocab_items=120, swapped=True)
    assert m.value("hailstream_model_version") == 4
    assert m.value("hailstream_vocabulary_items") == 120
    assert m.value("hailstream_model_swaps_total") == 1
    count_trigger(m, "drift")
    observe_finetune(m, "promoted", 12.5, loss=3.2, candidate_hr=0.31, live_hr=0.25)
    observe_finetune(m, "failed", 1.0)
    assert m.value("hailstream_finetune_triggers_total", reason="drift") == 1
    assert m.value("hailstream_finetune_triggers_total", reason="schedule") == 0
    assert m.value("hailstream_finetunes_total", outcome="promoted") == 1
    assert m.value("hailstream_finetunes_total", outcome="failed") == 1
    assert m.value("hailstream_finetunes_total", outcome="rejected") == 0
    assert m.value("hailstream_finetune_duration_seconds_count") == 2
    assert m.value("hailstream_finetune_loss") == 3.2
    assert m.value("hailstream_finetune_validation_hr_ratio", scorer="candidate") == 0.31
    with pytest.raises(StreamError, match="outcome"):
        observe_finetune(m, "great", 1.0)
    with pytest.raises(StreamError, match="reason"):
        count_trigger(m, "whim")


@pytest.mark.parametrize(("version", "number"), [("v12", 12), ("17", 17), ("2.5", 2.5), ("ft-0007", 7), ("x", 0), (4, 4)])
def test_version_number(version: str | int, number: float) -> None:
    assert version_number(version) == number


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_serve_metrics_exposes_every_declared_family() -> None:
    m = Metrics()
    observe_batch(m, events=4, predictions=3, dead_letters={"bad_json": 1}, latencies=[0.1], seconds=0.01)
    observe_lag(m, {1: 7})
    with serve_metrics(m, port=0) as srv:
        assert srv.bind == "127.0.0.1" and srv.port > 0 and srv.url.endswith("/metrics")
        body = get(srv.url)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name, (kind, _) in declared_families(m).items():
        exposed = name + "_info" if kind == "info" else name  # the text format has no info type
        assert exposed in families, f"{name} missing from /metrics"
    declared = declared_metric_names(m)
    samples = {s.name for f in families.values() for s in f.samples}
    assert samples <= declared, samples - declared
    assert "hailstream_consumer_lag_messages{partition=\"1\"} 7.0" in body
    with pytest.raises(urllib.error.URLError):
        get(srv.url)  # closed


def test_serve_metrics_port_in_use_says_what_to_do() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StreamError, match="HAILSTREAM_METRICS_PORT"):
            serve_metrics(Metrics(), port=port)


def test_module_constants_are_consistent() -> None:
    assert "internal_error" in M.DEAD_LETTER_REASONS
    assert set(M.DRIFT_DETECTORS) == {s.detector for s in DriftMonitor().states()}
