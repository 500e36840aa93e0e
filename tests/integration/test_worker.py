"""The Faust worker against the embedded broker: a clean run over a few thousand Foursquare events
with malformed messages mixed in, then a graceful restart.

One worker run (a ``python -m stream.worker.app`` subprocess, always stopped) is shared by the module;
every test checks one contract on what it produced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.data import load_dataset
from models.hail import HailConfig
from models.metrics import topk_metrics
from models.splits import leave_last_out
from models.trainer import TrainConfig, train
from stream.cli.procs import child_env, hailstream_argv
from stream.cli.replay import replay
from stream.kafka.clients import make_producer
from stream.kafka.topics import changelog_topic, delete_topics, ensure_topics
from stream.records import Prediction
from stream.settings import Settings
from stream.snapshots import MODEL_SCORER, WorkerSnapshot, read_worker_snapshot
from stream.worker.batch import replay_states
from tests.data import needs_nyc
from tests.integration.conftest import read_topic

pytestmark = [pytest.mark.integration, needs_nyc]

ROOT = Path(__file__).resolve().parents[2]
N = 3000  # valid events in the first run
N_MORE = 400  # valid events after the restart
TRAIN_ON = 2000  # the model's vocabulary stops here: later events bring unknown items
MALFORMED: list[tuple[bytes | None, bytes | None, str]] = [  # (key, value, expected reason)
    (b"1", b"{not json", "bad_json"),
    (b"2", json.dumps({"user_id": "2"}).encode(), "missing_field"),
    (b"3", json.dumps({"user_id": "3", "item_id": [7], "ts": 1.0}).encode(), "wrong_type"),
    (b"4", json.dumps({"user_id": "4", "item_id": "9", "ts": 1.0, "pad": "x" * 70_000}).encode(), "oversized"),
    (b"5", b"[1, 2, 3]", "not_object"),
    (b"6", b"\xff\xfe\x00garbage", "bad_json"),
    (b"7", b'{"user_id": "7", "item_id": "1", "ts": NaN}', "bad_value"),
    (None, b"", "bad_json"),
]


def _settings(bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings.from_env(
        {},
        bootstrap_servers=bootstrap,
        interactions_topic=f"wk-{tag}.interactions",
        predictions_topic=f"wk-{tag}.predictions",
        dead_letter_topic=f"wk-{tag}.dead-letter",
        model_updates_topic=f"wk-{tag}.model-updates",
        app_id=f"wk-{tag}",
        partitions=4,
    )


def _env(settings: Settings) -> dict[str, str]:
    return {**child_env(settings.replace(log_level="WARNING")), "PYTHONPATH": str(ROOT)}


def _listening_sockets(pid: int) -> list[tuple[str, str]]:
    """(protocol, local address hex) of every listening TCP / bound UDP socket that ``pid`` owns,
    plus ("tcp-conn", addr) for its connected TCP sockets (so a test sees the parser work)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes:
                continue
            if proto.startswith("udp") or state == "0A":  # 0A = LISTEN
                found.append((proto, local))
            else:
                found.append(("tcp-conn", local))
    return found


def _is_loopback(hex_addr: str) -> bool:
    ip = hex_addr.split(":")[0]
    return ip == "0100007F" or ip == "00000000000000000000000001000000"  # 127.0.0.1 / ::1


def _start_worker(settings: Settings, checkpoint: Path, stats: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*hailstream_argv(), "worker", "--checkpoint", str(checkpoint), "--stats-file", str(stats)],
            cwd=ROOT, env=_env(settings), stdout=out, stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9


def _wait_for_events(proc: subprocess.Popen[bytes], stats: Path, n: int, log: Path, timeout: float = 120.0) -> WorkerSnapshot:
    deadline = time.monotonic() + timeout
    last = WorkerSnapshot()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if stats.exists():
            last = read_worker_snapshot(stats)
            if last.events >= n:
                return last
        time.sleep(0.25)
    pytest.fail(f"worker saw {last.events} of {n} events in {timeout:g} s:\n{log.read_text()[-3000:]}")


@dataclass
class Run:
    settings: Settings
    checkpoint: Path
    tmp: Path
    inputs: list[Any]
    predictions: list[Any]
    dead_letters: list[Any]
    changelog: list[Any]
    stats: WorkerSnapshot
    sockets: list[tuple[str, str]]
    returncode: int


