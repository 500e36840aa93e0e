"""Worker throughput while the trainer fine-tunes, and model update latency, on the real broker.

Everything runs on this machine, as deployed: the embedded broker (Tansu), one worker process
(``hailstream worker``, defaults: baselines on, 1 torch thread) and one trainer process
(``hailstream trainer``, 1 torch thread), the model the demo serves (2-SASRec-peer HAIL preset:
hidden 64, 2 layers, max_len 50) over the Foursquare NYC T0 vocabulary (weights untrained: neither
measure depends on them; the gate tolerance is 1.0 so that every candidate is promoted).

1. **Throughput**: a backlog of events is published as fast as possible and the worker's rate is
   read from its stats file over ``--measure`` seconds, (a) while the trainer only consumes and
   (b) while it runs a fine-tune (started by a ``trigger`` message, long enough to cover the
   whole measurement). Goal: (b) >= 70% of (a).
2. **Model update latency**: while events flow at ``--rate`` events/s, a ``trigger`` message is
   sent (what a worker's drift detection sends); the latency is the time from that message to the
   first prediction made by the new version, split into fine-tune (+ gate + store write),
   announcement, the worker's load + swap, and the next prediction. The trainer uses its default
   fine-tune budget (``TrainerSettings``). Goal: < 60 s.

3. **Drift scenario** (``--drift``): ``hailstream demo --drift`` exactly as a user runs it (every
   POI renamed half-way; worker, trainer, gate and the worker's post-swap guard at their
   defaults). For every promotion the guard shadow-scores the version it replaced on the same
   events (up to ``HAILSTREAM_GUARD_EVENTS`` = 1,000 paired events): the share of promotions that
   improved live accuracy over them (goal 100%), the rollbacks, and the update latency (shift ->
   detection -> drift fine-tune -> swap).

    python bench/lifecycle_latency.py            # ~5-8 minutes
    python bench/lifecycle_latency.py --drift    # ~3-10 minutes (the demo trains its model first unless cached)

Writes ``bench/results/lifecycle_latency.json`` and ``.md`` (``lifecycle_drift.*`` with ``--drift``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import save_checkpoint
from models.data import load_dataset
from models.hail import HAIL
from models.presets import preset
from models.vocab import ItemVocab
from stream.cli.demo import split_stream
from stream.cli.procs import spawn_hailstream, stop_process
from stream.cli.replay import generate_load
from stream.kafka.broker import EmbeddedBroker
from stream.kafka.clients import make_producer
from stream.kafka.topics import ensure_worker_topics
from stream.messages import CONTROL_KEY, trigger_message
from stream.records import Prediction
from stream.settings import Settings
from stream.snapshots import read_stats

from _common import ROOT, run_header, write_results  # isort: skip - bench/ is on the path


def _spawn(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return spawn_hailstream(args, settings.replace(log_level="INFO"), log, cwd=ROOT)


def _stats(path: Path) -> dict[str, Any]:
    try:
        return read_stats(path)
    except Exception:  # not written yet, or being replaced
        return {}


def _wait(what: str, check: Any, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _trigger(settings: Settings) -> float:
    producer = make_producer(settings, linger_ms=0)
    try:
        sent = time.time()
        producer.send(settings.model_updates_topic, key=CONTROL_KEY, value=trigger_message("manual")).get(timeout=10)
        return sent
    finally:
        producer.close()


def measure_rate(settings: Settings, events: Any, stats: Path, seconds: float, backlog: int,
                 during: Any = None) -> dict[str, Any]:
    """Publish ``backlog`` events at once and measure the worker's events/s over ``seconds``."""
    start_events = _stats(stats).get("events", 0)
    publisher = threading.Thread(target=generate_load, args=(events, settings, backlog), daemon=True)
    publisher.start()
    _wait("the worker to start on the backlog", lambda: _stats(stats).get("events", 0) > start_events + 500)
    s0 = _stats(stats)
    t0, e0 = s0["written_at"], s0["events"]
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.5)
        s = _stats(stats)
        samples.append((s["written_at"], s["events"], during() if during else None))
        if s["events"] >= start_events + backlog - 200:
            break
    t1, e1, _ = samples[-1]
    publisher.join()
    _wait("the worker to drain the backlog", lambda: _stats(stats).get("events", 0) >= start_events + backlog)
    caught_up_before_end = e1 >= start_events + backlog - 200
    return {"events_per_s": (e1 - e0) / (t1 - t0), "events": e1 - e0, "seconds": t1 - t0,
            "backlog_exhausted_early": caught_up_before_end,
            "condition_held": all(c for *_, c in samples) if during else None}


