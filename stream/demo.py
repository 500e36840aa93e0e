"""``hailstream demo``: the whole product on one machine with one command.

1. an embedded Kafka-wire broker (unless ``HAILSTREAM_BOOTSTRAP_SERVERS``/``--bootstrap-servers`` names one),
2. the topics, 3. a HAIL model trained on the first part of the data (Foursquare NYC: block T0; Amazon
Beauty: the first half in time), cached in the model directory, or a given checkpoint,
4. a Faust worker in its own process, 5. a replay of the rest of the data set,
6. a live console view, and a final summary (also as JSON with ``--summary-json``).

Everything it starts is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import Interactions, load_dataset
from models.presets import preset
from models.splits import leave_last_out
from models.trainer import TrainConfig, train
from stream.broker import EmbeddedBroker
from stream.errors import StreamError
from stream.replay import block_rows, replay
from stream.settings import Settings, env_name
from stream.topics import ensure_topics
from stream.worker import MODEL_SCORER, read_stats

DEMO_EPOCHS = 8


def split_stream(events: Interactions) -> tuple[Interactions, np.ndarray]:
    """(training part, row indices to replay): block T0 vs T1..T5 when the data has blocks, else the
    first vs the second half in time."""
    if events.block is not None:
        rows = block_rows(events, "T1")
        return events.take(events.block == "T0"), rows
    half = len(events) // 2
    return events.head(half), np.arange(half, len(events))


def demo_model(settings: Settings, dataset: str, train_part: Interactions, epochs: int, log: Any) -> Path:
    """Train (or reuse from the model directory) the demo's 2-peer HAIL on ``train_part``."""
    path = Path(settings.model_dir) / "demo" / f"{dataset}-hail2-e{epochs}.safetensors"
    if path.exists():
        with contextlib.suppress(Exception):
            load_checkpoint(path)
            log(f"model: reusing {path}")
            return path
    split = leave_last_out(train_part)
    log(f"model: training HAIL (2 SASRec peers, MED) on {len(train_part):,} events, {epochs} epochs ...")
    t0 = time.perf_counter()
    result = train(split, preset("hail", peers=2), TrainConfig(epochs=epochs, patience=3, progress=False))
    save_checkpoint(path, result.model, split.vocab,
                    {"version": "1", "dataset": dataset, "trained_on": len(train_part), "epochs": epochs})
    log(f"model: trained in {time.perf_counter() - t0:.0f} s (best epoch {result.best_epoch}); saved {path}")
    return path


