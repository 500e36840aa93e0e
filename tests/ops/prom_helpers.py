"""Helpers for the tests of ops/: PromQL metric-name extraction, Grafana dashboard queries, and a
real Prometheus server (Debian's ``/usr/bin/prometheus``) started on 127.0.0.1 for one test.

Reusable by any test that needs to check dashboards or alert rules against live metrics::

    with PrometheusServer({"hailstream-worker": ["127.0.0.1:9464"]}) as prom:
        prom.wait_for("hailstream_events_consumed_total")
        for title, expr in dashboard_queries(path):
            assert prom.query(grafana_expr(expr)), title
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
DASHBOARDS = sorted((OPS / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MISSING_PROMETHEUS = "Debian's prometheus package is not installed (apt-get install prometheus gives prometheus and promtool)"


def have(binary: str) -> bool:
    return Path(binary).is_file() and os.access(binary, os.X_OK)


# --- PromQL ------------------------------------------------------------------------------------

_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "start", "end",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-zA-Z$_]+")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, keywords, label names and values left out).

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{job="x"}[5m])) / ignoring(x) b offset 1h > 0.5e-3'))
    ['a_bucket', 'b']
    >>> sorted(metric_names('time() - max(c{s=~"h.*"}) and on (job) d[$__rate_interval]'))
    ['c', 'd']
    """
    s = _STRING.sub(" ", expr)
    s = _MATCHERS.sub(" ", s)
    s = _RANGE.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    s = _OFFSET.sub(" ", s)
    s = _VARIABLE.sub(" ", s)
    s = _NUMBER.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group()
        if word.lower() in _KEYWORDS or re.match(r"\s*\(", s[m.end():]):
            continue  # a keyword, or a function / aggregation call
        names.add(word)
    return names


def grafana_expr(expr: str, rate_interval: str = "1m", interval: str = "15s", range_: str = "5m") -> str:
    """An expression with Grafana's built-in variables replaced, ready for Prometheus' API.

    >>> grafana_expr("increase(x[$__range]) + rate(y[$__rate_interval])")
    'increase(x[5m]) + rate(y[1m])'
    """
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    range_s = str(int(float(range_[:-1]) * seconds[range_[-1]]))
    for name, value in [
        ("__rate_interval", rate_interval), ("__interval_ms", str(_ms(interval))), ("__interval", interval),
        ("__range_s", range_s), ("__range_ms", str(int(range_s) * 1000)), ("__range", range_),
    ]:
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def _ms(duration: str) -> int:
    seconds = {"s": 1, "m": 60, "h": 3600}
    return int(float(duration[:-1]) * seconds[duration[-1]] * 1000)


# --- Grafana -----------------------------------------------------------------------------------


def _walk_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _walk_panels(p.get("panels", []))  # rows may nest panels


def dashboard_panels(path: Path) -> list[dict[str, Any]]:
    """Every panel of a dashboard that shows data (rows left out), nested ones included."""
    data = json.loads(path.read_text())
    return [p for p in _walk_panels(data.get("panels", [])) if p.get("type") != "row"]


def dashboard_queries(path: Path, annotations: bool = False) -> list[tuple[str, str]]:
    """(where, expr) of every Prometheus query of a dashboard: panel targets, and annotation
    queries too when ``annotations`` is set."""
    data = json.loads(path.read_text())
    out = []
    for p in dashboard_panels(path):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"{path.name}: {p.get('title')} [{t.get('refId')}]", t["expr"]))
    if annotations:
        for a in data.get("annotations", {}).get("list", []):
            if a.get("expr"):
                out.append((f"{path.name}: annotation {a.get('name')}", a["expr"]))
    return out


# --- a real Prometheus -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    """Prometheus on 127.0.0.1 with a temporary config scraping ``targets`` (job -> ["host:port"])
    every ``scrape_interval``, optionally loading ``rule_files``; stopped by PID on exit."""

    def __init__(
        self,
        targets: Mapping[str, list[str]],
        scrape_interval: str = "1s",
        rule_files: Iterable[Path] = (),
        binary: str = PROMETHEUS,
        start_timeout: float = 60.0,
    ) -> None:
        if not have(binary):
            raise PrometheusError(MISSING_PROMETHEUS)
        self.binary = binary
        self.targets = dict(targets)
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        lines = ["global:", f"  scrape_interval: {self.scrape_interval}", f"  evaluation_interval: {self.scrape_interval}"]
        if self.rule_files:
            lines.append("rule_files:")
            lines += [f"  - {json.dumps(str(p))}" for p in self.rule_files]
        lines.append("scrape_configs:")
        for job, targets in self.targets.items():
            lines += [f"  - job_name: {json.dumps(job)}", "    static_configs:", f"      - targets: {json.dumps(targets)}"]
        return "\n".join(lines) + "\n"

    def start(self) -> PrometheusServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="hailstream-prom-")
        tmp = Path(self._tmp.name)
        (tmp / "prometheus.yml").write_text(self.config())
        self.log_path = tmp / "prometheus.log"
        for _attempt in range(3):  # the free port may be taken between picking and binding it
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        self.binary,
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready():
                return self
            self._kill()
        log_tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise PrometheusError(f"Prometheus did not become ready; its log ends with:\n{log_tail}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        return False

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self._kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data``, raises PrometheusError on an API error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (empty when no series matches; NaN values included)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """Range query from ``start`` to ``end`` (unix seconds) every ``step`` seconds, as a Grafana
        panel draws it: the series that have at least one value in the range (empty when none)."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return [s for s in data["result"] if s.get("values")]

    def wait_for(self, expr: str, timeout: float = 30.0, predicate: Any = bool) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; raises PrometheusError at ``timeout``."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise PrometheusError(f"{expr!r} did not return the expected data within {timeout} s: {result}")

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (alerting and recording) with its health and last error."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]
