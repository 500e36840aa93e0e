"""Stream throughput on one embedded broker: Faust ceilings vs the hailstream worker (issues 5 and 14).

In ONE run on the same embedded broker (Tansu) and the same backlog of Foursquare NYC events
(4 partitions), each reader starting from the beginning in its own consumer group:

(a) a Faust agent that only iterates the events (the ceiling),
(b) a Faust agent that sends one message per event (the naive pipeline),
(c) the hailstream worker (``hailstream worker``) serving a 2-peer SASRec HAIL (hidden 64,
    2 layers, max_len 50, full ranking over the whole NYC vocabulary; weights untrained: the cost
    does not depend on them), with its defaults and with the flag combinations in ``--configs``,
(d) two hailstream workers (defaults) in one consumer group on the 4 partitions (2 each), on
    the same machine, fed once both have joined.

Sustained events/s = events after the first batch / time to the last one (the worker's own stats;
the agents time the same span; for (d) also both workers together, first batch to last). Then event
-> prediction latency (p50 / p99 of Kafka message time -> prediction produced) while events are
published at half of (c)'s default rate (and, for (d), at half of the pair's rate), and the time from
``hailstream demo --checkpoint X`` start to its first published prediction (``--skip-demo`` skips it).

Per event, from the worker's stats: CPU microseconds of the batch thread by phase (prepare /
inference / baselines / finish; ``busy_cpu_s``), wall microseconds of the send (the event loop's,
``busy_s["send"]``) and the whole process's CPU (``/proc/<pid>/stat``, from its first batch on).
Memory per user: the table state's bytes (JSON, as stored and changelogged, and in Python) for users
with a full sequence, and the incremental-inference cache's bytes per cached sequence
(:meth:`models.incremental.IncrementalScorer.bytes_per_entry`: of the served model with
``--positions start``, else of a GRU4Rec HAIL of the same size).

    python bench/stream_throughput.py --skip-demo     # 20k events; at load ~7 on 2 cores, 10k events took 11 min
    python bench/stream_throughput.py --configs "" --events 10000 --latency-events 3000 --skip-demo

Writes ``bench/results/stream_throughput.json`` and ``.md``; records the machine, the load
average during the run, the command and the date. Targets: (c) >= 50% of (a); p50 <= 30 ms and
p99 <= 100 ms at half (c)'s rate; inference <= 60 us CPU per event per peer; (d) >= 1.6x (c);
demo first prediction < 30 s.
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
    "--no-baselines",  # what the baselines cost
)
PEERS = 2


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


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; None elsewhere)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def per_event(st: dict[str, Any]) -> dict[str, Any]:
    """Microseconds per event by phase from a worker's stats: CPU of the batch thread, and wall."""
    events = max(1, int(st.get("events") or 0))
    cpu = {k: 1e6 * v / events for k, v in (st.get("busy_cpu_s") or {}).items()}
    wall = {k: 1e6 * v / events for k, v in (st.get("busy_s") or {}).items()}
    return {"cpu_us": cpu, "wall_us": wall, "inference_cpu_us_per_peer": cpu.get("inference", 0.0) / PEERS}


def per_batch_wall_ms(st: dict[str, Any]) -> dict[str, float]:
    """Milliseconds of wall time per batch by phase (where a batch's cycle goes), from a worker's stats.

    >>> per_batch_wall_ms({"batches": 4, "busy_s": {"inference": 0.02, "send": 0.01}})
    {'inference': 5.0, 'send': 2.5}
    """
    batches = max(1, int(st.get("batches") or 0))
    return {k: 1e3 * v / batches for k, v in (st.get("busy_s") or {}).items()}


