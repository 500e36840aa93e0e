"""ops/prometheus: promtool accepts the config and the rules, the alert unit tests pass, and every
metric the rules read is declared in stream/observe/metrics.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from stream.observe.metrics import Metrics, declared_metric_names
from tests.ops.prom_helpers import MISSING_PROMETHEUS, OPS, PROMTOOL, ROOT, have, metric_names

PROM_DIR = OPS / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "ops" / "alerts_test.yml"
#: Alerts the issue asks for (accuracy drop, drift, consumer lag, no predictions, dead letters, fine-tune failures).
REQUIRED_ALERTS = {
    "HailstreamAccuracyDrop", "HailstreamDriftDetected", "HailstreamConsumerLagHigh", "HailstreamNoPredictions",
    "HailstreamDeadLetterRateHigh", "HailstreamFinetuneFailed",
}

needs_promtool = pytest.mark.skipif(not have(PROMTOOL), reason=MISSING_PROMETHEUS)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def alert_rules() -> list[dict]:
    data = yaml.safe_load(ALERTS.read_text())
    return [r for g in data["groups"] for r in g["rules"]]


@needs_promtool
def test_promtool_check_config() -> None:
    r = promtool("check", "config", CONFIG)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr


@needs_promtool
def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", ALERTS)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_alert_unit_tests() -> None:
    """tests/ops/alerts_test.yml: each alert fires on the series that should trigger it, with the
    labels and annotations an operator reads, and stays silent on healthy series."""
    r = promtool("test", "rules", ALERT_TESTS)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The checks above can fail: promtool refuses a rule with a PromQL error."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(x[5m])\n")
    assert promtool("check", "rules", bad).returncode != 0


def test_rules_use_only_declared_metrics() -> None:
    declared = declared_metric_names(Metrics())
    used: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        used |= names
        undeclared = names - declared
        assert not undeclared, f"{rule['alert']} reads undeclared metrics {undeclared}: declare them in stream/observe/metrics.py"
    assert any(n.startswith("hailstream_finetune") for n in used)


def test_alerts_cover_the_operators_questions() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert names >= REQUIRED_ALERTS, REQUIRED_ALERTS - names
    assert len(names) == len(rules), "alert names are unique"
    for r in rules:
        assert r["labels"]["severity"] in {"info", "warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
    # Every alert has a unit test.
    tested = {t["alertname"] for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for t in case["alert_rule_test"]}
    assert names <= tested, names - tested


def test_config_scrapes_worker_and_trainer() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in cfg["scrape_configs"]}
    assert jobs["hailstream-worker"] == ["worker:9464"]
    assert jobs["hailstream-trainer"] == ["trainer:9465"]
    assert cfg["rule_files"] == ["alerts.yml"]
    for job in cfg["scrape_configs"]:
        for sc in job["static_configs"]:
            # A target label "process" would clash with hailstream_process_info's own label.
            assert "process" not in sc.get("labels", {}), job["job_name"]
