"""Stream throughput on one embedded broker: Faust ceilings vs the hailstream worker (issue 5 Targets).

In ONE run on the same embedded broker (Tansu) and the same backlog of Foursquare NYC events
(4 partitions), each reader starting from the beginning in its own consumer group:

(a) a Faust agent that only iterates the events (the ceiling),
(b) a Faust agent that sends one message per event (the naive pipeline),
(c) the hailstream worker (``hailstream worker``) serving a 2-peer SASRec HAIL (hidden 64,
    2 layers, max_len 50, full ranking over the whole NYC vocabulary; weights untrained: the cost
    does not depend on them), with its defaults and with the flag combinations in ``--configs``.

Sustained events/s = events after the first batch / time to the last one (the worker's own stats;
the agents time the same span). Then event -> prediction latency (p50 / p99 of Kafka message time
-> prediction produced) while events are published at half of (c)'s default rate, and the time
from ``hailstream demo --checkpoint X`` start to its first published prediction (the demo's own
clock, and from process spawn, by its live view, at 1 s resolution).

    python bench/stream_throughput.py              # ~6-9 minutes on 2 cores

Writes ``bench/results/stream_throughput.json`` and ``.md``; records the machine, the load
average during the run, the command and the date. Goal: (c) >= 50% of (a); p99 <= 100 ms; demo
first prediction < 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, LoadSampler, machine_info, write_results  # isort: skip - bench/ is on the path

DEFAULT_CONFIGS = (
    "",  # the defaults
    "--length-buckets 3",
    "--baseline-sample-every 10",
    "--length-buckets 3 --baseline-sample-every 10",
    "--no-baselines --length-buckets 3",
)


# -- (a) and (b): minimal Faust agents, run as `python bench/stream_throughput.py _agent ...` --------


def agent_main(mode: str, bootstrap: str, topic: str, app_id: str, n: int, out: str) -> None:
    """A Faust worker with one agent that iterates (``mode="iterate"``) or sends one message per
    event (``mode="send"``); writes ``{"rate": events/s}`` to ``out`` after ``n`` events."""
    import faust

    app = faust.App(
        app_id, broker=f"kafka://{bootstrap}", broker_session_timeout=2.0, broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=2.0, topic_partitions=4, topic_disable_leader=True,
        consumer_auto_offset_reset="earliest", web_enabled=False, web_bind="127.0.0.1",
        datadir=tempfile.mkdtemp(prefix="hs-agent-"), key_serializer="raw", value_serializer="raw",
        autodiscover=False,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    sink = app.topic(f"{topic}-echo-{app_id}", partitions=4, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"n": 0, "first": None}

    @app.agent(source)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            if mode == "send":
                await sink.send(key=event.key, value=event.value)
            state["n"] += 1
            if state["first"] is None:
                state["first"] = time.time()
            if state["n"] == n:
                Path(out).write_text(json.dumps({"rate": (n - 1) / (time.time() - state["first"])}))

    faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False).execute_from_commandline()


# -- helpers -----------------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 30 s: never leave a worker behind."""
    from stream.cli.procs import stop_process

    stop_process(proc, grace=30.0)


def wait_for(pred: Any, proc: subprocess.Popen[Any], timeout: float, what: str, log: Path) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited ({proc.returncode}); log tail:\n{log.read_text()[-2000:]}")
        time.sleep(0.25)
    raise RuntimeError(f"{what}: no result within {timeout:.0f} s; log {log}")


def read_json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, json.JSONDecodeError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return {}