def read_topic(settings: Any, topic: str, timeout: float = 10.0) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the beginning), kafka-python, no group."""
    from kafka import TopicPartition

    from stream.kafka.clients import make_consumer

    consumer = make_consumer(settings, consumer_timeout_ms=int(timeout * 1000))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p_) for p_ in sorted(parts)])
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def topic_latencies(settings: Any, skip: int) -> dict[str, Any]:
    """Event -> prediction latency of each event after the first ``skip`` published (the warm-up:
    first batches, lazy imports, the group settling), matched by event id: the input record's
    Kafka time -> the prediction's ``produced_at``. Per worker too, by the input partition."""
    import numpy as np

    sent = {}
    for rec in read_topic(settings, settings.interactions_topic):
        sent[json.loads(rec.value)["event_id"]] = (rec.timestamp / 1000.0, rec.partition)
    produced: dict[str, float] = {}
    for rec in read_topic(settings, settings.predictions_topic):
        value = json.loads(rec.value)
        produced.setdefault(value["event_id"], value["produced_at"])  # at-least-once: the first one
    order = sorted(sent, key=lambda e: sent[e][0])[skip:]
    lat = [(produced[e] - sent[e][0], sent[e][1]) for e in order if e in produced]
    out: dict[str, Any] = {"events": len(order), "predicted": len(lat), "skipped_warmup": skip}
    if lat:
        a = np.array([x for x, _ in lat])
        out.update(p50=float(np.percentile(a, 50)), p99=float(np.percentile(a, 99)), max=float(a.max()))
        by_part = {}
        for part in sorted({q for _, q in lat}):
            b = np.array([x for x, q in lat if q == part])
            by_part[part] = {"n": int(b.size), "p50": float(np.percentile(b, 50)), "p99": float(np.percentile(b, 99))}
        out["by_partition"] = by_part
    return out


