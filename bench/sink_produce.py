"""The worker's send path alone (issue 14): :func:`stream.worker.sink.deliver` of N predictions and N
changelog records, in micro-batches of B, through :class:`~stream.worker.sink.FaustSink` on one
embedded broker, with record batches per partition ("batched") and with one send per message (the
fallback, "per-message"), twice each, alternating. Prints wall and CPU seconds per mode.

    python bench/sink_produce.py 20000 256     # ~1 min on 2 cores
"""

import asyncio
import json
import sys
import tempfile
import time
import uuid

from stream.kafka.broker import EmbeddedBroker
from stream.kafka.topics import changelog_topic, ensure_topics
from stream.settings import Settings
from stream.worker.app import make_app
from stream.worker.batch import Update
from stream.worker.pipeline import BatchOutcome
from stream.worker.runtime import WorkerRuntime
from stream.worker.sink import FaustSink, deliver
from stream.worker.stats import WorkerStats

N, B = (int(a) for a in (sys.argv[1:3] if len(sys.argv) > 2 else (20000, 256)))

def outcomes(tag):
    out = []
    for b in range(N // B):
        preds, ups = [], {}
        for i in range(b * B, (b + 1) * B):
            u = f"u{i % 2000}"
            preds.append((u.encode(), json.dumps({"user_id": u, "event_id": f"{tag}{i}", "items": [f"i{j}" for j in range(10)],
                          "scores": [0.123456] * 10, "k": 10, "model_version": "v", "ts": 1.7e9, "produced_at": 1.7e9}).encode()))
            ups[u] = Update(i % 4, {"items": [f"i{j}" for j in range(20)], "pred": [f"i{j}" for j in range(10)], "off": [i % 4, i, "e"]})
        out.append(BatchOutcome(ups, preds))
    return out

async def main(bootstrap):
    for mode in ("batched", "per-message", "batched", "per-message"):
        tag = uuid.uuid4().hex[:6]
        s = Settings.from_env({}, bootstrap_servers=bootstrap, app_id=f"sb-{tag}", predictions_topic=f"sb-{tag}.p")
        ensure_topics(s, {changelog_topic(s): 4})
        app = make_app(s, datadir=tempfile.mkdtemp(prefix="hs-sink-"))
        table = app.tables["user-state"]
        await app.producer.start()
        rt = WorkerRuntime(None, None, {}, WorkerStats({}))  # type: ignore[arg-type]
        sink = FaustSink(app, table, rt)
        if mode == "per-message":
            sink._batching = lambda: None  # type: ignore[method-assign]
        work = outcomes(tag)
        w0, c0 = time.perf_counter(), time.process_time()
        for o in work:
            await deliver(o, sink, s, rt)
        await app.producer.flush()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        print(f"{mode:12s} {N} predictions + {N} changelog records in batches of {B}: wall {w:.2f} s "
              f"({N / w:,.0f} events/s), CPU {c:.2f} s ({1e6 * c / N:.0f} us/event), send_errors {rt.send_errors}", flush=True)
        await app.producer.stop()

if __name__ == "__main__":
    with EmbeddedBroker() as b:
        asyncio.run(main(b.bootstrap))