def first_prediction_of(settings: Settings, version: str, after: float, timeout: float = 300.0) -> float:
    """produced_at of the first prediction made by ``version`` (reads the predictions topic)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.predictions_topic, group_id=f"bench-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=2000,
                             heartbeat_interval_ms=500, **settings.kafka_python_kwargs())
    best: float | None = None
    try:
        deadline = time.monotonic() + timeout
        idle_after_found = 0
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    p = Prediction.from_json(r.value)
                    if p.model_version == version and p.produced_at >= after:
                        best = p.produced_at if best is None else min(best, p.produced_at)
            if best is not None:
                idle_after_found = idle_after_found + 1 if not batch else 0
                if idle_after_found >= 2 or not batch:
                    break
        if best is None:
            raise RuntimeError(f"no prediction by {version} within {timeout:g} s")
        return best
    finally:
        consumer.close()


def markdown(res: dict[str, Any]) -> str:
    th, lat = res["throughput"], res["latency"]
    lines = ["# Lifecycle on the real broker: worker throughput during fine-tuning, model update latency", "",
             f"{res['date']} · {res['machine']} · load average at start {res['loadavg_start']} · "
             f"`{res['command']}`", "",
             *[f"- Note: {n}" for n in res.get("notes", [])], "",
             "## Worker throughput (events/s, from its stats file)", "",
             "| trainer | events/s | measured over |", "|---|---|---|",
             f"| idle (consuming only) | {th['idle']['events_per_s']:.0f} | {th['idle']['seconds']:.1f} s |",
             f"| fine-tuning | {th['fine_tuning']['events_per_s']:.0f} | {th['fine_tuning']['seconds']:.1f} s |",
             "", f"ratio: **{th['ratio']:.0%}** (goal >= 70%); fine-tune running throughout the measurement: "
             f"{th['fine_tuning']['condition_held']}", "",
             "## Model update latency (trigger message -> first prediction by the new version)", "",
             "| run | total s | trigger -> announced s | of which fine-tune + gate s | announced -> swapped s "
             "| of which load s | swapped -> first prediction s |",
             "|---|---|---|---|---|---|---|"]
    for n, r in enumerate(lat["runs"], 1):
        lines.append(f"| {n} | {r['total_s']:.1f} | {r['to_announce_s']:.1f} | {r['finetune_s']:.1f} | "
                     f"{r['swap_s']:.2f} | {r['load_s']:.2f} | {r['to_prediction_s']:.2f} |")
    lines += ["", f"median total: **{lat['median_total_s']:.1f} s** (goal < 60 s), at {res['settings']['rate']} "
              "events/s; fine-tune budget: TrainerSettings defaults "
              f"({res['trainer_config']['steps']} steps x batch {res['trainer_config']['batch_size']}, holdout "
              f"{res['trainer_config']['holdout']} events)", ""]
    return "\n".join(lines)


def drift_scenario(limit: int, tmp: Path) -> dict[str, Any]:
    """Run ``hailstream demo --drift --limit N`` and judge its promotions by the guard's verdicts."""
    summary_path = tmp / "drift-summary.json"
    exe = shutil.which("hailstream") or str(Path(sys.executable).parent / "hailstream")
    cmd = [exe, "demo", "--drift", "--limit", str(limit), "--summary-json", str(summary_path),
           "--metrics-port", "0", "--trainer-metrics-port", "0"]
    started = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    summary = json.loads(summary_path.read_text())
    run_dir = Path(summary["run_dir"])
    worker = json.loads((run_dir / "stats.json").read_text())
    trainer = json.loads((run_dir / "trainer.json").read_text())
    verdicts = worker.get("guard_verdicts", []) + ([worker["guard"]] if worker.get("guard") else [])
    promoted = [h for h in trainer.get("history", []) if h.get("outcome") == "promoted"]
    judged = {v["version"]: v for v in verdicts}
    rows = []
    for h in promoted:
        v = judged.get(h["version"])
        # judged: a verdict over the whole window (kept / rollback); a window cut short by the next
        # swap ("replaced") or by the end of the run ("running") is shown, not counted
        decided = v is not None and v["action"] in ("kept", "rollback")
        rows.append({"version": h["version"], "reason": h["reason"],
                     "gate": {"candidate": h["candidate"].get("ndcg@10"), "live": h["live"].get("ndcg@10")},
                     "guard": v, "improved": (v["new"] > v["old"]) if decided and v is not None else None})
    decided = [r for r in rows if r["improved"] is not None]
    return {
        "command": " ".join(["hailstream", *cmd[1:]]), "seconds": time.time() - started, "run_dir": str(run_dir),
        "promotions": len(promoted), "fine_tunes": trainer.get("fine_tunes"), "outcomes": trainer.get("outcomes"),
        "rollbacks": worker.get("rollbacks", 0), "rolled_back": trainer.get("rolled_back", []),
        "judged": len(decided), "improved_share": (sum(r["improved"] for r in decided) / len(decided)) if decided else None,
        "rows": rows, "drift": summary.get("drift"), "prequential": summary.get("scorers") or summary.get("prequential"),
    }


