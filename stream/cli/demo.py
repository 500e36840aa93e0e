"""``hailstream demo``: the whole product on one machine with one command.

1. an embedded Kafka-wire broker (unless ``HAILSTREAM_BOOTSTRAP_SERVERS``/``--bootstrap-servers`` names one),
2. the topics, 3. a HAIL model trained on the first part of the data (Foursquare NYC: block T0; Amazon
Beauty: the first half in time), cached in the model directory, or a given checkpoint,
4. a Faust worker and the incremental trainer (unless ``no_trainer``), each in its own process, with
their ``/metrics`` on 127.0.0.1 and the model store in the run directory,
5. a replay of the rest of the data set; with ``drift`` the items are renamed from the middle of
the replay on (:mod:`stream.cli.scenario`), so the run shows detection, fine-tune, hot swap and recovery,
6. a live console view with the lifecycle's news, and a final summary (also as JSON with
``--summary-json``); ``linger`` keeps the processes serving for that many seconds after the replay.

The run directory (``<model dir>/../hailstream-runs/demo-<time>``) keeps the logs, the stats files,
the model store and the worker's timeline (``hailstream report RUN_DIR`` draws it).
Everything it starts is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import Interactions, load_dataset
from models.presets import preset
from models.splits import leave_last_out
from models.trainer import TrainConfig, train
from stream.cli.demo_view import RunView, drift_report, format_summary, live_line, summarize
from stream.cli.procs import child_process, stop_process
from stream.cli.replay import backfill_rows, block_rows, replay
from stream.cli.scenario import DEFAULT_SEED, drift_position, remap_after
from stream.errors import StreamError
from stream.kafka.broker import EmbeddedBroker
from stream.kafka.topics import ensure_topics
from stream.observe.timeline import TIMELINE_FILE, read_timeline
from stream.settings import Settings, env_name
from stream.snapshots import TrainerSnapshot, WorkerSnapshot, read_trainer_snapshot, read_worker_snapshot

__all__ = ["format_summary", "run_demo", "split_stream", "summarize"]

DEMO_EPOCHS = 1
#: The demo's starting model: a small 2-peer HAIL (32 wide, one layer) trained for
#: :data:`DEMO_EPOCHS` epochs, so the stream starts within a minute on two cores; the trainer then
#: fine-tunes it on the stream and the summary shows how accuracy changed with each version. With
#: the history-aware output (``models.history``): what lifts the model above the counters offline.
DEMO_MODEL = {"hidden": 32, "layers": 1, "max_len": 50, "history": "copy", "positions": "start"}
#: Events replayed with ``--drift`` when no ``--limit`` is given, and their pace (events/s) when no
#: ``--max-rate`` is: slow enough that a fine-tune triggered by the shift finishes while the stream
#: still runs, so the recovery is visible.
DRIFT_LIMIT = 10_000
DRIFT_MAX_RATE = 100.0
#: Seconds to wait, after the replay, for a running fine-tune to end and its version to be served.
FINISH_WAIT = 180.0


def split_stream(events: Interactions) -> tuple[Interactions, np.ndarray]:
    """(training part, row indices to replay): block T0 vs T1..T5 when the data has blocks, else the
    first vs the second half in time."""
    if events.block is not None:
        rows = block_rows(events, "T1")
        return events.take(events.block == "T0"), rows
    half = len(events) // 2
    return events.head(half), np.arange(half, len(events))


def demo_model(settings: Settings, dataset: str, train_part: Interactions, epochs: int, log: Any,
               progress: bool = True) -> Path:
    """Train (or reuse from the model directory) the demo's small 2-peer HAIL on ``train_part``;
    ``progress`` shows a progress bar with the time left (stderr)."""
    tag = "-".join(str(v) for v in DEMO_MODEL.values())  # another demo model, another cache file
    path = Path(settings.model_dir) / "demo" / f"{dataset}-hail2-{tag}-e{epochs}.safetensors"
    if path.exists():
        with contextlib.suppress(Exception):
            load_checkpoint(path)
            log(f"model: reusing {path}")
            return path
    split = leave_last_out(train_part)
    log(f"model: training a small HAIL (2 SASRec peers of width {DEMO_MODEL['hidden']}, MED, history output) on "
        f"{len(train_part):,} events, {epochs} epochs (cached for the next run) ...")
    t0 = time.perf_counter()
    result = train(split, preset("hail", peers=2, **DEMO_MODEL),
                   TrainConfig(epochs=epochs, patience=3, progress=progress))
    save_checkpoint(path, result.model, split.vocab,
                    {"version": "1", "dataset": dataset, "trained_on": len(train_part), "epochs": epochs,
                     "split": "leave-last-out"})
    log(f"model: trained in {time.perf_counter() - t0:.0f} s (best epoch {result.best_epoch}); saved {path}")
    return path


def trainer_sizing(stream_events: int) -> dict[str, Any]:
    """The trainer's lifecycle settings (flat names) for a demo replaying ``stream_events`` events, sized so that
    a fine-tune finishes within a short demo on two CPU cores: a window of a fifth of the stream
    (600..2000 events) with a tenth of it (at least 200 events, the gate's minimum) held out for the gate, a fine-tune every tenth of the
    stream (at least 500 events apart; and on every drift signal, once twice the held-out slice
    of new events arrived), 60 steps of 32 windows at learning rate 0.003: enough to relearn renamed items within
    a few fine-tunes (``--drift``), while the gate rejects candidates that would be worse.

    >>> sorted(trainer_sizing(10_000).items())[:3]
    [('trainer_batch_size', 32), ('trainer_every_events', 1000), ('trainer_holdout', 200)]
    """
    window = min(2000, max(600, stream_events // 5))
    return {"trainer_window": window, "trainer_holdout": max(200, window // 10), "trainer_reservoir": window // 10,
            "trainer_every_events": max(500, stream_events // 10), "trainer_min_new_events": max(100, window // 6),
            "trainer_steps": 60, "trainer_batch_size": 32, "trainer_lr": 0.003}


def check_port(bind: str, port: int, flag: str) -> None:
    """Fail early, saying what to do, when a fixed metrics port is taken (0 = any free port)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
        try:
            s.bind((bind, port))
        except OSError as e:
            raise StreamError(f"cannot serve metrics on {bind}:{port} ({e.strerror}): pass {flag} with a free "
                              "port, or 0 to pick one") from None


def _read_worker(path: Path) -> WorkerSnapshot | None:
    with contextlib.suppress(StreamError, json.JSONDecodeError, OSError, TypeError):
        return read_worker_snapshot(path)
    return None


def _read_trainer(path: Path) -> TrainerSnapshot | None:
    with contextlib.suppress(StreamError, json.JSONDecodeError, OSError, TypeError):
        return read_trainer_snapshot(path)
    return None


def _timeline(run_dir: Path) -> list[dict[str, Any]]:
    with contextlib.suppress(StreamError, OSError):
        return read_timeline(run_dir / TIMELINE_FILE)
    return []


class _Console:
    """The live line (rewritten in place on a terminal; elsewhere a plain line, but not the same
    line again while nothing changes) and news lines above it."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.tty = sys.stdout.isatty()
        self._dangling = False
        self._last = ""

    def say(self, text: str) -> None:
        if not self.live:
            return
        if self._dangling:
            print()
            self._dangling = False
        print(text, flush=True)

    def line(self, text: str) -> None:
        if not self.live or (not self.tty and text == self._last):
            return
        self._last = text
        print(text, end="\r" if self.tty else "\n", flush=True)
        self._dangling = self.tty

    def done(self) -> None:
        if self._dangling:
            print()
            self._dangling = False


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
    *,
    trainer: bool = True,
    drift: bool = False,
    drift_at: int | None = None,
    drift_seed: int = DEFAULT_SEED,
    linger: float = 0.0,
    chosen: Iterable[str] = (),
    backfill: int | None = 0,
) -> dict[str, Any]:
    """Run the demo; returns the summary (``complete`` is True when every event was processed).

    ``trainer`` runs the incremental trainer beside the worker; ``drift`` renames the items from
    replayed event ``drift_at`` on (default: the middle; :func:`stream.cli.scenario.remap_after`,
    seeded by ``drift_seed``) and, unless given, replays :data:`DRIFT_LIMIT` events at
    :data:`DRIFT_MAX_RATE` events/s; ``linger`` seconds of serving follow the replay (for
    scrapes); the settings named in ``chosen`` (flat names the user set by flag or variable) win over
    the demo's trainer sizing (:func:`trainer_sizing`). ``backfill`` events (the newest of the
    training block before the replay; None = all, :func:`stream.cli.replay.backfill_rows`) go
    first, unscored: the baselines then start from the past the model was trained on."""
    started = time.time()
    console = _Console(live)
    say = console.say
    if embedded is None:
        embedded = not os.environ.get(env_name("bootstrap_servers"))
    check_port(settings.metrics_bind, settings.worker.metrics_port, "--metrics-port")
    if trainer:
        check_port(settings.metrics_bind, settings.trainer.metrics_port, "--trainer-metrics-port")
    events = load_dataset(dataset, settings.data_dir)
    train_part, rows = split_stream(events)
    if drift:
        limit = DRIFT_LIMIT if limit is None else limit
        max_rate = DRIFT_MAX_RATE if max_rate is None else max_rate
    if limit is not None:
        rows = rows[:limit]
    at = None
    if drift:
        at = drift_position(len(rows), drift_at)
        events = remap_after(events, rows, at, drift_seed)
    past = len(backfill_rows(len(events), rows, backfill))
    run_dir = (Path(settings.model_dir).parent / "hailstream-runs" / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint or demo_model(settings, dataset, train_part, epochs or DEMO_EPOCHS, say, progress=live)
    keep = set(chosen)
    child = settings.replace(model_dir=run_dir / "models",
                             **{k: v for k, v in trainer_sizing(len(rows)).items() if k not in keep})
    wstats_path, tstats_path = run_dir / "stats.json", run_dir / "trainer.json"

    with contextlib.ExitStack() as stack:
        if embedded:
            broker = stack.enter_context(EmbeddedBroker(log_dir=run_dir))
            settings = settings.replace(bootstrap_servers=broker.bootstrap)
            child = child.replace(bootstrap_servers=broker.bootstrap)
            say(f"broker: embedded Tansu at {broker.bootstrap}")
        ensure_topics(settings)
        worker = stack.enter_context(child_process("worker", [
            "worker", "--checkpoint", str(ckpt), "--stats-file", str(wstats_path),
            "--datadir", str(run_dir / "faust"), "--timeline", str(run_dir / TIMELINE_FILE)], child, run_dir))
        say(f"worker: pid {worker.pid}, log {run_dir / 'worker.log'}")
        procs = {"worker": worker}
        if trainer:
            procs["trainer"] = stack.enter_context(child_process("trainer", [
                "trainer", "--checkpoint", str(ckpt), "--stats-file", str(tstats_path)], child, run_dir))
            say(f"trainer: pid {procs['trainer'].pid}, log {run_dir / 'trainer.log'}, model store {child.model_dir}")
        if at is not None:
            say(f"drift: item ids are remapped (seed {drift_seed}) from replayed event {at:,} of {len(rows):,}, "
                f"replay at {max_rate:g} events/s")

        _wait_ready(procs, [wstats_path, tstats_path] if trainer else [wstats_path], run_dir, started + timeout)
        say(f"ready after {time.time() - started:.0f} s: replaying {len(rows):,} events of {dataset}"
            + (f" after {past:,} backfill events of the training block (not scored)" if past else ""))
        published: dict[str, Any] = {"n": 0, "done": False, "error": None}

        def publish() -> None:
            try:
                published["n"] = replay(events, settings, max_rate=max_rate, progress=False, rows=rows,
                                        backfill=backfill)
            except Exception as e:  # reported below; the main thread stops everything
                published["error"] = e
            finally:
                published["done"] = True

        t_replay = time.time()
        threading.Thread(target=publish, name="replay", daemon=True).start()
        view = RunView()
        wstats = WorkerSnapshot()
        tstats: TrainerSnapshot | None = None
        first_prediction_s = None
        last_events, last_t = 0, time.time()
        target = past + len(rows)  # the worker counts the backfill events too
        streamed_at: float | None = None
        while time.time() - started < timeout:
            time.sleep(1.0)
            _check_alive(procs, run_dir)
            if published["error"] is not None:
                raise StreamError(f"replay failed: {published['error']}")
            wstats = _read_worker(wstats_path) or wstats
            tstats = (_read_trainer(tstats_path) or tstats) if trainer else None
            for news in view.update(wstats, tstats):
                say(news)
            if first_prediction_s is None and wstats.predictions > 0:
                first_prediction_s = time.time() - started
            now = time.time()
            rate = (wstats.events - last_events) / max(now - last_t, 1e-9)
            last_events, last_t = wstats.events, now
            console.line(live_line(wstats, tstats, target, rate))
            if streamed_at is None and published["done"] and wstats.events >= target:
                streamed_at = now
                say(f"replay: all {target:,} events processed" + (f"; serving {linger:g} s more" if linger else ""))
            if streamed_at is not None and _settled(wstats, tstats, target, now - streamed_at) and now - streamed_at >= linger:
                break
        console.done()
        for proc in reversed(list(procs.values())):
            stop_process(proc)
        wstats = _read_worker(wstats_path) or wstats
        tstats = (_read_trainer(tstats_path) or tstats) if trainer else None
        for news in view.update(wstats, tstats):
            say(news)

    timeline = _timeline(run_dir)
    # The timeline counts the worker's events, backfill included: the drift is at event past + at.
    at_event = None if at is None else past + at
    marks = lifecycle_marks(timeline, at_event, tstats)
    if marks:
        with contextlib.suppress(OSError), (run_dir / TIMELINE_FILE).open("a") as f:
            f.writelines(json.dumps(m) + "\n" for m in marks)
        timeline += marks
    summary = summarize(wstats, tstats, view.versions, timeline, {
        "dataset": dataset,
        "complete": wstats.events >= past + len(rows),
        "backfilled": past,
        "published": published["n"],
        "wall_seconds": time.time() - started,
        "stream_seconds": time.time() - t_replay,
        "first_prediction_s": first_prediction_s,
        "checkpoint": str(ckpt),
        "run_dir": str(run_dir),
        "trainer": trainer,
        "drift_at": at,
        "drift": drift_report(at_event, timeline, tstats) if at_event is not None else None,
        "metrics_urls": dict(view.urls),
    })
    if live:
        print(format_summary(summary))
        print(f"timeline: {run_dir / TIMELINE_FILE} (hailstream report {run_dir})")
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary, indent=2))
    return summary


def lifecycle_marks(timeline: list[dict[str, Any]], drift_at: int | None,
                    trainer: TrainerSnapshot | None) -> list[dict[str, Any]]:
    """Timeline records for the report: where drift was injected, and each fine-tune that was not
    promoted, placed at the worker's event count when it ended (interpolated from the points' times).

    >>> pts = [{"kind": "point", "t": 10.0, "events": 100}, {"kind": "point", "t": 20.0, "events": 300}]
    >>> t = TrainerSnapshot(history=[{"outcome": "rejected", "version": None, "requested_at": 14.0, "seconds": 1.0}])
    >>> [(m["kind"], m["events"]) for m in lifecycle_marks(pts, 150, t)]
    [('injected', 150), ('finetune', 200)]
    """
    out: list[dict[str, Any]] = []
    if drift_at is not None:
        out.append({"kind": "injected", "events": int(drift_at), "t": time.time()})
    points = sorted((r for r in timeline if r.get("kind") == "point" and "t" in r), key=lambda r: float(r["t"]))
    if trainer is None or not points:
        return out
    ts = np.array([float(r["t"]) for r in points])
    ev = np.array([float(r["events"]) for r in points])
    for h in trainer.history:
        if h.get("outcome") == "promoted":
            continue
        ended = float(h.get("requested_at") or 0.0) + float(h.get("seconds") or 0.0)
        out.append({"kind": "finetune", "outcome": h.get("outcome"), "version": h.get("version"), "t": ended,
                    "events": int(np.interp(ended, ts, ev))})
    return out


def _check_alive(procs: dict[str, subprocess.Popen[bytes]], run_dir: Path) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise StreamError(f"the {name} exited with status {proc.returncode}; see {run_dir / (name + '.log')}")


def _wait_ready(procs: dict[str, subprocess.Popen[bytes]], stats: list[Path], run_dir: Path, deadline: float) -> None:
    """Wait until every process wrote its stats file (it runs and consumes), so that a paced replay
    is paced for the worker, not for the topic."""
    while not all(p.exists() for p in stats):
        _check_alive(procs, run_dir)
        if time.time() > deadline:
            raise StreamError(f"the processes did not start in time; see the logs in {run_dir}")
        time.sleep(0.25)


def _settled(worker: WorkerSnapshot, trainer: TrainerSnapshot | None, target: int, waited: float) -> bool:
    """Whether the run may end after the replay: the trainer learned the ``target`` events too, no
    fine-tune is running, and the worker serves the trainer's latest promotion (or
    :data:`FINISH_WAIT` seconds passed)."""
    if trainer is None or waited >= FINISH_WAIT:
        return True
    if trainer.running or trainer.events < target:
        return False
    promoted = trainer.outcomes.get("promoted", 0)
    return not promoted or worker.live_model_version == trainer.live_version