@pytest.fixture(scope="module")
def events() -> Any:
    return load_dataset("foursquare-nyc").head(N + N_MORE)


@pytest.fixture(scope="module")
def run(broker: str, events: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("worker")
    split = leave_last_out(events.head(TRAIN_ON))
    cfg = HailConfig(n_peers=2, hidden=16, layers=1, max_len=20, dropout=0.1)
    model = train(split, cfg, TrainConfig(epochs=1, batch_size=128, progress=False, threads=1)).model
    checkpoint = save_checkpoint(tmp / "model.safetensors", model, split.vocab, {"version": "it-v1"})

    settings = _settings(broker)
    ensure_topics(settings, {changelog_topic(settings): settings.partitions})
    producer = make_producer(settings)
    try:
        bad = iter(MALFORMED)
        for key, value, _ in [next(bad) for _ in range(3)]:
            producer.send(settings.interactions_topic, key=key, value=value)
        replay(events, settings, progress=False, limit=N // 2, producer=producer)
        for key, value, _ in [next(bad) for _ in range(3)]:
            producer.send(settings.interactions_topic, key=key, value=value)
        replay(events, settings, progress=False, start=N // 2, limit=N - N // 2, producer=producer)
        for key, value, _ in bad:
            producer.send(settings.interactions_topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()

    stats_path, log = tmp / "stats.json", tmp / "worker.log"
    proc = _start_worker(settings, checkpoint, stats_path, log)
    try:
        _wait_for_events(proc, stats_path, N + len(MALFORMED), log)
        sockets = _listening_sockets(proc.pid)
    finally:
        rc = _stop(proc)
    try:
        yield Run(
            settings, checkpoint, tmp,
            inputs=read_topic(settings, settings.interactions_topic),
            predictions=read_topic(settings, settings.predictions_topic),
            dead_letters=read_topic(settings, settings.dead_letter_topic),
            changelog=read_topic(settings, changelog_topic(settings)),
            stats=read_worker_snapshot(stats_path),
            sockets=sockets,
            returncode=rc,
        )
    finally:
        delete_topics(settings, [*settings.topics, changelog_topic(settings)])


def test_every_valid_event_gets_exactly_one_prediction_keyed_by_its_user(run: Run, events: Any) -> None:
    assert run.returncode == 0  # stopped cleanly on SIGTERM
    preds = [Prediction.from_json(r.value) for r in run.predictions]
    ids = [p.event_id for p in preds]
    assert len(ids) == len(set(ids)) == N
    assert set(ids) == {f"foursquare-nyc:{i}" for i in range(N)}
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for record, p in zip(run.predictions, preds, strict=True):
        row = int(p.event_id.split(":")[1])
        assert record.key.decode() == p.user_id == events.users[row]
        assert p.model_version == "it-v1" and p.k == run.settings.top_k and p.ts == events.ts[row]
        assert len(p.items) == len(p.scores) == p.k and p.scores == sorted(p.scores, reverse=True)
        partitions_of[p.user_id].add(record.partition)
    assert all(len(ps) == 1 for ps in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) >= 2  # spread over partitions


def test_predictions_stay_on_the_users_input_partition_in_event_order(run: Run) -> None:
    # The worker produces them in record batches per partition (stream.worker.sink.FaustSink): each
    # must land on the partition Faust's partitioner picks for the key, which is the input's, and
    # keep the input order there (so a user's predictions are in event order).
    offset_of = {json.loads(r.value)["event_id"]: (r.partition, r.offset) for r in run.inputs
                 if r.key and b"event_id" in r.value}
    by_partition: dict[int, list[int]] = defaultdict(list)
    by_user: dict[str, list[int]] = defaultdict(list)
    for r in sorted(run.predictions, key=lambda r: (r.partition, r.offset)):
        p = Prediction.from_json(r.value)
        partition, offset = offset_of[p.event_id]
        assert r.partition == partition
        by_partition[r.partition].append(offset)
        by_user[p.user_id].append(offset)
    assert sum(map(len, by_partition.values())) == N
    assert all(seq == sorted(seq) for seq in by_partition.values())
    assert all(seq == sorted(seq) for seq in by_user.values())


def test_malformed_messages_are_dead_letters_with_reasons_and_counts_reconcile(run: Run) -> None:
    letters = [json.loads(r.value) for r in run.dead_letters]
    assert sorted(d["reason"] for d in letters) == sorted(reason for _, _, reason in MALFORMED)
    offsets = {(r.partition, r.offset) for r in run.inputs}
    for d in letters:
        assert d["topic"] == run.settings.interactions_topic and (d["partition"], d["offset"]) in offsets
        assert d["detail"]
    assert len(run.inputs) == N + len(MALFORMED) == len(run.predictions) + len(run.dead_letters)
    s = run.stats
    assert (s.events, s.predictions, s.dead_letters) == (len(run.inputs), N, len(MALFORMED))
    assert s.dead_letter_reasons["bad_json"] == 3 and s.send_errors == 0


def test_table_sequences_and_prequential_match_an_offline_recomputation(run: Run, events: Any) -> None:
    valid = [(str(events.users[i]), str(events.items[i])) for i in range(N)]
    # The changelog's last value per user is the table; it is co-partitioned with the input.
    table: dict[str, dict[str, Any]] = {}
    input_partition = {r.key.decode(): r.partition for r in run.inputs if r.key}
    for r in sorted(run.changelog, key=lambda r: (r.partition, r.offset)):
        user = json.loads(r.key)
        table[user] = json.loads(r.value)
        assert r.partition == input_partition[user]
    assert {u: v["items"] for u, v in table.items()} == replay_states(valid, run.settings.max_seq_len)

    items_of = {p.event_id: p.items for p in map(Prediction.from_json, (r.value for r in run.predictions))}
    last: dict[str, list[str]] = {}
    scores, cold = [], 0
    for i, (user, item) in enumerate(valid):
        if user in last:
            scores.append(topk_metrics(last[user][: run.settings.top_k], item))
        else:
            cold += 1
        last[user] = items_of[f"foursquare-nyc:{i}"]
    for user, value in table.items():
        assert value["pred"] == last[user]
    s = run.stats.prequential[MODEL_SCORER]
    k = run.settings.top_k
    assert (s["n"], s["cold"]) == (len(scores), cold)
    for j, name in enumerate(("hr", "ndcg", "mrr")):
        assert s[f"{name}@{k}"] == pytest.approx(sum(x[j] for x in scores) / len(scores), abs=1e-12)
    assert s["window_n"] == min(1000, len(scores))
    # The baselines are scored on the same events (every user is sampled by default).
    for name in ("popularity", "markov", "user-frequency"):
        b = run.stats.prequential[name]
        assert b["n"] + b["cold"] == N and 0.0 <= b[f"hr@{k}"] <= 1.0


def test_the_worker_listens_on_loopback_only(run: Run) -> None:
    assert any(proto == "tcp-conn" for proto, _ in run.sockets), "no socket of the worker was found at all"
    listening = [(p, a) for p, a in run.sockets if p != "tcp-conn"]
    assert all(_is_loopback(a) for _, a in listening), listening


def test_a_restart_resumes_from_the_changelog_and_committed_offsets(run: Run, events: Any) -> None:
    settings = run.settings
    replay(events, settings, progress=False, start=N, limit=N_MORE)
    stats_path, log = run.tmp / "stats-2.json", run.tmp / "worker-2.log"
    proc = _start_worker(settings, run.checkpoint, stats_path, log)
    try:
        _wait_for_events(proc, stats_path, N_MORE, log)
    finally:
        assert _stop(proc) == 0
    stats = read_worker_snapshot(stats_path)
    assert stats.events == N_MORE and stats.duplicates_skipped == 0  # resumed at the committed offsets
    preds = [Prediction.from_json(r.value) for r in read_topic(settings, settings.predictions_topic)]
    new = [p for p in preds if int(p.event_id.split(":")[1]) >= N]
    assert sorted(int(p.event_id.split(":")[1]) for p in new) == list(range(N, N + N_MORE))
    # The table came back from the changelog: users seen before are not cold after the restart.
    seen_before = {str(u) for u in events.users[:N]}
    expected_cold = len({str(u) for u in events.users[N : N + N_MORE]} - seen_before)
    assert stats.prequential[MODEL_SCORER]["cold"] == expected_cold
    table: dict[str, list[str]] = {}
    for r in sorted(read_topic(settings, changelog_topic(settings)), key=lambda r: (r.partition, r.offset)):
        table[json.loads(r.key)] = json.loads(r.value)["items"]
    all_valid = [(str(events.users[i]), str(events.items[i])) for i in range(N + N_MORE)]
    assert table == replay_states(all_valid, settings.max_seq_len)
