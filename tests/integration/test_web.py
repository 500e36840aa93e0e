"""``GET /users/<id>/recommendations`` with two workers (``hailstream worker --web``) on four
partitions of the embedded broker: each worker answers for the users of both workers' partitions
(the other worker's by forwarding) with the user's latest record on the predictions topic, and a
JSON 404 for a user it has never seen.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.data import load_dataset
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.cli.procs import hailstream_argv, stop_process
from stream.cli.replay import replay
from stream.kafka.topics import changelog_topic, delete_topics, ensure_topics
from stream.records import Prediction
from stream.settings import Settings
from stream.worker.web import SERVED_BY, user_partition
from tests.data import needs_nyc
from tests.integration.conftest import read_topic
from tests.integration.test_worker import ROOT, _env, _settings

pytestmark = [pytest.mark.integration, needs_nyc]

N = 600
PARTITIONS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, user: str) -> tuple[int, dict[str, Any], str | None]:
    url = f"http://127.0.0.1:{port}/users/{urllib.request.quote(user)}/recommendations"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers.get(SERVED_BY)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get(SERVED_BY)
    except OSError as e:  # not listening yet
        return 0, {"error": str(e)}, None


def _probe_users() -> dict[int, str]:
    """One user id per partition, never seen in the data."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < PARTITIONS:
        out.setdefault(user_partition(f"nobody-{i}", PARTITIONS), f"nobody-{i}")
        i += 1
    return out


@pytest.fixture
def two_workers(broker: str, tmp_path: Path) -> Iterator[tuple[Settings, list[int], Callable[[], str]]]:
    torch.manual_seed(0)
    events = load_dataset("foursquare-nyc").head(N)
    vocab = ItemVocab(sorted({str(i) for i in events.items}))
    model = HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=20, dropout=0.0), vocab.rows)
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", model, vocab, {"version": "web-v1"})
    settings = _settings(broker).replace(partitions=PARTITIONS)
    ensure_topics(settings, {changelog_topic(settings): PARTITIONS})
    ports = [_free_port(), _free_port()]
    procs = []
    try:
        for i, port in enumerate(ports):
            log = tmp_path / f"worker-{i}.log"
            with open(log, "ab") as out:
                procs.append(subprocess.Popen(
                    [*hailstream_argv(), "worker", "--checkpoint", str(checkpoint), "--web", "--web-port", str(port), "--metrics-port", "0",
                     "--stats-file", str(tmp_path / f"stats-{i}.json")],
                    cwd=ROOT, env=_env(settings), stdout=out, stderr=subprocess.STDOUT,
                ))

        def logs() -> str:
            return "\n".join((tmp_path / f"worker-{i}.log").read_text()[-2000:] for i in range(len(ports)))

        # Both workers joined and own partitions: the probes of the four partitions, asked of
        # either worker, are answered (404) by two distinct owners.
        probes = _probe_users()
        deadline = time.monotonic() + 120
        owners: set[str | None] = set()
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                pytest.fail(f"a worker exited:\n{logs()}")
            owners = {_get(port, u)[2] for port in ports for u in probes.values()}
            if len(owners) == 2 and None not in owners:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the two workers never shared the partitions (owners {owners}):\n{logs()}")
        replay(events, settings, progress=False, limit=N)
        yield settings, ports, logs
    finally:
        for p in procs:
            stop_process(p, grace=20.0)
        delete_topics(settings, [*settings.topics, changelog_topic(settings)])


def test_each_worker_serves_every_users_latest_prediction(two_workers: tuple[Settings, list[int], Callable[[], str]]) -> None:
    settings, ports, logs = two_workers
    records = read_topic(settings, settings.predictions_topic, min_n=N, timeout=120)
    assert len({Prediction.from_json(r.value).event_id for r in records}) == N, logs()
    latest: dict[str, tuple[int, Any]] = {}
    for r in records:
        user = r.key.decode()
        if user not in latest or r.offset > latest[user][1].offset:
            latest[user] = (r.partition, r)
    by_partition: dict[int, list[str]] = {}
    for user, (partition, _) in sorted(latest.items()):
        assert partition == user_partition(user, PARTITIONS)
        by_partition.setdefault(partition, []).append(user)
    assert set(by_partition) == set(range(PARTITIONS))
    sample = [u for users in by_partition.values() for u in users[:5]]
    served_by: dict[str, set[str | None]] = {}
    for port in ports:
        for user in sample:
            expected = Prediction.from_json(latest[user][1].value)
            status, body, owner = _get(port, user)
            assert status == 200, (user, body, logs())
            assert body == {"user_id": user, "items": expected.items, "scores": expected.scores,
                            "model_version": "web-v1", "produced_at": expected.produced_at,
                            "event_id": expected.event_id}, user
            served_by.setdefault(user, set()).add(owner)
    # One owner per user whichever worker was asked, and both workers own some of them: each
    # worker answered some requests itself and forwarded the others.
    assert all(len(owners) == 1 for owners in served_by.values())
    assert len({o for owners in served_by.values() for o in owners}) == 2
    for port in ports:
        status, body, _ = _get(port, "no-such-user")
        assert status == 404 and body["user_id"] == "no-such-user" and body["error"]