# -- the run -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from models.checkpoint import save_checkpoint
    from models.data import load_dataset
    from models.hail import HAIL, HailConfig
    from models.vocab import ItemVocab
    from stream.cli.procs import hailstream_argv
    from stream.cli.replay import replay
    from stream.kafka.broker import EmbeddedBroker
    from stream.kafka.topics import changelog_topic, ensure_topics
    from stream.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="hs-throughput-"))
    events = load_dataset("foursquare-nyc")
    vocab = ItemVocab(events.items.tolist())
    model = HAIL(HailConfig(n_peers=2, hidden=64, layers=2, max_len=50), vocab.rows)
    ckpt = tmp / "model.safetensors"
    save_checkpoint(ckpt, model, vocab, {"version": "bench"})
    n = args.events
    backlog = events.head(n)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(), "events": n, "model": "HAIL 2x SASRec, hidden 64, 2 layers, max_len 50, "
        f"{vocab.rows - 1} items (full ranking), torch threads 1", "rates": {}, "workers": {},
    }

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    load = LoadSampler().__enter__()  # stopped at the end: covers the demo too
    with EmbeddedBroker(log_dir=tmp) as broker:
        base = Settings.from_env({}, bootstrap_servers=broker.bootstrap, interactions_topic=f"bench-in-{uuid.uuid4().hex[:6]}")
        ensure_topics(base)
        log(f"broker {broker.bootstrap}; publishing {n} events to {base.interactions_topic}")
        replay(backlog, base, progress=False)

        for mode in ("iterate", "send"):
            app_id = f"agent-{mode}-{uuid.uuid4().hex[:6]}"
            out = tmp / f"{app_id}.json"
            logf = tmp / f"{app_id}.log"
            with logf.open("w") as lf:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "_agent", mode, broker.bootstrap, base.interactions_topic, app_id, str(n), str(out)],
                    stdout=subprocess.DEVNULL, stderr=lf, cwd=tmp,
                )
                try:
                    wait_for(out.exists, proc, args.timeout, f"agent {mode}", logf)
                    time.sleep(0.3)
                    result["rates"][mode] = read_json(out)["rate"]
                finally:
                    stop(proc)
            log(f"({'a' if mode == 'iterate' else 'b'}) agent {mode}: {result['rates'][mode]:,.0f} events/s")

        def worker(flags: str, topic: str, paced_rate: float | None) -> dict[str, Any]:
            app_id = f"hs-{uuid.uuid4().hex[:6]}"
            s = base.replace(
                app_id=app_id, interactions_topic=topic, predictions_topic=f"p-{app_id}",
                dead_letter_topic=f"d-{app_id}", model_updates_topic=f"m-{app_id}",
            )
            ensure_topics(s, {changelog_topic(s): s.partitions})
            env = {
                **os.environ, "PYTHONPATH": str(ROOT), "HAILSTREAM_LOG_LEVEL": "WARNING",
                "HAILSTREAM_BOOTSTRAP_SERVERS": broker.bootstrap, "HAILSTREAM_APP_ID": app_id,
                "HAILSTREAM_INTERACTIONS_TOPIC": s.interactions_topic, "HAILSTREAM_PREDICTIONS_TOPIC": s.predictions_topic,
                "HAILSTREAM_DEAD_LETTER_TOPIC": s.dead_letter_topic, "HAILSTREAM_MODEL_UPDATES_TOPIC": s.model_updates_topic,
            }
            stats_path, logf = tmp / f"{app_id}.json", tmp / f"{app_id}.log"
            target = n if paced_rate is None else args.latency_events
            with logf.open("w") as lf:
                proc = subprocess.Popen(
                    [*hailstream_argv(), "worker", "--checkpoint", str(ckpt), "--stats-file", str(stats_path), *flags.split()],
                    env=env, stdout=lf, stderr=subprocess.STDOUT, cwd=tmp,
                )
                try:
                    if paced_rate is not None:
                        # Publish only once the worker is up (its stats file appears when it runs) and
                        # has had time to join the group, so the latency is not the start-up time.
                        wait_for(stats_path.exists, proc, args.timeout, "worker start", logf)
                        time.sleep(3.0)
                        replay(events.head(target), s, max_rate=paced_rate, progress=False)
                    wait_for(lambda: read_json(stats_path).get("events", 0) >= target, proc, args.timeout,
                             f"worker {flags!r}", logf)
                    time.sleep(1.2)  # one more stats write: the final counters
                    return read_json(stats_path)
                finally:
                    stop(proc)

        for flags in args.configs:
            st = worker(flags, base.interactions_topic, None)
            rate = float(st.get("events_per_s") or 0.0)
            result["workers"][flags or "(defaults)"] = {
                "events_per_s": rate, "busy_s": st.get("busy_s"), "batches": st.get("batches"),
                "share_of_iterate": rate / result["rates"]["iterate"],
            }
            log(f"(c) worker {flags or '(defaults)'}: {rate:,.0f} events/s, busy {st.get('busy_s')}")

        best = max(result["workers"], key=lambda f: result["workers"][f]["events_per_s"])
        result["best_flags"] = best
        result["latency"] = {}
        for flags in dict.fromkeys(["(defaults)", best]):
            rate = result["workers"][flags]["events_per_s"] / 2
            topic = f"bench-paced-{uuid.uuid4().hex[:6]}"
            ensure_topics(base.replace(interactions_topic=topic))
            st = worker("" if flags == "(defaults)" else flags, topic, rate)
            lat = st.get("latency_s") or {}
            result["latency"][flags] = {"offered_rate": rate, **{k: v for k, v in lat.items()}}
            log(f"latency {flags} at {rate:,.0f} events/s: {lat}")
        result["load_during_throughput"] = load.summary()

    if not args.skip_demo:
        result["demo"] = demo_start(ckpt, tmp, args)
        log(f"demo: {result['demo']}")
    load.__exit__()
    result["load_average"] = load.summary()
    return result


