"""CPU cost of the worker's inference per event and peer, full re-encode vs incremental (issue 14).

Replays the first ``--events`` Foursquare NYC events (time order; after ``--skip`` events that
only build the histories) through :class:`stream.worker.recommender.OnlineRecommender` in
micro-batches of ``--batch`` (as the worker does: each user's window = its last ``max_len``
items), full ranking over the whole NYC vocabulary (4,988 items), 2 peers, hidden 64, 2 layers,
max_len 50, torch threads 1, untrained weights (the cost does not depend on them).

For each encoder (SASRec with positions from the end; SASRec with positions from the start, the
default since 2026-12-03; GRU4Rec) and path (full re-encode; incremental, where the model has an
exact incremental state, i.e. not SASRec from the end; and incremental with each of
``--strides``, the worker's ``HAILSTREAM_WINDOW_STRIDE``: the window moves by whole strides, so a
cached state is stepped on a mature stream too), records process CPU µs per event and per peer
(``time.process_time``: other jobs on a shared machine slow it less than wall time), the best of
``--repeats`` runs, the cache's hit share, and the measured memory per cached user. Also the share
of events whose window was already full (``max_len`` items): without a stride those slide, and no
exact cached state of a position-counted model survives a slide.

    python bench/inference_cost.py                    # a young stream, ~2-4 minutes on 2 cores
    python bench/inference_cost.py --skip 60000 --out bench/results/inference_cost_mature

Writes ``bench/results/inference_cost.json`` and ``.md``. Target: <= 60 µs CPU per event per peer.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from _common import RESULTS, LoadSampler, run_header, write_results  # isort: skip - bench/ is on the path

from models.data import load_foursquare_nyc
from models.hail import HAIL, HailConfig
from models.incremental import IncrementalScorer
from models.padding import window_start
from models.vocab import ItemVocab
from stream.worker.recommender import OnlineRecommender


def windows(
    users: list[str], items: list[str], max_len: int, batch: int, skip: int = 0, stride: int = 0
) -> tuple[list[list[list[str]]], float]:
    """The windows the worker would score, per micro-batch, for events ``skip..`` (the first
    ``skip`` events only build the histories), and the share of them that were already full.
    ``stride`` > 0: the worker's strided window (``HAILSTREAM_WINDOW_STRIDE``)."""
    hist: dict[str, list[str]] = {}
    for u, i in zip(users[:skip], items[:skip], strict=True):
        hist.setdefault(u, []).append(i)
    users, items = users[skip:], items[skip:]
    out, full = [], 0
    for start in range(0, len(users), batch):
        b = []
        for u, i in zip(users[start : start + batch], items[start : start + batch], strict=True):
            h = hist.setdefault(u, [])
            full += len(h) >= max_len
            h.append(i)
            b.append(h[window_start(len(h), max_len, stride) :])
        out.append(b)
    return out, full / len(users)


def measure(model: HAIL, vocab: ItemVocab, batches: list[list[list[str]]], state_cache: int, repeats: int) -> dict[str, Any]:
    best = float("inf")
    rec = None
    for _ in range(repeats):
        rec = OnlineRecommender(model, vocab, "v", state_cache=state_cache)
        c0, w0 = time.process_time(), time.perf_counter()
        for b in batches:
            rec.recommend_batch(b, k=10)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if cpu < best:
            best, best_wall = cpu, wall
    n = sum(len(b) for b in batches)
    peers = len(model.peers)
    row: dict[str, Any] = {"cpu_us_per_event": 1e6 * best / n, "cpu_us_per_event_per_peer": 1e6 * best / n / peers,
                           "wall_us_per_event": 1e6 * best_wall / n}
    scorer = rec.incremental() if rec is not None else None
    if scorer is not None:
        row["hit_share"] = scorer.hits / max(1, scorer.hits + scorer.misses)
        row["bytes_per_cached_user"] = scorer.bytes_per_entry()
        row["cached_users"] = len(scorer)
    return row


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Inference CPU per event (issue 14)", "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- machine: {r['machine']}",
        f"- load average (1 min) during the run: min {r['load']['min']:.2f}, mean {r['load']['mean']:.2f}, "
        f"max {r['load']['max']:.2f} (2 cores shared with other jobs)",
        f"- {r['events']} NYC events after {r.get('skip', 0)} history-only ones, micro-batches of {r['batch']}, {r['items']} items (full ranking), "
        f"2 peers, hidden 64, 2 layers, max_len {r['max_len']}, torch threads 1, best of {r['repeats']}",
        f"- events whose window was already full (slides): {100 * r['full_share']:.0f}%", "",
        "| encoder | path | CPU µs/event/peer | CPU µs/event | wall µs/event | cache hits | bytes per cached user |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        hits = f"{100 * row['hit_share']:.0f}%" if "hit_share" in row else "-"
        mem = f"{row['bytes_per_cached_user']:,.0f}" if "bytes_per_cached_user" in row else "-"
        lines.append(f"| {row['encoder']} | {row['path']} | {row['cpu_us_per_event_per_peer']:.0f} | "
                     f"{row['cpu_us_per_event']:.0f} | {row['wall_us_per_event']:.0f} | {hits} | {mem} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", type=int, default=0, help="events that only build histories first (0 = a young stream)")
    ap.add_argument("--strides", nargs="*", type=int, default=[25],
                    help="also the incremental path with these window strides (HAILSTREAM_WINDOW_STRIDE)")
    ap.add_argument("--out", default=str(RESULTS / "inference_cost"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    header = run_header(argv)
    ev = load_foursquare_nyc()
    vocab = ItemVocab(sorted(set(ev.items.tolist())))
    end = args.skip + args.events
    users, items = ev.users[:end].tolist(), ev.items[:end].tolist()
    batches, full_share = windows(users, items, args.max_len, args.batch, args.skip)
    strided = {s: windows(users, items, args.max_len, args.batch, args.skip, s)[0] for s in args.strides if s}
    rows = []
    with LoadSampler() as load:
        for encoder, positions in (("sasrec", "end"), ("sasrec", "start"), ("gru4rec", "end")):
            cfg = HailConfig(n_peers=2, encoders=(encoder,), hidden=64, layers=2, max_len=args.max_len, dropout=0.0,
                             positions=positions)
            model = HAIL(cfg, vocab.rows).eval()
            name = f"{encoder}, positions from the {positions}" if encoder == "sasrec" else encoder
            exact = IncrementalScorer.supports(model)
            paths = [("full re-encode", 0, 0)] + ([("incremental", 100_000, 0)] if exact else [])
            paths += [(f"incremental, window stride {s}", 100_000, s) for s in strided if exact]
            for path, cache, stride in paths:
                row = measure(model, vocab, strided[stride] if stride else batches, cache, args.repeats)
                rows.append({"encoder": name, "path": path, **row})
                print(rows[-1], flush=True)
    result = {**header, "load": load.summary(), "events": args.events, "skip": args.skip, "batch": args.batch, "items": len(vocab),
              "max_len": args.max_len, "repeats": args.repeats, "full_share": full_share, "rows": rows,
              "loadavg_end": list(os.getloadavg())}
    write_results(args.out, result, markdown)
    return result


if __name__ == "__main__":
    main()
