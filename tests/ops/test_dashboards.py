"""ops/grafana: the provisioning is consistent, every dashboard query reads only declared metrics,
and (with Debian's Prometheus) every panel query returns data when Prometheus scrapes a process
exporting hailstream's metrics: here a small in-test exporter fed with synthetic values, which also
proves the reusable harness in tests/ops/prom_helpers.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.observe.drift import Detection, DriftMonitor, InputDrift
from stream.observe.feed import (
    count_trigger,
    observe_batch,
    observe_drift,
    observe_finetune,
    observe_lag,
    observe_prequential,
    observe_state_cache,
    set_model,
)
from stream.observe.metrics import DRIFT_DETECTORS, Metrics, declared_metric_names, serve_metrics
from stream.worker.prequential import Prequential
from tests.ops.prom_helpers import (
    DASHBOARDS,
    MISSING_PROMETHEUS,
    OPS,
    PROMETHEUS,
    PrometheusServer,
    dashboard_panels,
    dashboard_queries,
    grafana_expr,
    have,
    metric_names,
)

GRAFANA = OPS / "grafana"
ALERTS = OPS / "prometheus" / "alerts.yml"
DATASOURCE_UID = "prometheus"


def test_three_dashboards_with_unique_uids() -> None:
    assert [p.name for p in DASHBOARDS] == ["accuracy-drift.json", "model-lifecycle.json", "throughput-latency.json"]
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == 3 and all(u.startswith("hailstream-") for u in uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_are_well_formed(path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["title"] and data["schemaVersion"] >= 36
    panels = dashboard_panels(path)
    assert len(panels) >= 6
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels:
        assert p["datasource"]["uid"] == DATASOURCE_UID, p["title"]
        assert p["targets"] and all(t["expr"] and t["datasource"]["uid"] == DATASOURCE_UID for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    for a in data["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"]["uid"] == DATASOURCE_UID


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_declared_metric_names(path: Path) -> None:
    declared = declared_metric_names(Metrics())
    for where, expr in dashboard_queries(path, annotations=True):
        names = metric_names(expr)
        assert names, f"{where}: no metric name found in {expr!r}"
        undeclared = names - declared
        assert not undeclared, f"{where} uses undeclared metrics {undeclared}: declare them in stream/observe/metrics.py"


def test_metric_name_check_can_fail() -> None:
    declared = declared_metric_names(Metrics())
    assert metric_names('sum(rate(hailstream_event_consumed_total[$__rate_interval]))') - declared


def test_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "provider.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"


# --- live: a real Prometheus scraping a synthetic exporter ---------------------------------------


class SyntheticExporter:
    """A process-like exporter: hailstream metrics changing every 0.1 s, as a running worker's and
    trainer's would (batches, prequential accuracy, lag, drift, model swaps, fine-tunes)."""

    def __init__(self) -> None:
        self.metrics = Metrics(process="worker")
        self.server = serve_metrics(self.metrics, port=0)
        self.scorers = {name: Prequential(k=10, window=100) for name in ("hail", "popularity", "markov")}
        self.drift = DriftMonitor(InputDrift(reference=20, window=20, check_every=5))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._step = 0
        self._cache: Mapping[str, Any] | None = None

    def tick(self) -> None:
        i = self._step = self._step + 1
        m = self.metrics
        observe_batch(m, events=50, valid=48, predictions=47, duplicates=1, cold=1,
                      dead_letters={"bad_json": 1, "internal_error": i % 2}, latencies=[0.01 * (i % 7), 0.2, 1.5],
                      seconds=0.002 * (i % 5 + 1))
        for n, p in enumerate(self.scorers.values()):
            p.update(["a", "b"], "a" if (i + n) % 3 else "z")
        observe_prequential(m, self.scorers)
        observe_lag(m, {0: 10 + i % 3, 1: 5})
        self._cache = observe_state_cache(m, {"version": "v1", "entries": i, "bytes": 1000 * i, "hits": 3 * i,
                                              "misses": i}, self._cache)
        found = self.drift.update(float(i % 2), f"item{i % 4}" if i < 40 else f"new{i}", i < 40)
        found += [Detection(d, i, 0.1, 0.5) for d in DRIFT_DETECTORS] if i % 10 == 0 else []
        observe_drift(m, self.drift.states(), found)
        if i % 5 == 0:
            set_model(m, f"v{i // 5}", vocab_items=100 + i, swapped=i > 5)
            count_trigger(m, "drift")
            observe_finetune(m, ("promoted", "rejected", "failed")[(i // 5) % 3], 2.0 + i % 3,
                             loss=1.0 / i, candidate_hr=0.3, live_hr=0.25)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.tick()

    def __enter__(self) -> SyntheticExporter:
        self.tick()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


@pytest.fixture(scope="module")
def scraped() -> Iterator[PrometheusServer]:
    if not have(PROMETHEUS):
        pytest.skip(MISSING_PROMETHEUS)
    with SyntheticExporter() as exporter, PrometheusServer(
        {"hailstream-worker": [f"127.0.0.1:{exporter.server.port}"]}, rule_files=[ALERTS]
    ) as prom:
        prom.wait_for('up{job="hailstream-worker"} == 1')
        # rate(), deriv() and changes() need several scrapes of changing values.
        prom.wait_for("count_over_time(hailstream_events_consumed_total[1m]) >= 3")
        yield prom


def test_prometheus_scrapes_the_exporter(scraped: PrometheusServer) -> None:
    (target,) = scraped.active_targets()
    assert target["health"] == "up" and target["labels"]["job"] == "hailstream-worker"
    (sample,) = scraped.query("hailstream_process_info")
    assert sample["metric"]["process"] == "worker"


def test_harness_reports_empty_and_invalid_queries(scraped: PrometheusServer) -> None:
    assert scraped.query("hailstream_no_such_metric") == []
    with pytest.raises(RuntimeError, match="bad_data"):
        scraped.query("sum(rate(x[5m])")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_returns_data(scraped: PrometheusServer, path: Path) -> None:
    empty = [where for where, expr in dashboard_queries(path, annotations=True) if not scraped.query(grafana_expr(expr))]
    assert not empty, f"queries without data: {empty}"


def test_alert_rules_evaluate_without_errors(scraped: PrometheusServer) -> None:
    """ops/prometheus/alerts.yml loaded into the same Prometheus: every rule evaluates (health ok)."""
    deadline = time.monotonic() + 30
    evaluated = scraped.rules()
    while not (evaluated and all(r["health"] != "unknown" for r in evaluated)) and time.monotonic() < deadline:
        time.sleep(0.25)
        evaluated = scraped.rules()
    assert len(evaluated) == sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    assert all(r["health"] == "ok" for r in evaluated), [(r["name"], r.get("lastError")) for r in evaluated]
