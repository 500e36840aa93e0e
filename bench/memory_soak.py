"""Worker memory on an endless stream: RSS while ``process_batch`` (the worker's per-batch code,
in-process, no broker) sees ``--events`` events, each of a NEW user (the worst case for per-user
state), with the table capped like :class:`stream.worker.sink.FaustSink` caps Faust's
(``--max-users``, least recently updated first) and the baselines capped alike.

    python bench/memory_soak.py --events 1000000 --max-users 100000 --out bench/results/memory_soak
    python bench/memory_soak.py --events 200000 --max-users 0 --out bench/results/memory_soak_uncapped

Prints and records RSS (MB) every ``--every`` events; the curve must level off once the cap is
reached. A longer soak is the same with more events.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import rss_mb, run_header, write_results

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.settings import Settings
from stream.worker.batch import Source, new_prequential, process_batch
from stream.worker.recommender import OnlineBaselines, OnlineRecommender
from stream.worker.sink import evict_oldest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--max-users", type=int, default=100_000, help="table and baselines cap (0 = unbounded)")
    ap.add_argument("--items", type=int, default=2000, help="items of the model's vocabulary")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--every", type=int, default=50_000, help="events between two RSS samples")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    vocab = ItemVocab([f"i{j}" for j in range(args.items)])
    model = HAIL(HailConfig(hidden=16, layers=1, max_len=20, dropout=0.0), vocab.rows)
    rec = OnlineRecommender(model, vocab, "v1")
    settings = Settings(top_k=10, max_seq_len=20, max_users=args.max_users)
    baselines = OnlineBaselines(1000, sample_every=16, max_users=args.max_users)
    preq = new_prequential(10, baselines)
    table: dict[str, dict] = {}
    curve: list[dict[str, float]] = [{"events": 0, "rss_mb": rss_mb(), "users_in_table": 0}]
    evicted = 0
    t0 = time.perf_counter()
    for start in range(0, args.events, args.batch):
        batch = []
        for i in range(start, min(start + args.batch, args.events)):
            raw = json.dumps({"user_id": f"user-{i}", "item_id": f"i{(i * 7919) % args.items}", "ts": 1.7e9 + i,
                              "event_id": f"e{i}"}).encode()
            batch.append(Source(raw, "in", i % 4, i // 4, None, f"user-{i}".encode()))
        out = process_batch(batch, table.get, rec, baselines, preq, settings, epoch="bench")
        for user, upd in out.updates.items():
            table.pop(user, None)
            table[user] = upd.value
        if args.max_users:
            evicted += len(evict_oldest(table, args.max_users))
        done = start + len(batch)
        if done % args.every < args.batch or done == args.events:
            point = {"events": done, "rss_mb": round(rss_mb(), 1), "users_in_table": len(table),
                     "seconds": round(time.perf_counter() - t0, 1)}
            curve.append(point)
            print(json.dumps(point), flush=True)
            if args.out is not None:  # a partial curve survives an interrupted soak
                write_results(args.out, {**run_header(argv), "partial": True, "max_users": args.max_users,
                                         "curve": curve}, echo=False)
    results = {
        **run_header(argv), "events": args.events, "new_users": args.events, "max_users": args.max_users,
        "items": args.items, "evicted": evicted, "curve": curve,
        "rss_first_mb": curve[1]["rss_mb"] if len(curve) > 1 else None, "rss_last_mb": curve[-1]["rss_mb"],
        "events_per_s": round(args.events / (time.perf_counter() - t0)),
    }
    if args.out is not None:
        write_results(args.out, results, _markdown)
    return 0


def _markdown(r: dict) -> str:
    rows = "\n".join(f"| {p['events']:,} | {p['rss_mb']} | {p['users_in_table']:,} |" for p in r["curve"])
    return (f"# Worker memory soak: {r['events']:,} events, {r['new_users']:,} new users, max_users={r['max_users']}\n\n"
            f"| events | RSS MB | users in table |\n|---|---|---|\n{rows}\n")


if __name__ == "__main__":
    sys.exit(main())
