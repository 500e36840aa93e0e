"""Worker memory on an endless stream, end to end (issue 12): a real ``hailstream worker`` process on
the embedded broker sees ``--events`` events, each of a NEW user (the worst case for per-user state),
with ``--max-users`` as its cap; its RSS (``/proc/<pid>/statm``) is sampled against the events it
has processed (its stats file). The curve must level off once the cap is reached.

:mod:`bench.memory_soak` measures the same in-process (``process_batch`` only, 1 M events); this
one adds what only the real worker has: Faust's table and its changelog, the consumer, the
producer, the event loop. The backlog is published first (kafka-python), then the worker drains it.

    python bench/worker_soak.py --events 150000 --max-users 20000 --out bench/results/worker_soak
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import RESULTS, LoadSampler, rss_mb, run_header, write_results  # isort: skip - bench/ is on the path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--max-users", type=int, default=20_000, help="the worker's --max-users (0 = unbounded)")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between two samples")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", default=str(RESULTS / "worker_soak"))
    args = ap.parse_args()

    from models.checkpoint import save_checkpoint
    from models.hail import HAIL, HailConfig
    from models.vocab import ItemVocab
    from stream.cli.procs import hailstream_argv, stop_process
    from stream.kafka.broker import EmbeddedBroker
    from stream.kafka.clients import make_producer
    from stream.kafka.topics import ensure_worker_topics
    from stream.records import Interaction
    from stream.settings import Settings

    res = run_header()
    res.update(events=args.events, max_users=args.max_users, items=args.items, samples=[])
    tmp = Path(tempfile.mkdtemp(prefix="hs-soak-"))
    items = [f"i{j}" for j in range(args.items)]
    vocab = ItemVocab(items)
    ckpt = tmp / "model.safetensors"
    save_checkpoint(ckpt, HAIL(HailConfig(n_peers=2, hidden=32, layers=1, max_len=50), vocab.rows), vocab,
                    {"version": "soak"})
    load = LoadSampler().__enter__()
    with EmbeddedBroker(log_dir=tmp) as broker:
        app_id = f"soak-{uuid.uuid4().hex[:6]}"
        s = Settings.from_env({}, bootstrap_servers=broker.bootstrap, app_id=app_id,
                              interactions_topic=f"in-{app_id}", predictions_topic=f"p-{app_id}",
                              dead_letter_topic=f"d-{app_id}", model_updates_topic=f"m-{app_id}")
        ensure_worker_topics(s)
        producer = make_producer(s)
        t0 = time.time()
        for n in range(args.events):  # every event a new user
            event = Interaction(f"u{n}", items[(n * 7919) % args.items], 1.7e9 + n, event_id=f"e{n}")
            producer.send(s.interactions_topic, key=event.user_id.encode(), value=event.to_json())
        producer.flush()
        producer.close()
        res["publish_s"] = time.time() - t0
        print(f"published {args.events:,} events in {res['publish_s']:.0f} s", flush=True)
        stats = tmp / "stats.json"
        env = {**os.environ, "HAILSTREAM_LOG_LEVEL": "WARNING", "HAILSTREAM_METRICS_PORT": "0"}
        with (tmp / "worker.log").open("w") as lf:
            proc = subprocess.Popen(
                [*hailstream_argv(), "worker", "--checkpoint", str(ckpt), "--stats-file", str(stats),
                 "--bootstrap-servers", broker.bootstrap, "--app-id", app_id, "--interactions-topic", s.interactions_topic,
                 "--predictions-topic", s.predictions_topic, "--dead-letter-topic", s.dead_letter_topic,
                 "--model-updates-topic", s.model_updates_topic, "--max-users", str(args.max_users)],
                env=env, stdout=lf, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            started = time.time()
            while time.time() - started < args.timeout:
                time.sleep(args.every)
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited ({proc.returncode}); see {tmp / 'worker.log'}")
                try:
                    events = int(json.loads(stats.read_text()).get("events", 0))
                except (OSError, ValueError):
                    continue
                try:
                    rss = rss_mb(proc.pid)
                except OSError:  # it exited between the poll and the read: the next poll says so
                    continue
                res["samples"].append({"t": round(time.time() - started, 1), "events": events, "rss_mb": rss})
                print(f"{events:>9,} events  RSS {rss:.0f} MB", flush=True)
                if events >= args.events:
                    break
        finally:
            stop_process(proc, grace=30.0)
    load.__exit__()
    res["load_average"] = load.summary()
    write_results(args.out, res, markdown)


def markdown(res: dict[str, Any]) -> str:
    samples = res["samples"]
    lines = [f"Command: `{res['command']}`", f"Machine: {res['machine']}", f"Date: {res['date']}; load average "
             f"before {res['loadavg_start'][0]:.2f}, during {res.get('load_average')}", "",
             f"{res['events']:,} events, each of a new user; worker `--max-users {res['max_users']}`; "
             f"{res['items']} items; backlog published first ({res.get('publish_s', 0):.0f} s).", "",
             "| events processed | worker RSS MB |", "|---:|---:|"]
    step = max(1, len(samples) // 12)
    shown = samples[::step] + ([samples[-1]] if samples and samples[-1] is not samples[::step][-1] else [])
    lines += [f"| {s['events']:,} | {s['rss_mb']:.0f} |" for s in shown]
    if samples:
        half = [s for s in samples if s["events"] >= res["events"] // 2]
        if half:
            lines += ["", f"Second half of the stream: RSS {min(s['rss_mb'] for s in half):.0f}–"
                      f"{max(s['rss_mb'] for s in half):.0f} MB (from {half[0]['events']:,} events to {samples[-1]['events']:,})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
