"""docker-compose.yml (+ docker-compose.kafka.yml, .env.example), Dockerfile and .dockerignore.

No container engine runs here, so the files are validated two ways, for each variant (your own
Kafka: docker-compose.yml alone; the bundled Kafka: with docker-compose.kafka.yml): Debian's
``docker-compose`` (1.29, ``config -q`` validates against the Compose specification without an
engine; skipped with a reason when not installed) and structural checks that always run: the
services the issue asks for, Kafka in KRaft mode, dependencies and volumes that exist in each
variant, host ports on 127.0.0.1 only, metrics bound to 0.0.0.0 inside the containers,
Prometheus/Grafana configs that match the services, and secrets that come from the env file only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.prom_helpers import OPS, ROOT

COMPOSE = ROOT / "docker-compose.yml"
KAFKA_OVERLAY = ROOT / "docker-compose.kafka.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKER_COMPOSE = shutil.which("docker-compose")
SERVICES = {"kafka", "topics", "init-model", "worker", "trainer", "replay", "prometheus", "grafana"}
HAILSTREAM_SERVICES = {"topics", "init-model", "worker", "trainer", "replay"}


def _merge(base: Any, over: Any) -> Any:
    """Compose's merge of an override file, for the keys these files use: maps merge key by key,
    anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in over.items()} | {
            k: v for k, v in base.items() if k not in over
        }
    return over


def compose(bundled: bool = True) -> dict[str, Any]:
    """The compose model: docker-compose.yml, plus docker-compose.kafka.yml when ``bundled``."""
    out = dict(yaml.safe_load(COMPOSE.read_text()))
    return dict(_merge(out, yaml.safe_load(KAFKA_OVERLAY.read_text()))) if bundled else out


def services(bundled: bool = True) -> dict[str, dict[str, Any]]:
    return dict(compose(bundled)["services"])


def env_example() -> dict[str, str]:
    lines = [ln.strip() for ln in ENV_EXAMPLE.read_text().splitlines()]
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def env(service: dict[str, Any]) -> dict[str, str]:
    e = service.get("environment", {})
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in e.items()}


def run_compose(
    path: Path, *args: str, env_file: Path, overlays: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file ENV -f PATH [-f OVERLAY...] ARGS`` (never a developer's own .env)."""
    assert DOCKER_COMPOSE is not None
    files = [a for f in (path, *overlays) for a in ("-f", str(f))]
    return subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(env_file), *files, *args], capture_output=True, text=True, timeout=120,
        cwd=path.parent, env={"PATH": "/usr/bin:/bin", "HOME": str(path.parent)},
    )


def write_env(tmp_path: Path, drop: tuple[str, ...] = (), **values: str) -> Path:
    """.env.example with ``values`` set and the ``drop`` variables left out, as a file."""
    e = {k: v for k, v in {**env_example(), **values}.items() if k not in drop}
    path = tmp_path / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in e.items()))
    return path


needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose not installed (apt-get install docker-compose)"
)


@needs_compose
@pytest.mark.parametrize("bundled", [True, False], ids=["bundled-kafka", "own-kafka"])
def test_docker_compose_config_validates(tmp_path: Path, bundled: bool) -> None:
    overlays = (KAFKA_OVERLAY,) if bundled else ()
    env_file = write_env(tmp_path, drop=("COMPOSE_FILE",), HAILSTREAM_BOOTSTRAP_SERVERS="kafka:9092" if bundled
                         else "broker1:9092,broker2:9092")
    r = run_compose(COMPOSE, "config", "-q", env_file=env_file, overlays=overlays)
    assert r.returncode == 0, r.stderr
    listed = run_compose(COMPOSE, "config", "--services", env_file=env_file, overlays=overlays)
    assert set(listed.stdout.split()) == (SERVICES if bundled else SERVICES - {"kafka"})
    config = yaml.safe_load(run_compose(COMPOSE, "config", env_file=env_file, overlays=overlays).stdout)
    worker = env(config["services"]["worker"])
    assert worker["HAILSTREAM_BOOTSTRAP_SERVERS"] == ("kafka:9092" if bundled else "broker1:9092,broker2:9092")
    assert env(config["services"]["grafana"])["GF_SECURITY_ADMIN_PASSWORD"] == env_example()["GRAFANA_ADMIN_PASSWORD"]


