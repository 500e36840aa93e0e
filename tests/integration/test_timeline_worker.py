"""``python -m stream.worker.app --timeline``: a real worker on the embedded broker records its timeline,
and ``hailstream report`` draws it. One short run (a tiny untrained model, 300 events)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models.checkpoint import save_checkpoint
from models.data import load_dataset
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.cli.main import main as cli_main
from stream.cli.procs import child_env, hailstream_argv
from stream.cli.replay import replay
from stream.kafka.topics import changelog_topic, ensure_topics
from stream.observe.timeline import read_timeline
from stream.settings import Settings
from stream.snapshots import MODEL_SCORER, read_worker_snapshot
from tests.data import needs_nyc

pytestmark = [pytest.mark.integration, needs_nyc]

ROOT = Path(__file__).resolve().parents[2]
N = 300
EVERY = 50


def test_worker_with_timeline_flag_records_points_and_report_draws_them(
    settings_factory: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(1)
    events = load_dataset("foursquare-nyc").head(N)
    vocab = ItemVocab(sorted(set(events.items)))
    model = HAIL(HailConfig(n_peers=2, hidden=16, layers=1, max_len=20, seed=0), vocab.rows)
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", model, vocab, {"version": "tl-v1"})
    settings = settings_factory(model_dir=tmp_path / "models", metrics_port=0)
    ensure_topics(settings, {changelog_topic(settings): settings.partitions})
    replay(events, settings, progress=False)

    run = tmp_path / "run"
    run.mkdir()
    stats, log = run / "stats.json", run / "worker.log"
    env = {**child_env(settings.replace(log_level="WARNING")), "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*hailstream_argv(), "worker", "--checkpoint", str(checkpoint), "--stats-file", str(stats),
             "--timeline", str(run / "timeline.jsonl"), "--timeline-every", str(EVERY)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        seen = 0
        deadline = time.monotonic() + 120
        while seen < N and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            seen = read_worker_snapshot(stats).events if stats.exists() else 0
            time.sleep(0.25)
        assert seen >= N, f"the worker saw {seen} of {N} events:\n{log.read_text()[-3000:]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -9
    assert rc == 0, log.read_text()[-3000:]

    points = [r for r in read_timeline(run / "timeline.jsonl") if r["kind"] == "point"]
    assert points, log.read_text()[-3000:]
    counts = [p["events"] for p in points]
    assert counts == sorted(counts) and counts[-1] == N  # the last point (at shutdown) covers every event
    assert all(b - a >= EVERY for a, b in zip(counts, counts[1:-1], strict=False))  # at most one per EVERY
    assert {p["version"] for p in points} == {"tl-v1"}
    assert points[-1]["window"][MODEL_SCORER]["n"] > 0 and "popularity" in points[-1]["window"]

    assert cli_main(["report", str(run)]) == 0
    assert capsys.readouterr().out.startswith(str(run / "report.png")) and (run / "report.png").stat().st_size > 0