def demo_start(ckpt: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Spawn ``hailstream demo --checkpoint X`` (embedded broker) and time its first prediction."""
    from stream.cli.procs import hailstream_argv

    summary_path = tmp / "demo-summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILSTREAM_")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [*hailstream_argv(), "demo", "--checkpoint", str(ckpt), "--limit", str(args.demo_limit),
           "--summary-json", str(summary_path)]
    spawned = time.time()
    first_live: float | None = None
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"events\s+([\d,]+)/", line)
            if first_live is None and m and int(m.group(1).replace(",", "")) > 0:
                first_live = time.time() - spawned
        proc.wait(args.timeout)
    finally:
        stop(proc)
    summary = read_json(summary_path)
    return {
        "command": "hailstream demo --checkpoint X --limit " + str(args.demo_limit),
        "first_prediction_s_demo_clock": summary.get("first_prediction_s"),
        "first_prediction_s_from_spawn": first_live,
        "wall_s": time.time() - spawned,
        "complete": summary.get("complete"),
        "returncode": proc.returncode,
    }


def markdown(r: dict[str, Any]) -> str:
    it = r["rates"]["iterate"]
    lines = [
        "# Stream throughput (issue 5 Targets)", "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- machine: {r['machine']['nproc']} cores, {r['machine']['cpu']}; Python {r['machine']['python']}",
        f"- load average (1 min) during the run: min {r['load_average']['min']:.2f}, mean "
        f"{r['load_average']['mean']:.2f}, max {r['load_average']['max']:.2f} (other jobs share the machine)",
        f"- backlog: {r['events']} Foursquare NYC events, 4 partitions, one embedded Tansu broker; {r['model']}", "",
        "| reader | events/s | share of (a) |", "|---|---:|---:|",
        f"| (a) Faust agent, iterate only | {it:,.0f} | 100% |",
        f"| (b) Faust agent, one send per event | {r['rates']['send']:,.0f} | {r['rates']['send'] / it:.0%} |",
    ]
    for flags, w in r["workers"].items():
        lines.append(f"| (c) hailstream worker `{flags}` | {w['events_per_s']:,.0f} | {w['share_of_iterate']:.0%} |")
    lines += ["", f"Best flags: `{r['best_flags']}`.", "", "| worker flags | offered events/s | p50 ms | p99 ms | max ms |",
              "|---|---:|---:|---:|---:|"]
    for flags, lat in r["latency"].items():
        def ms(key: str, lat: dict[str, Any] = lat) -> str:
            return f"{lat[key] * 1000:.0f}" if lat.get(key) is not None else "n/a"
        lines.append(f"| `{flags}` | {lat['offered_rate']:,.0f} | {ms('p50')} | {ms('p99')} | {ms('max')} |")
    if "demo" in r:
        d = r["demo"]
        def sec(v: float | None) -> str:
            return f"{v:.1f} s" if v is not None else "n/a"
        lines += ["", f"Demo (`{d['command']}`, embedded broker): first published prediction after "
                  f"{sec(d['first_prediction_s_demo_clock'])} on the demo's clock, {sec(d['first_prediction_s_from_spawn'])} "
                  f"from process spawn (1 s resolution); whole run {d['wall_s']:.0f} s, complete={d['complete']}."]
    lines += ["", "Worker busy seconds by phase (from its stats):", ""]
    for flags, w in r["workers"].items():
        busy = ", ".join(f"{k} {v:.1f}" for k, v in (w.get("busy_s") or {}).items())
        lines.append(f"- `{flags}`: {busy} ({w.get('batches')} batches)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_agent"]:
        mode, bootstrap, topic, app_id, n, out = argv[1:7]
        agent_main(mode, bootstrap, topic, app_id, int(n), out)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000, help="backlog size for the throughput runs")
    ap.add_argument("--latency-events", type=int, default=6000, help="events published at half rate for latency")
    ap.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS), help="worker flag strings ('' = defaults)")
    ap.add_argument("--demo-limit", type=int, default=1000)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds allowed per step")
    ap.add_argument("--out", type=Path, default=RESULTS / "stream_throughput")
    args = ap.parse_args(argv)
    if "" not in args.configs:
        args.configs = ["", *args.configs]
    result = run(args)
    write_results(args.out, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
