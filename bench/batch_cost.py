"""Wall milliseconds of one worker micro-batch by batch size, in-process (issue 14): the fixed cost
per batch and the cost per event of :func:`stream.worker.pipeline.handle_batch` (validate, score,
predict with the model and the baselines, stats), no broker.

The worker's event -> prediction latency at a given rate is about one batch cycle (the batch
timeout plus this batch's own time plus the send); this separates the part the worker's code pays
per batch from the part it pays per event. Foursquare NYC events in stream order, a 2-peer SASRec
HAIL (hidden 64, 2 layers, max_len 50, untrained: the cost does not depend on the weights), full
ranking over every NYC item, torch 1 thread, states kept in a dict as the table would; the first
third of each run is warm-up and not timed.

    python bench/batch_cost.py --sizes 1 8 32 70 256 --events 6000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from models.data import load_dataset
from models.hail import HAIL
from models.presets import preset
from models.vocab import ItemVocab
from stream.records import Interaction
from stream.settings import Settings
from stream.worker.edge import Source
from stream.worker.pipeline import handle_batch
from stream.worker.recommender import OnlineRecommender
from stream.worker.runtime import build_runtime

from _common import RESULTS, run_header, write_results  # isort: skip - bench/ is on the path of a bench script


def batch_ms(model: HAIL, vocab: ItemVocab, raws: list[bytes], size: int) -> float:
    """Mean wall ms per batch of ``size`` events over the last two thirds of ``raws``."""
    settings = Settings()
    runtime = build_runtime(settings, OnlineRecommender(model, vocab, "v1"), offload=False)
    states: dict[str, Any] = {}
    times = []
    for start in range(0, len(raws) - size + 1, size):
        batch = [Source(raws[j], "in", 0, j) for j in range(start, start + size)]
        t = time.perf_counter()
        out = handle_batch(runtime, settings, batch, states.get)
        times.append(time.perf_counter() - t)
        for user, update in out.updates.items():
            states[user] = update.value
    timed = times[len(times) // 3 :]
    return 1000 * float(np.mean(timed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1, 8, 32, 70, 256])
    ap.add_argument("--events", type=int, default=6000)
    ap.add_argument("--out", default=str(RESULTS / "batch_cost"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    ev = load_dataset("foursquare-nyc")
    vocab = ItemVocab(sorted({str(i) for i in ev.items.tolist()}))
    model = HAIL(preset("hail", peers=2), vocab.rows).eval()
    raws = [Interaction(str(ev.users[i]), str(ev.items[i]), float(ev.ts[i]), event_id=f"e{i}").to_json()
            for i in range(min(args.events, len(ev)))]
    res = run_header()
    res["rows"] = [{"size": n, "ms_per_batch": batch_ms(model, vocab, raws, n)} for n in args.sizes]
    sizes = np.array([r["size"] for r in res["rows"]], dtype=float)
    ms = np.array([r["ms_per_batch"] for r in res["rows"]])
    slope, fixed = np.polyfit(sizes, ms, 1) if len(sizes) > 1 else (float("nan"), float("nan"))
    res["fit"] = {"fixed_ms_per_batch": float(fixed), "us_per_event": float(1000 * slope)}
    write_results(args.out, res, markdown)


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Command: `{res['command']}`", f"Machine: {res['machine']}; load average before: "
             f"{res['loadavg_start'][0]:.2f}", f"Date: {res['date']}", "",
             "| events per batch | ms per batch | µs per event |", "|---:|---:|---:|"]
    lines += [f"| {r['size']} | {r['ms_per_batch']:.2f} | {1000 * r['ms_per_batch'] / r['size']:.0f} |"
              for r in res["rows"]]
    fit = res["fit"]
    lines += ["", f"Least-squares line: {fit['fixed_ms_per_batch']:.2f} ms per batch + {fit['us_per_event']:.0f} µs "
              "per event."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
