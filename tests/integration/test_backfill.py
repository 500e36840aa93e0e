"""A replay with a backfill through a real worker (``hailstream replay --backfill``): the backfilled
events reach the users' table state but get no prediction, and the replayed ones after them are
predicted on the whole history."""

from __future__ import annotations

import json
import subprocess
import time
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
from stream.snapshots import MODEL_SCORER, read_worker_snapshot
from stream.worker.batch import replay_states
from tests.data import needs_nyc
from tests.integration.conftest import read_topic
from tests.integration.test_worker import ROOT, _env, _settings

pytestmark = [pytest.mark.integration, needs_nyc]

PAST, LIVE = 400, 300


def test_backfilled_events_fill_the_state_but_are_not_predicted(broker: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    events = load_dataset("foursquare-nyc").head(PAST + LIVE)
    vocab = ItemVocab(sorted({str(i) for i in events.items}))
    model = HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=20, dropout=0.0), vocab.rows)
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", model, vocab, {"version": "bf-v1"})
    settings = _settings(broker)
    ensure_topics(settings, {changelog_topic(settings): settings.partitions})
    stats_path, log = tmp_path / "stats.json", tmp_path / "worker.log"
    try:
        assert replay(events, settings, progress=False, start=PAST, backfill=PAST) == LIVE
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*hailstream_argv(), "worker", "--checkpoint", str(checkpoint), "--stats-file", str(stats_path),
                 "--metrics-port", "0"], cwd=ROOT, env=_env(settings), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                if stats_path.exists() and read_worker_snapshot(stats_path).events >= PAST + LIVE:
                    break
                time.sleep(0.5)
        finally:
            stop_process(proc, grace=20.0)
        stats = read_worker_snapshot(stats_path)
        assert (stats.events, stats.backfilled, stats.predictions, stats.dead_letters) == (PAST + LIVE, PAST, LIVE, 0)
        preds = [Prediction.from_json(r.value) for r in read_topic(settings, settings.predictions_topic, min_n=LIVE)]
        assert sorted(int(p.event_id.split(":")[1]) for p in preds) == list(range(PAST, PAST + LIVE))
        # Every event, backfilled or not, is in the users' sequences.
        table: dict[str, Any] = {}
        for r in sorted(read_topic(settings, changelog_topic(settings)), key=lambda r: (r.partition, r.offset)):
            table[json.loads(r.key)] = json.loads(r.value)["items"]
        all_events = [(str(events.users[i]), str(events.items[i])) for i in range(PAST + LIVE)]
        assert table == replay_states(all_events, settings.max_seq_len)
        # Only the replayed events are scored; a user's first one is cold for the model and the baselines alike.
        live_users = {str(u) for u in events.users[PAST:]}
        for name in (MODEL_SCORER, "popularity", "markov", "user-frequency"):
            s = stats.prequential[name]
            assert (s["n"] + s["cold"], s["cold"]) == (LIVE, len(live_users)), name
    finally:
        delete_topics(settings, [*settings.topics, changelog_topic(settings)])
