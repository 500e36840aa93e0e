"""A real demo scraped by a real Prometheus: every panel and annotation query of every Grafana
dashboard returns data, and every metric name they use is declared in stream/observe/metrics.py.

The test starts the session broker (fixture) and Debian's Prometheus on 127.0.0.1 scraping the
demo's worker and trainer every second (job names as in ops/prometheus/prometheus.yml, which the
dashboards' ``job=~"hailstream-worker.*"`` filters expect), then runs ``hailstream demo --drift``
with a tiny model briefly trained on the end of block T0, produces a few malformed events while it
runs (dead letters by reason), and lets it linger so that Prometheus scrapes the end of the run.
Every query is then asked over the run's time span (a range query, as a panel draws it) with
Grafana's variables substituted. The same run checks the drift scenario end to end: the summary's
shift position, detections, fine-tunes and promotions, and a drift record in the timeline.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

import tests.integration.conftest as integration
from models.checkpoint import save_checkpoint
from models.data import load_dataset
from models.hail import HailConfig
from models.splits import leave_last_out
from models.trainer import TrainConfig, train
from stream.cli.procs import child_env, hailstream_argv
from stream.kafka.clients import make_producer
from stream.kafka.topics import delete_topics
from stream.observe.metrics import Metrics, declared_metric_names
from stream.observe.timeline import TIMELINE_FILE, read_timeline
from tests.data import needs_nyc
from tests.ops.prom_helpers import (
    DASHBOARDS,
    MISSING_PROMETHEUS,
    PROMETHEUS,
    PrometheusError,
    PrometheusServer,
    dashboard_queries,
    free_port,
    grafana_expr,
    have,
    metric_names,
)

pytestmark = [pytest.mark.integration, needs_nyc]

broker = integration.broker  # the session's embedded broker (tests/integration/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4000
DRIFT_AT = 2000
RATE = 200
LINGER = 8
#: Grafana's $__rate_interval for a 1 s scrape interval: 4 scrape intervals.
RATE_INTERVAL = "4s"
MALFORMED = {"bad_json": b"{not json", "not_object": b"[1, 2]", "missing_field": b'{"user_id": "u1"}'}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-peer HAIL (hidden 16, 1 layer, max_len 20) trained for a few epochs on the last
    10,000 events of block T0: accurate enough (HR@10 ~0.1) that the shift visibly hurts it."""
    torch.set_num_threads(1)
    ev = load_dataset("foursquare-nyc")
    t0 = ev.take(ev.block == "T0")
    split = leave_last_out(t0.take(slice(len(t0) - 10_000, len(t0))))
    cfg = HailConfig(n_peers=2, hidden=16, layers=1, max_len=20, dropout=0.1)
    model = train(split, cfg, TrainConfig(epochs=6, batch_size=64, lr=3e-3, progress=False, threads=1)).model
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", model, split.vocab, {"version": "1"})


def _produce_malformed(bootstrap: str, topic: str) -> None:
    from stream.settings import Settings

    producer = make_producer(Settings.from_env({}, bootstrap_servers=bootstrap), linger_ms=0)
    try:
        for reason, value in MALFORMED.items():
            producer.send(topic, key=reason.encode(), value=value).get(timeout=30)
    finally:
        producer.close(timeout=5)