@needs_compose
def test_env_example_compose_file_line_selects_the_bundled_kafka(tmp_path: Path) -> None:
    # `cp .env.example .env; docker compose up`: its COMPOSE_FILE names both files.
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    for f in (COMPOSE, KAFKA_OVERLAY):
        text = f.read_text().replace("./ops/", str(ROOT / "ops") + "/")
        (tmp_path / f.name).write_text(text.replace("context: .", f"context: {ROOT}"))
    r = subprocess.run([DOCKER_COMPOSE or "docker-compose", "config", "--services"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == SERVICES


@needs_compose
@pytest.mark.parametrize("missing", ["GRAFANA_ADMIN_PASSWORD", "HAILSTREAM_BOOTSTRAP_SERVERS"])
def test_required_values_missing_from_the_env_file_stop_compose(tmp_path: Path, missing: str) -> None:
    r = run_compose(COMPOSE, "config", "-q", env_file=write_env(tmp_path, drop=(missing, "COMPOSE_FILE")))
    assert r.returncode != 0 and f"set {missing} in .env" in r.stderr


@needs_compose
def test_docker_compose_validation_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text().replace("\n  worker:\n", "\n  worker:\n    restartt: always\n")
    broken.write_text(text.replace("./ops/", str(ROOT / "ops") + "/"))
    r = run_compose(broken, "config", "-q", env_file=write_env(tmp_path, drop=("COMPOSE_FILE",)))
    assert r.returncode != 0 and "restartt" in r.stderr


def test_services_and_images() -> None:
    s = services()
    assert set(s) == SERVICES
    assert s["kafka"]["image"].startswith("apache/kafka:")
    assert s["prometheus"]["image"].startswith("prom/prometheus:v")
    assert s["grafana"]["image"].startswith("grafana/grafana:")
    for name in HAILSTREAM_SERVICES:
        assert s[name]["image"] == "hailstream:latest" and s[name]["build"]["dockerfile"] == "Dockerfile", name
        assert s[name]["command"][0] in ("hailstream", "sh"), name
    assert s["worker"]["command"][:2] == ["hailstream", "worker"]
    # on an empty model store the trainer starts from the same initial model the worker serves
    assert s["trainer"]["command"] == ["hailstream", "trainer", "--checkpoint", "/models/initial/model.safetensors"]
    assert s["topics"]["command"] == ["hailstream", "topics"]
    for image in (s[n]["image"] for n in s):
        assert ":" in image and not image.endswith(":latest") or image == "hailstream:latest", f"pin {image}"


def test_kafka_runs_kraft_single_node() -> None:
    kafka = services()["kafka"]
    e = env(kafka)
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in e)
    assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{e['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in e["KAFKA_ADVERTISED_LISTENERS"]
    assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the topics service creates them
    assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka
    for name in HAILSTREAM_SERVICES:
        assert env(services()[name])["HAILSTREAM_BOOTSTRAP_SERVERS"] == "kafka:9092", name
    assert "kafka" not in services(bundled=False)


@pytest.mark.parametrize("bundled", [True, False], ids=["bundled-kafka", "own-kafka"])
def test_dependencies_exist_and_start_in_order(bundled: bool) -> None:
    s = services(bundled)
    for name, svc in s.items():
        deps = svc.get("depends_on", {})
        for dep in deps:
            assert dep in s, f"{name} depends on unknown service {dep}"
    for name in ("worker", "trainer"):
        deps = s[name]["depends_on"]
        if bundled:
            assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["topics"]["condition"] == "service_completed_successfully"
        assert deps["init-model"]["condition"] == "service_completed_successfully"
    if bundled:
        assert s["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert s["replay"]["profiles"] == ["demo"]


def test_partitions_replication_and_secrets_are_settings_from_the_env_file() -> None:
    text = COMPOSE.read_text() + KAFKA_OVERLAY.read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    example = env_example()
    assert used - {"HAILSTREAM_HOST_DATA_DIR"} <= set(example), f"not in .env.example: {used - set(example)}"
    base = env(services(bundled=False)["worker"])
    assert base["HAILSTREAM_PARTITIONS"] == "${HAILSTREAM_PARTITIONS:-4}"
    assert base["HAILSTREAM_REPLICATION_FACTOR"] == "${HAILSTREAM_REPLICATION_FACTOR:-1}"
    for secret in ("HAILSTREAM_SASL_PASSWORD", "HAILSTREAM_MODEL_UPDATES_KEY"):
        assert base[secret] == f"${{{secret}:-}}", secret
    grafana = env(services()["grafana"])["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana.startswith("${GRAFANA_ADMIN_PASSWORD:?"), "no default Grafana password"
    assert "admin" not in example["GRAFANA_ADMIN_PASSWORD"] and example["HAILSTREAM_SASL_PASSWORD"] == "change-me"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_volumes_are_declared_and_bind_mounts_exist() -> None:
    c = compose()
    declared = set(c.get("volumes", {}))
    used = set()
    for name, svc in c["services"].items():
        for v in svc.get("volumes", []):
            source, target = v.split(":")[:2]
            if source.startswith(("./", "/", "$", "..")):
                if source.startswith("./"):
                    assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
                continue
            assert source in declared, f"{name}: volume {source} is not declared"
            used.add(source)
            assert target.startswith("/"), target
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_published_ports_are_loopback_only() -> None:
    for name, svc in services().items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


def test_metrics_bind_all_interfaces_inside_containers_and_match_prometheus() -> None:
    s = services()
    prom = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in prom["scrape_configs"]}
    for name in ("worker", "trainer"):
        e = env(s[name])
        assert e["HAILSTREAM_METRICS_BIND"] == "0.0.0.0", f"{name}: Prometheus scrapes over the compose network"
        # the trainer reads its own port setting, so a worker and a trainer can share one host
        port = e["HAILSTREAM_TRAINER_METRICS_PORT" if name == "trainer" else "HAILSTREAM_METRICS_PORT"]
        assert targets[f"hailstream-{name}"] == f"{name}:{port}"
        web = ["127.0.0.1:6066:6066"] if name == "worker" else []
        assert s[name]["ports"] == [f"127.0.0.1:{port}:{port}", *web]
    w = env(s["worker"])
    assert (w["HAILSTREAM_WEB"], w["HAILSTREAM_WEB_BIND"], w["HAILSTREAM_WEB_HOST"], w["HAILSTREAM_WEB_PORT"]) == (
        "true", "0.0.0.0", "worker", "6066")
    for name in HAILSTREAM_SERVICES - {"worker", "trainer"}:
        assert "HAILSTREAM_METRICS_BIND" not in env(s[name]), f"{name} serves no metrics: keep the 127.0.0.1 default"


def test_prometheus_and_grafana_mount_the_ops_configs() -> None:
    s = services()
    assert "./ops/prometheus:/etc/prometheus:ro" in s["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in s["prometheus"]["command"]
    g = s["grafana"]["volumes"]
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in g
    assert "./ops/grafana/dashboards:/etc/grafana/dashboards:ro" in g
    home = env(s["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (OPS / "grafana" / "dashboards" / Path(home).name).is_file()


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["python:3.11-slim"]
    torch = re.search(r"pip install torch==(\S+) --index-url (\S+)", text)
    assert torch and torch.group(1) == "2.13.0" and torch.group(2) == "https://download.pytorch.org/whl/cpu"
    assert text.index("torch==") < text.index("pip install ."), "torch (CPU) must be installed before the project"
    for path in ("pyproject.toml", "README.md", "models", "stream"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), path
        assert (ROOT / path).exists()
    assert re.search(r"^USER (?!root)\w+", text, re.M), "run as a non-root user"
    ignore = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*" and {"!models/", "!stream/", "!pyproject.toml", "!README.md"} <= set(ignore)