def memory_per_user(events: Any, model: Any, vocab: Any, n: int) -> dict[str, Any]:
    """Bytes of one user's table state (JSON and Python objects) after ``n`` events through
    ``process_batch`` (in-process, no broker), for users whose sequence is full, and of one cached
    incremental-inference state (a GRU4Rec HAIL of the same width, depth and peers)."""
    import numpy as np

    from models.hail import HAIL, HailConfig
    from models.incremental import IncrementalScorer
    from stream.settings import Settings
    from stream.worker.batch import Source, new_prequential, process_batch
    from stream.worker.recommender import OnlineBaselines, OnlineRecommender

    settings = Settings()
    rec = OnlineRecommender(model, vocab, "bench")
    baselines = OnlineBaselines(1000, max_users=settings.worker.max_users, max_items=settings.worker.baseline_max_items,
                                max_next=settings.worker.baseline_max_next)
    preq = new_prequential(settings.top_k, baselines)
    table: dict[str, Any] = {}
    rows = list(zip(events.users.tolist(), events.items.tolist(), events.ts.tolist(), strict=True))[:n]
    for start in range(0, len(rows), 256):
        batch = [Source(json.dumps({"user_id": str(u), "item_id": str(i), "ts": float(t), "event_id": f"e{start + j}"}
                                   ).encode(), "in", 0, start + j, None, str(u).encode())
                 for j, (u, i, t) in enumerate(rows[start:start + 256])]
        out = process_batch(batch, table.get, rec, baselines, preq, settings)
        for user, upd in out.updates.items():
            table[user] = upd.value

    def deep(o: Any) -> int:
        if isinstance(o, dict):
            return sys.getsizeof(o) + sum(deep(k) + deep(v) for k, v in o.items())
        if isinstance(o, (list, tuple)):
            return sys.getsizeof(o) + sum(deep(v) for v in o)
        return sys.getsizeof(o)

    full = [v for v in table.values() if len(v["items"]) == settings.max_seq_len]
    json_b = [len(json.dumps(v, separators=(",", ":"))) for v in full]
    py_b = [deep(v) for v in full]
    if IncrementalScorer.supports(model):
        cached, what = model.eval(), f"the served HAIL, {PEERS}x SASRec with positions from the start"
    else:  # a GRU4Rec HAIL of the same size: the served SASRec (positions from the end) has no state
        cached = HAIL(HailConfig(n_peers=PEERS, encoders=("gru4rec",), hidden=64, layers=2, max_len=50), vocab.rows).eval()
        what = f"HAIL {PEERS}x GRU4Rec"
    inc = IncrementalScorer(cached, capacity=10_000)
    seqs = [vocab.lookup(v["items"][: settings.max_seq_len - 1]) for v in table.values()]
    seqs = [s_[s_ > 0] for s_ in seqs if (s_ > 0).sum() < settings.max_seq_len][:2000]
    for start in range(0, len(seqs), 256):
        inc.log_probs([s_ for s_ in seqs[start:start + 256] if s_.size])
    return {
        "events": len(rows), "users": len(table), "full_users": len(full), "max_seq_len": settings.max_seq_len,
        "table_json_bytes_per_full_user": float(np.mean(json_b)) if json_b else None,
        "table_python_bytes_per_full_user": float(np.mean(py_b)) if py_b else None,
        "incremental_cache_entries": len(inc),
        "incremental_cache_bytes_per_sequence": inc.bytes_per_entry(),
        "incremental_model": f"{what}, hidden 64, 2 layers",
    }


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
    from stream.kafka.topics import ensure_topics, ensure_worker_topics
    from stream.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="hs-throughput-"))
    print(f"uptime before: {uptime()}", flush=True)
    events = load_dataset("foursquare-nyc")
    vocab = ItemVocab(events.items.tolist())
    model = HAIL(HailConfig(n_peers=2, hidden=64, layers=2, max_len=50, positions=args.positions), vocab.rows)
    ckpt = tmp / "model.safetensors"
    save_checkpoint(ckpt, model, vocab, {"version": "bench"})
    n = args.events
    backlog = events.head(n)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(), "events": n, "latency_events": args.latency_events,
        "latency_warmup": args.latency_warmup, "model": "HAIL 2x SASRec, hidden 64, 2 layers, max_len 50, "
        f"positions from the {args.positions}, {vocab.rows - 1} items (full ranking), torch threads 1",
        "rates": {}, "workers": {},
    }

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    result["uptime_before"] = uptime()
    result["memory"] = memory_per_user(events, model, vocab, args.memory_events)
    log(f"memory per user: {result['memory']}")
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

        def workers(flags: str, topic: str, paced_rate: float | None, count: int = 1) -> list[dict[str, Any]]:
            """Run ``count`` workers in one consumer group until they processed the backlog (or, with
            ``paced_rate``, the events published at that rate once all have joined); their stats,
            each with ``cpu_process_s`` (process CPU from its first batch on)."""
            app_id = f"hs-{uuid.uuid4().hex[:6]}"
            s = base.replace(
                app_id=app_id, interactions_topic=topic, predictions_topic=f"p-{app_id}",
                dead_letter_topic=f"d-{app_id}", model_updates_topic=f"m-{app_id}",
            )
            ensure_worker_topics(s)
            target = n if paced_rate is None else args.latency_events
            procs: list[tuple[subprocess.Popen[Any], Path, Path]] = []
            try:
                for w in range(count):
                    env = {
                        **os.environ, "PYTHONPATH": str(ROOT), "HAILSTREAM_LOG_LEVEL": "WARNING",
                        "HAILSTREAM_BOOTSTRAP_SERVERS": broker.bootstrap, "HAILSTREAM_APP_ID": app_id,
                        "HAILSTREAM_INTERACTIONS_TOPIC": s.interactions_topic,
                        "HAILSTREAM_PREDICTIONS_TOPIC": s.predictions_topic,
                        "HAILSTREAM_DEAD_LETTER_TOPIC": s.dead_letter_topic,
                        "HAILSTREAM_MODEL_UPDATES_TOPIC": s.model_updates_topic,
                        # two workers on one machine: their own (unused) web and metrics ports
                        "HAILSTREAM_WEB_PORT": str(free_port()), "HAILSTREAM_METRICS_PORT": "0",
                    }
                    stats_path, logf = tmp / f"{app_id}-{w}.json", tmp / f"{app_id}-{w}.log"
                    with logf.open("w") as lf:
                        proc = subprocess.Popen(
                            [*hailstream_argv(), "worker", "--checkpoint", str(ckpt), "--stats-file", str(stats_path),
                             *flags.split()],
                            env=env, stdout=lf, stderr=subprocess.STDOUT, cwd=tmp,
                        )
                    procs.append((proc, stats_path, logf))
                if paced_rate is not None or count > 1:
                    # Publish only once every worker is up (its stats file appears when it runs) and
                    # has had time to join the group, so neither start-up nor a rebalance is timed.
                    for proc, stats_path, logf in procs:
                        wait_for(stats_path.exists, proc, args.timeout, "worker start", logf)
                    time.sleep(3.0 + 2.0 * (count - 1))
                    replay(events.head(target), s, max_rate=paced_rate, progress=False)
                cpu_at_first: dict[int, float | None] = {}

                def done() -> bool:
                    total = 0
                    for w, (proc, stats_path, _) in enumerate(procs):
                        got = int(read_json(stats_path).get("events", 0))
                        if got and w not in cpu_at_first:
                            cpu_at_first[w] = process_cpu_s(proc.pid)
                        total += got
                    return total >= target

                wait_for(done, procs[0][0], args.timeout, f"worker {flags!r} x{count}", procs[0][2])
                time.sleep(1.2)  # one more stats write: the final counters
                out = []
                for w, (proc, stats_path, _) in enumerate(procs):
                    st = read_json(stats_path)
                    first, last = cpu_at_first.get(w), process_cpu_s(proc.pid)
                    st["cpu_process_s"] = None if first is None or last is None else last - first
                    out.append(st)
                if paced_rate is not None:
                    try:
                        out[0]["topic_latency"] = topic_latencies(s, args.latency_warmup)
                    except Exception as e:  # keep the run's other numbers
                        log(f"latency from the topics failed: {e!r}")
                        out[0]["topic_latency"] = {"error": repr(e)}
                return out
            finally:
                for proc, _, _ in procs:
                    stop(proc)

        def summary(st: dict[str, Any]) -> dict[str, Any]:
            rate = float(st.get("events_per_s") or 0.0)
            events_after_first = max(1, int(st.get("events") or 0))
            cpu = st.get("cpu_process_s")
            return {
                "events": st.get("events"), "events_per_s": rate, "share_of_iterate": rate / result["rates"]["iterate"],
                "busy_s": st.get("busy_s"), "busy_cpu_s": st.get("busy_cpu_s"), "batches": st.get("batches"),
                "per_event": per_event(st),
                "process_cpu_us_per_event": None if cpu is None else 1e6 * cpu / events_after_first,
                "latency_s": st.get("latency_s"),
            }

        # --repeat N: the configs take turns (A B A B ...), so that a drift of the machine's load
        # hits each alike; each config reports its median run and lists every run.
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_ in range(args.repeat):
            for flags in args.configs:
                w = summary(workers(flags, base.interactions_topic, None)[0])
                runs.setdefault(flags or "(defaults)", []).append(w)
                log(f"(c) worker {flags or '(defaults)'} (round {round_ + 1}): {w['events_per_s']:,.0f} events/s, "
                    f"CPU us/event {w['per_event']}")
        for name, rs in runs.items():
            result["workers"][name] = {**median_run(rs, "events_per_s"), "runs_events_per_s": [w["events_per_s"] for w in rs]}

        one = result["workers"]["(defaults)"]["events_per_s"]
        result["latency"] = {}
        rate = one / 2
        lat_runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeat):
            for flags in args.latency_configs:  # each on its own paced topic, at the same offered rate
                topic = f"bench-paced-{uuid.uuid4().hex[:6]}"
                ensure_topics(base.replace(interactions_topic=topic))
                st = workers(flags, topic, rate)[0]
                lat = st["topic_latency"]
                name = flags or "(defaults)"
                lat_runs.setdefault(name, []).append(
                    {"offered_rate": rate, **lat, "worker_stats_incl_warmup": st.get("latency_s"),
                     "worker_batches": st.get("batches"), "worker_events": st.get("events"),
                     "batch_wall_ms": per_batch_wall_ms(st)})
                log(f"latency {name} at {rate:,.0f} events/s: {lat}")
        for name, rs in lat_runs.items():
            result["latency"][name] = {**median_run(rs, "p99"),
                                       "runs_p50_p99": [[r.get("p50"), r.get("p99")] for r in rs]}

        try:
            if args.pair:
                pair_runs(workers, summary, one, result, log, base)
        except Exception as e:  # keep the run's other numbers
            log(f"the 2-worker runs failed: {e!r}")
            result["pair_error"] = repr(e)
        result["load_during_throughput"] = load.summary()

    if not args.skip_demo:
        result["demo"] = demo_start(ckpt, tmp, args)
        log(f"demo: {result['demo']}")
    load.__exit__()
    result["load_average"] = load.summary()
    result["uptime_after"] = uptime()
    return result


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose ``key`` is the median (the upper one of an even count; missing values last).

    >>> median_run([{"r": 3}, {"r": 1}, {"r": 2}], "r"), median_run([{"r": 1}, {"r": 2}], "r")
    ({'r': 2}, {'r': 2})
    """
    ordered = sorted(runs, key=lambda r: (r.get(key) is None, r.get(key) or 0.0))
    return ordered[len(ordered) // 2]


def pair_runs(workers: Any, summary: Any, one: float, result: dict[str, Any], log: Any, base: Any) -> None:
    """(d): two workers in one group on the backlog, then paced at half the pair's rate."""
    from stream.kafka.topics import ensure_topics

    topic = f"bench-pair-{uuid.uuid4().hex[:6]}"
    ensure_topics(base.replace(interactions_topic=topic))
    pair = workers("", topic, None, count=2)
    firsts = [p_["first_batch_at"] for p_ in pair if p_.get("first_batch_at")]
    lasts = [p_["last_batch_at"] for p_ in pair if p_.get("last_batch_at")]
    total = sum(int(p_.get("events") or 0) for p_ in pair)
    combined = total / (max(lasts) - min(firsts)) if firsts and lasts and max(lasts) > min(firsts) else 0.0
    result["pair"] = {"workers": [summary(p_) for p_ in pair], "events": total, "events_per_s": combined,
                      "speedup_vs_one": combined / one if one else None}
    log(f"(d) 2 workers: {combined:,.0f} events/s together ({combined / one:.2f}x one worker)")
    topic = f"bench-pair-paced-{uuid.uuid4().hex[:6]}"
    ensure_topics(base.replace(interactions_topic=topic))
    paced = workers("", topic, combined / 2, count=2)
    result["pair"]["latency"] = {"offered_rate": combined / 2, **paced[0]["topic_latency"],
                                 "workers_stats_incl_warmup": [{"events": p_.get("events"),
                                                                **(p_.get("latency_s") or {})} for p_ in paced]}
    log(f"(d) latency at {combined / 2:,.0f} events/s: {result['pair']['latency']}")