@contextlib.contextmanager
def worker_process(settings: Settings, checkpoint: Path, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The Faust worker as a child process (its own session: our Ctrl-C is ours to handle)."""
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    log_file = open(run_dir / "worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.app", "--checkpoint", str(checkpoint), "--stats", str(run_dir / "stats.json"),
         "--datadir", str(run_dir / "faust")],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process(proc)
        log_file.close()


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL (a starting Faust worker may ignore SIGTERM)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _live_line(s: dict[str, Any], published: int, rate: float) -> str:
    pq = s.get("prequential", {})
    model = pq.get(MODEL_SCORER, {})
    pop = pq.get("popularity", {})
    return (f"events {s.get('events', 0):>7,}/{published:<7,} {rate:7.0f}/s | HR@10 HAIL {model.get('hr@10') or 0:.3f} "
            f"pop {pop.get('hr@10') or 0:.3f} | NDCG@10 HAIL {model.get('ndcg@10') or 0:.3f} "
            f"pop {pop.get('ndcg@10') or 0:.3f} | dead letters {s.get('dead_letters', 0)} | "
            f"model {s.get('model_version', '?')}")


def summarize(stats: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The demo's final summary: counts, prequential metrics per scorer, versions, timings."""
    scorers = {
        name: {key: p.get(key) for key in ("hr@10", "ndcg@10", "mrr@10", "n", "cold")}
        for name, p in stats.get("prequential", {}).items()
    }
    return {
        "events": stats.get("events", 0),
        "predictions": stats.get("predictions", 0),
        "dead_letters": stats.get("dead_letters", 0),
        "prequential": scorers,
        "model_versions_served": sorted({str(stats.get("model_version", ""))} - {""}),
        "promotions": 0,
        "latency_s": stats.get("latency_s"),
        **extra,
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"events {summary['events']:,}  predictions {summary['predictions']:,}  "
             f"dead letters {summary['dead_letters']:,}  wall {summary['wall_seconds']:.1f} s  "
             f"first prediction after {summary.get('first_prediction_s') or float('nan'):.1f} s",
             f"{'scorer':<16}{'HR@10':>8}{'NDCG@10':>9}{'MRR@10':>8}{'scored':>9}"]
    for name, m in summary["prequential"].items():
        lines.append(f"{name:<16}{m['hr@10'] or 0:>8.4f}{m['ndcg@10'] or 0:>9.4f}{m['mrr@10'] or 0:>8.4f}"
                     f"{m['n'] or 0:>9,}")
    lines.append(f"model versions served: {', '.join(summary['model_versions_served']) or '-'}")
    return "\n".join(lines)


def run_demo(
    settings: Settings,
    dataset: str = "foursquare-nyc",
    limit: int | None = None,
    checkpoint: Path | None = None,
    epochs: int | None = None,
    max_rate: float | None = None,
    summary_json: Path | None = None,
    live: bool = True,
    embedded: bool | None = None,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Run the demo; returns the summary (``complete`` is True when every event was processed)."""
    started = time.time()
    say = print if live else (lambda *_a, **_k: None)
    if embedded is None:
        embedded = not os.environ.get(env_name("bootstrap_servers"))
    run_dir = (Path(settings.model_dir).parent / "hailstream-runs" / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    events = load_dataset(dataset, settings.data_dir)
    train_part, rows = split_stream(events)
    if limit is not None:
        rows = rows[:limit]
    ckpt = checkpoint or demo_model(settings, dataset, train_part, epochs or DEMO_EPOCHS, say)

    with contextlib.ExitStack() as stack:
        if embedded:
            broker = stack.enter_context(EmbeddedBroker(log_dir=run_dir))
            settings = settings.replace(bootstrap_servers=broker.bootstrap)
            say(f"broker: embedded Tansu at {broker.bootstrap}")
        ensure_topics(settings)
        worker = stack.enter_context(worker_process(settings, ckpt, run_dir))
        say(f"worker: pid {worker.pid}, log {run_dir / 'worker.log'}")

        published: dict[str, Any] = {"n": 0, "done": False, "error": None}

        def publish() -> None:
            try:
                published["n"] = replay(events, settings, max_rate=max_rate, progress=False, rows=rows)
            except Exception as e:  # reported below; the main thread stops everything
                published["error"] = e
            finally:
                published["done"] = True

        t_replay = time.time()
        threading.Thread(target=publish, name="replay", daemon=True).start()
        stats_path = run_dir / "stats.json"
        stats: dict[str, Any] = {}
        first_prediction_s = None
        last_events, last_t = 0, time.time()
        target = len(rows)
        while time.time() - started < timeout:
            time.sleep(1.0)
            if worker.poll() is not None:
                raise StreamError(f"the worker exited with status {worker.returncode}; see {run_dir / 'worker.log'}")
            if published["error"] is not None:
                raise StreamError(f"replay failed: {published['error']}")
            with contextlib.suppress(StreamError, json.JSONDecodeError):
                stats = read_stats(stats_path)
            if first_prediction_s is None and stats.get("predictions", 0) > 0:
                first_prediction_s = time.time() - started
            now = time.time()
            rate = (stats.get("events", 0) - last_events) / max(now - last_t, 1e-9)
            last_events, last_t = stats.get("events", 0), now
            if live:
                end = "\r" if sys.stdout.isatty() else "\n"
                print(_live_line(stats, target, rate), end=end, flush=True)
            if published["done"] and stats.get("events", 0) >= target:
                break
        if live and sys.stdout.isatty():
            print()
        stop_process(worker)
        with contextlib.suppress(StreamError, json.JSONDecodeError):
            stats = read_stats(stats_path)

    wall = time.time() - started
    summary = summarize(stats, {
        "dataset": dataset,
        "complete": stats.get("events", 0) >= target,
        "published": published["n"],
        "wall_seconds": wall,
        "stream_seconds": time.time() - t_replay,
        "first_prediction_s": first_prediction_s,
        "checkpoint": str(ckpt),
        "run_dir": str(run_dir),
    })
    if live:
        print(format_summary(summary))
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary, indent=2))
    return summary