def drift_markdown(res: dict[str, Any]) -> str:
    d = res["drift_scenario"]
    lines = ["# Lifecycle in the drift scenario: do promotions improve live accuracy?", "",
             f"{res['date']} · {res['machine']} · load average at start {res['loadavg_start']} · `{res['command']}` "
             f"(runs `{d['command']}`, {d['seconds']:.0f} s)", "",
             *[f"- Note: {n}" for n in res.get("notes", [])], "",
             "Each promoted version, judged by the worker's post-swap guard: the new and the previous version scored "
             "on the same events after the swap (NDCG@10, prequential, up to 1,000 paired events).", "",
             "| version | trigger | gate NDCG@10 cand / live | guard verdict | pairs | new | previous | improved |",
             "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        g, v = r["gate"], r["guard"]
        gate = f"{g['candidate']:.4f} / {g['live']:.4f}" if g["candidate"] is not None else "-"
        if v is None:
            lines.append(f"| {r['version']} | {r['reason']} | {gate} | none (not served) | - | - | - | - |")
        else:
            improved = "-" if r["improved"] is None else ("yes" if r["improved"] else "no")
            action = {"replaced": "none: next swap came first", "running": "none: run ended"}.get(v["action"], v["action"])
            lines.append(f"| {r['version']} | {r['reason']} | {gate} | {action} | {v['n']} | {v['new']:.4f} | "
                         f"{v['old']:.4f} | {improved} |")
    share = d["improved_share"]
    lines += ["", f"promotions: {d['promotions']} (fine-tunes {d['fine_tunes']}, outcomes {d['outcomes']}); judged by the "
              f"guard: {d['judged']}; improved live accuracy: **{'-' if share is None else f'{share:.0%}'}** (goal 100%); "
              f"rollbacks: **{d['rollbacks']}** {d['rolled_back']}", ""]
    drift = d.get("drift") or {}
    if drift:
        first, ft, swap = drift.get("first_detection") or {}, drift.get("finetune") or {}, drift.get("swap") or {}
        hr = (drift.get("window_hr@10") or {}).get("model", {})
        lines += ["Update latency after the shift at event {:,}: first detection {} after {} events; drift fine-tune "
                  "{} {} ({} s); swap to {} {} events after the shift. Windowed HR@10 of the model: before {}, "
                  "lowest {}, at the swap {}, end {}.".format(
                      drift.get("at", 0), first.get("detector"), first.get("delay_events"), ft.get("outcome"),
                      ft.get("version"), None if ft.get("seconds") is None else round(ft["seconds"], 1),
                      swap.get("version"), swap.get("after_drift_events"),
                      *(None if hr.get(k) is None else round(hr[k], 3) for k in ("before", "lowest_after", "at_swap", "end"))),
                  ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", type=float, default=20.0, help="seconds of each throughput measurement")
    ap.add_argument("--backlog", type=int, default=60_000, help="events published for each throughput phase")
    ap.add_argument("--rate", type=float, default=200.0, help="events/s during the latency runs")
    ap.add_argument("--runs", type=int, default=2, help="latency measurements")
    ap.add_argument("--steps", type=int, default=None, help="fine-tune steps of the latency runs (default: TrainerSettings)")
    ap.add_argument("--out", default=None, help="result file (default bench/results/lifecycle_latency.json, "
                    "lifecycle_drift.json with --drift)")
    ap.add_argument("--drift", action="store_true", help="run the drift scenario (hailstream demo --drift) instead")
    ap.add_argument("--drift-limit", type=int, default=10_000, help="events the drift scenario replays")
    ap.add_argument("--note", action="append", default=[], help="a note recorded with the results (e.g. the load)")
    args = ap.parse_args(argv)
    default = "lifecycle_drift.json" if args.drift else "lifecycle_latency.json"
    args.out = args.out or str(ROOT / "bench" / "results" / default)
    from stream.settings import TrainerSettings

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="hailstream-lifecycle-bench-"))
    res: dict[str, Any] = {
        **run_header(),
        "settings": vars(args),
        "trainer_config": {**TrainerSettings().model_dump(mode="json"), **({"steps": args.steps} if args.steps else {})},
        "notes": list(args.note),
    }
    if args.drift:
        res["drift_scenario"] = drift_scenario(args.drift_limit, tmp)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=str))
        out.with_suffix(".md").write_text(drift_markdown(res))
        print(drift_markdown(res))
        return 0
    events = load_dataset("foursquare-nyc")
    known, _ = split_stream(events)  # block T0
    vocab = ItemVocab(dict.fromkeys(known.items.tolist()))
    initial = save_checkpoint(tmp / "initial.safetensors", HAIL(preset("hail"), vocab.rows), vocab, {"version": "1"})
    worker = trainer = None
    with EmbeddedBroker(log_dir=tmp) as broker:
        tag = uuid.uuid4().hex[:8]
        settings = Settings.from_env({}, bootstrap_servers=broker.bootstrap, app_id=f"bench-{tag}",
                                     interactions_topic=f"bench-{tag}.in", predictions_topic=f"bench-{tag}.out",
                                     dead_letter_topic=f"bench-{tag}.dlq", model_updates_topic=f"bench-{tag}.models",
                                     model_dir=tmp / "models", metrics_port=0, trainer_metrics_port=0)
        ensure_worker_topics(settings)
        wstats, tstats = tmp / "worker.json", tmp / "trainer.json"
        try:
            worker = _spawn(["worker", "--checkpoint", str(initial), "--stats-file", str(wstats)], settings,
                            tmp / "worker.log")
            # 1. throughput: a trainer with no automatic trigger and a fine-tune that outlasts the measurement
            trainer = _spawn(["trainer", "--checkpoint", str(initial), "--stats-file", str(tstats),
                              "--every-events", "100000000", "--min-new-events", "1000", "--steps", "100000",
                              "--tolerance", "1.0", "--no-drift"], settings, tmp / "trainer-1.log")
            _wait("worker and trainer", lambda: wstats.exists() and tstats.exists(), 120)
            generate_load(events, settings, 3000)  # warm-up: first batches, JIT of the allocator, group joins
            _wait("warm-up", lambda: _stats(wstats).get("events", 0) >= 3000)
            idle = measure_rate(settings, events, wstats, args.measure, args.backlog,
                                during=lambda: not _stats(tstats).get("running"))
            _trigger(settings)
            _wait("the fine-tune to start", lambda: _stats(tstats).get("running"), 120)
            busy = measure_rate(settings, events, wstats, args.measure, args.backlog,
                                during=lambda: _stats(tstats).get("running"))
            res["throughput"] = {"idle": idle, "fine_tuning": busy,
                                 "ratio": busy["events_per_s"] / idle["events_per_s"]}
            print(json.dumps(res["throughput"]), flush=True)
            stop_process(trainer)

            # 2. latency with the default fine-tune budget
            steps = ["--steps", str(args.steps)] if args.steps else []
            trainer = _spawn(["trainer", "--stats-file", str(tstats), "--every-events", "100000000",
                              "--min-new-events", "1000", "--tolerance", "1.0", "--no-drift", *steps], settings,
                             tmp / "trainer-2.log")
            stop_flow = threading.Event()

            def flow() -> None:
                while not stop_flow.is_set():
                    generate_load(events, settings, int(args.rate * 5), rate=args.rate)

            flow_thread = threading.Thread(target=flow, daemon=True)
            flow_thread.start()
            time.sleep(10)  # trainer joined, window refilled, events flowing
            runs = []
            for _ in range(args.runs):
                done = _stats(tstats).get("outcomes", {}).get("promoted", 0)
                sent = _trigger(settings)
                t = _wait("a promotion", lambda done=done: (s := _stats(tstats)).get("outcomes", {}).get("promoted", 0)
                          > done and s, 600)
                version = t["live_version"]
                ann = next(a for a in t["announced"] if a["version"] == version)
                swap = _wait("the worker's swap", lambda version=version: (s := _stats(wstats)).get("live_model_version")
                             == version and s["last_swap"], 120)
                first = first_prediction_of(settings, version, sent)
                hist = next(h for h in reversed(t["history"]) if h["version"] == version)
                runs.append({"version": version, "total_s": first - sent, "to_announce_s": ann["announced_at"] - sent,
                             "finetune_s": hist["seconds"], "swap_s": swap["at"] - ann["announced_at"],
                             "load_s": swap["load_seconds"], "to_prediction_s": first - swap["at"],
                             "train_rows": hist["train_rows"], "holdout": hist["holdout"]})
                print(json.dumps(runs[-1]), flush=True)
            stop_flow.set()
            flow_thread.join(30)
            res["latency"] = {"runs": runs, "median_total_s": statistics.median(r["total_s"] for r in runs)}
        finally:
            stop_process(trainer)
            stop_process(worker)
    write_results(args.out, res, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