def uptime() -> str:
    """``uptime``'s line (the load averages), or the load averages alone where it is missing."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _ms(v: float | None) -> str:
    return f"{v * 1000:.0f}" if v is not None else "n/a"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def markdown(r: dict[str, Any]) -> str:
    it = r["rates"]["iterate"]
    lines = [
        "# Stream throughput (issues 5 and 14)", "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- machine: {r['machine']['nproc']} cores, {r['machine']['cpu']}; Python {r['machine']['python']}",
        f"- `uptime` before: {r.get('uptime_before', 'n/a')}; after: {r.get('uptime_after', 'n/a')}",
        f"- load average (1 min) during the run: min {r['load_average']['min']:.2f}, mean "
        f"{r['load_average']['mean']:.2f}, max {r['load_average']['max']:.2f} (other jobs share the machine)",
        f"- backlog: {r['events']} Foursquare NYC events, 4 partitions, one embedded Tansu broker; {r['model']}", "",
        "| reader | events/s | share of (a) |", "|---|---:|---:|",
        f"| (a) Faust agent, iterate only | {it:,.0f} | 100% |",
        f"| (b) Faust agent, one send per event | {r['rates']['send']:,.0f} | {r['rates']['send'] / it:.0%} |",
    ]
    for flags, w in r["workers"].items():
        each = w.get("runs_events_per_s") or []
        runs = f" (median of {', '.join(f'{x:,.0f}' for x in each)})" if len(each) > 1 else ""
        lines.append(f"| (c) hailstream worker `{flags}` | {w['events_per_s']:,.0f}{runs} | {w['share_of_iterate']:.0%} |")
    pair = r.get("pair")
    if pair:
        for n, w in enumerate(pair["workers"]):
            lines.append(f"| (d) worker {n + 1} of 2 (defaults), {w['events']} events | {w['events_per_s']:,.0f} | "
                         f"{w['share_of_iterate']:.0%} |")
        lines.append(f"| (d) both workers together | {pair['events_per_s']:,.0f} | {pair['events_per_s'] / it:.0%} |")
    lines += ["", f"Latency: Kafka time of the input record -> the prediction's `produced_at`, matched by event id, "
              f"over the events after the first {r['latency_warmup']} published (warm-up); paced replay, "
              f"{r['latency_events']} events.", "",
              "| latency run | offered events/s | p50 ms | p99 ms | max ms | events per batch "
              "| wall ms per batch: work / send |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for flags, lat in r["latency"].items():
        per_batch = f"{lat['worker_events'] / lat['worker_batches']:.1f}" if lat.get("worker_batches") else ""
        ms = lat.get("batch_wall_ms") or {}
        cycle = f"{sum(v for k, v in ms.items() if k != 'send'):.1f} / {ms.get('send', 0.0):.1f}" if ms else ""
        each = lat.get("runs_p50_p99") or []
        runs = (" (the median-p99 run of " + ", ".join(f"{_ms(a)} / {_ms(b)}" for a, b in each) + ")") if len(each) > 1 else ""
        lines.append(f"| one worker `{flags}`{runs} | {lat['offered_rate']:,.0f} | {_ms(lat.get('p50'))} | "
                     f"{_ms(lat.get('p99'))} | {_ms(lat.get('max'))} | {per_batch} | {cycle} |")
    if pair and "latency" in pair:
        pl = pair["latency"]
        lines.append(f"| (d) 2 workers, all partitions | {pl['offered_rate']:,.0f} | {_ms(pl.get('p50'))} | "
                     f"{_ms(pl.get('p99'))} | {_ms(pl.get('max'))} |")
        for part, q in (pl.get("by_partition") or {}).items():
            lines.append(f"| (d) 2 workers, partition {part} ({q['n']} events) | | {_ms(q['p50'])} | {_ms(q['p99'])} | |")
        for n, w in enumerate(pl["workers_stats_incl_warmup"]):
            lines.append(f"| (d) worker {n + 1} of 2, its own stats incl. warm-up ({w.get('events')} events) | | "
                         f"{_ms(w.get('p50'))} | {_ms(w.get('p99'))} | {_ms(w.get('max'))} |")
    lines += ["", "Microseconds per event by phase (CPU of the batch thread; send: wall time of the event loop; "
              "process: the worker's whole CPU from its first batch on, all threads):", "",
              "| worker | prepare | inference (per peer) | baselines | finish | send (wall) | process CPU |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    rows = [(f"`{flags}`", w) for flags, w in r["workers"].items()]
    if pair:
        rows += [(f"(d) worker {n + 1} of 2", w) for n, w in enumerate(pair["workers"])]
    for name, w in rows:
        pe = w["per_event"]
        cpu, wall = pe["cpu_us"], pe["wall_us"]
        proc = w.get("process_cpu_us_per_event")
        lines.append(f"| {name} | {cpu.get('prepare', 0):.0f} | {cpu.get('inference', 0):.0f} "
                     f"({pe['inference_cpu_us_per_peer']:.0f}) | {cpu.get('baselines', 0):.0f} | {cpu.get('finish', 0):.0f} | "
                     f"{wall.get('send', 0):.0f} | {proc:.0f} |" if proc is not None else
                     f"| {name} | {cpu.get('prepare', 0):.0f} | {cpu.get('inference', 0):.0f} | "
                     f"{cpu.get('baselines', 0):.0f} | {cpu.get('finish', 0):.0f} | {wall.get('send', 0):.0f} | n/a |")
    m = r.get("memory")
    if m:
        def b(v: float | None) -> str:
            return f"{v:,.0f} B" if v is not None else "n/a"
        lines += ["", f"Memory per user ({m['events']} events in-process, {m['users']} users, {m['full_users']} with a full "
                  f"sequence of {m['max_seq_len']} items): table state {b(m['table_json_bytes_per_full_user'])} as JSON "
                  f"(stored and changelogged), {b(m['table_python_bytes_per_full_user'])} as Python objects; "
                  f"incremental-inference cache ({m['incremental_model']}, {m['incremental_cache_entries']} sequences): "
                  f"{b(m['incremental_cache_bytes_per_sequence'])} per cached sequence."]
    d0 = r["workers"]["(defaults)"]
    lat0 = r["latency"].get("(defaults)") or {}
    inf = d0["per_event"]["inference_cpu_us_per_peer"]
    speedup = pair["speedup_vs_one"] if pair else None
    lines += ["", "| target (issue 14) | measured | |", "|---|---:|---|",
              f"| worker >= 50% of (a) | {d0['share_of_iterate']:.0%} | {_verdict(d0['share_of_iterate'] >= 0.5)} |",
              f"| p50 <= 30 ms at half the worker's rate | {_ms(lat0.get('p50'))} ms | "
              f"{_verdict(None if lat0.get('p50') is None else lat0['p50'] <= 0.030)} |",
              f"| p99 <= 100 ms at half the worker's rate | {_ms(lat0.get('p99'))} ms | "
              f"{_verdict(None if lat0.get('p99') is None else lat0['p99'] <= 0.100)} |",
              f"| inference <= 60 us CPU / event / peer | {inf:.0f} us | {_verdict(inf <= 60)} |",
              f"| 2 workers >= 1.6x one | {'n/a' if speedup is None else f'{speedup:.2f}x'} | "
              f"{_verdict(None if speedup is None else speedup >= 1.6)} |"]
    if "demo" in r:
        d = r["demo"]
        def sec(v: float | None) -> str:
            return f"{v:.1f} s" if v is not None else "n/a"
        lines += ["", f"Demo (`{d['command']}`, embedded broker): first published prediction after "
                  f"{sec(d['first_prediction_s_demo_clock'])} on the demo's clock, {sec(d['first_prediction_s_from_spawn'])} "
                  f"from process spawn (1 s resolution); whole run {d['wall_s']:.0f} s, complete={d['complete']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_agent"]:
        mode, bootstrap, topic, app_id, n, out = argv[1:7]
        agent_main(mode, bootstrap, topic, app_id, int(n), out)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000, help="backlog size for the throughput runs")
    ap.add_argument("--latency-events", type=int, default=4000, help="events published at half rate for latency")
    ap.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS), help="worker flag strings ('' = defaults)")
    ap.add_argument("--demo-limit", type=int, default=1000)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--no-pair", dest="pair", action="store_false", help="skip the 2-worker runs (d)")
    ap.add_argument("--latency-configs", nargs="*", default=[""],
                    help="worker flag strings each given a latency run at half the default worker's rate")
    ap.add_argument("--latency-warmup", type=int, default=500, help="first paced events left out of the latency")
    ap.add_argument("--memory-events", type=int, default=20000, help="events replayed in-process for memory per user")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each worker config, taking turns (A B A B ...); each reports its median run")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds allowed per step")
    ap.add_argument("--positions", choices=("end", "start"), default="end",
                    help="the served model's SASRec positions (start: the worker's state cache serves it incrementally)")
    ap.add_argument("--out", type=Path, default=RESULTS / "stream_throughput")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if "" not in args.configs:
        args.configs = ["", *args.configs]
    result = run(args)
    write_results(args.out, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