def test_every_dashboard_query_returns_data_from_a_real_demo(
    broker: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    if not have(PROMETHEUS):
        pytest.skip(MISSING_PROMETHEUS)
    # Every drop counts as drift here (the default ignores drops under 12.5% of the hit rate), and
    # ADWIN cuts sooner (delta 0.05, default 0.002): the tiny model's hit rate is ~0.1 before the
    # shift, and this test needs a detection on the dashboards, not a judgement of the detector
    # (tests/stream/test_drift.py has those). With the default delta one full-suite run (2026-12-08)
    # saw none: the candidates promoted after the shift slowed the drop (0.15 to 0.01 over ~1,200
    # events), and the 2,000 events after it ended before ADWIN had enough evidence.
    settings = integration.unique_settings(broker, drift_min_drop=0.0, adwin_delta=0.05)
    wport, tport = free_port(), free_port()
    summary_path = tmp_path / "summary.json"
    env = {**child_env(settings), "PYTHONPATH": str(ROOT)}
    cmd = [*hailstream_argv(), "demo", "--drift", "--drift-at", str(DRIFT_AT), "--limit", str(LIMIT),
           "--max-rate", str(RATE), "--checkpoint", str(tiny_checkpoint), "--bootstrap-servers", broker,
           "--metrics-port", str(wport), "--trainer-metrics-port", str(tport), "--linger", str(LINGER),
           "--summary-json", str(summary_path), "--quiet", "--model-dir", str(tmp_path / "hailstream-models"),
           # the gate promotes every candidate, so the run always has a version change to show
           "--trainer-tolerance", "1"]
    log = tmp_path / "demo.log"
    with PrometheusServer({"hailstream-worker": [f"127.0.0.1:{wport}"],
                           "hailstream-trainer": [f"127.0.0.1:{tport}"]}, scrape_interval="1s") as prom:
        start = time.time()
        with open(log, "wb") as out:
            demo = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                prom.wait_for('up{job="hailstream-worker"} == 1', timeout=90)
            except PrometheusError:
                pytest.fail(f"the demo's worker was never scraped:\n{log.read_text()[-3000:]}")
            _produce_malformed(broker, settings.interactions_topic)
            rc = demo.wait(timeout=200)
        finally:
            if demo.poll() is None:
                demo.terminate()
                demo.wait(30)
            delete_topics(settings)
        end = time.time()
        assert rc == 0, log.read_text()[-4000:]
        summary = json.loads(summary_path.read_text())
        span = f"{int(end - start) + 1}s"

        # The drift scenario ran end to end, with real counts.
        run_dir = Path(summary["run_dir"])
        assert summary["complete"] and summary["published"] == LIMIT and summary["drift_at"] == DRIFT_AT
        assert summary["drift_detections"] >= 1 and summary["finetunes"] >= 1
        assert summary["promotions"] == summary["finetunes"] - summary["failed_finetunes"] >= 1
        assert len(summary["model_versions_served"]) >= 2 and summary["swaps"] >= 1
        assert set(summary["dead_letter_reasons"]) >= set(MALFORMED), summary["dead_letter_reasons"]
        assert any(r["kind"] == "drift" for r in read_timeline(run_dir / TIMELINE_FILE))
        for name in ("worker", "trainer"):
            assert "Traceback" not in (run_dir / f"{name}.log").read_text(), name

        # Both processes were scraped, under the job names the dashboards filter on.
        for job in ("hailstream-worker", "hailstream-trainer"):
            assert prom.query_range(f'max_over_time(up{{job="{job}"}}[{span}]) == 1', end, end), job

        # the check below can fail: a query on a series that does not exist is empty over the run
        assert not prom.query_range("hailstream_no_such_metric", start, end, 1)
        empty, undeclared, unseen = [], {}, set()
        declared = declared_metric_names(Metrics())
        for path in DASHBOARDS:
            for where, expr in dashboard_queries(path, annotations=True):
                names = metric_names(expr)
                if names - declared:
                    undeclared[where] = names - declared
                unseen |= {n for n in names if not prom.query_range(f'count({{__name__="{n}"}})', start, end, 1)}
                if not prom.query_range(grafana_expr(expr, rate_interval=RATE_INTERVAL, range_=span), start, end, 1):
                    empty.append(f"{where}: {expr}")
        assert not undeclared, f"dashboards use metrics not declared in stream/observe/metrics.py: {undeclared}"
        assert not unseen, f"declared metrics the dashboards use but the demo never exported: {sorted(unseen)}"
        assert not empty, "queries without data in a real demo run:\n" + "\n".join(empty)
