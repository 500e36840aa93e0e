"""``hailstream demo`` end to end, as a user runs it: its own embedded broker, worker, trainer and
replay, a summary JSON that reconciles (lifecycle counts from the trainer's own stats), both
/metrics endpoints, and no process left behind. The ``--drift`` scenario is run end to end, with a
real Prometheus scraping it, in tests/ops/test_demo_prometheus.py."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from models.checkpoint import save_checkpoint
from models.data import load_dataset
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.cli.procs import hailstream_argv
from tests.data import needs_nyc

pytestmark = [pytest.mark.integration, needs_nyc]


def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path):
    ev = load_dataset("foursquare-nyc")
    t0 = ev.take(ev.block == "T0")
    vocab = ItemVocab(t0.items.tolist())
    model = HAIL(HailConfig(n_peers=2, hidden=16, layers=1, max_len=20, seed=3), vocab.rows)
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model, vocab, {"version": "1"})
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILSTREAM_")}
    proc = subprocess.run(
        [*hailstream_argv(), "demo", "--limit", "600", "--checkpoint", str(ckpt),
         "--summary-json", str(summary_path), "--metrics-port", "0", "--trainer-metrics-port", "0",
         "--model-dir", str(tmp_path / "hailstream-models")],  # the model home: runs land beside it
        cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["complete"] and summary["published"] == 600
    assert summary["events"] == 600 == summary["predictions"] + summary["dead_letters"]
    assert summary["dead_letters"] == 0
    assert summary["drift_at"] is None and summary["drift"] is None
    assert {"hail", "popularity", "markov", "user-frequency"} <= set(summary["prequential"])
    hail = summary["prequential"]["hail"]
    assert hail["n"] + hail["cold"] == 600 and 0.0 <= hail["hr@10"] <= 1.0
    assert "HR@10" in proc.stdout and "model versions served: v1" in proc.stdout
    # the trainer ran beside the worker: its counts are the trainer's own (a fine-tune every 500
    # events: the one at event 500 ends before the demo does), each promotion was served
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "hailstream-runs"
    trainer = json.loads((run_dir / "trainer.json").read_text())
    assert summary["finetunes"] == trainer["fine_tunes"] >= 1
    assert (summary["promotions"], summary["rejections"], summary["failed_finetunes"]) == (
        trainer["outcomes"]["promoted"], trainer["outcomes"]["rejected"], trainer["outcomes"]["failed"])
    assert summary["model_versions_served"][0] == "v1"  # one label style: v1, v2, ...
    assert summary["accuracy_by_version"][0]["version"] == "v1"
    assert len(summary["model_versions_served"]) == 1 + summary["promotions"] == 1 + summary["swaps"]
    assert set(summary["metrics_urls"]) == {"worker", "trainer"}
    assert all(url.startswith("http://127.0.0.1:") for url in summary["metrics_urls"].values())
    assert f"fine-tunes {summary['finetunes']} (promoted {summary['promotions']}" in proc.stdout
    for name in ("worker", "trainer"):
        assert "Traceback" not in (run_dir / f"{name}.log").read_text(), name
    # the worker, the trainer and the broker the demo started are gone
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    leftovers = [line for line in out.splitlines() if str(tmp_path) in line or summary["run_dir"] in line]
    assert not leftovers, leftovers
