"""Training seconds per epoch of one SASRec peer (d = 64, 2 layers, max length 50, batch 64), with and
without the trainer's padding trim + length-bucketed batches, per data set and thread count;
``--models demo`` also the demo's starting model (``stream.cli.demo.DEMO_MODEL``: 2 SASRec peers of width
32, coded MED, history output), trimmed only.

Times ``--steps`` training steps (after 3 warm-up steps) and extrapolates to one epoch (steps per epoch =
windows / batch). Run it on a quiet machine; the load average is recorded.

    python bench/epoch_time.py --datasets foursquare-nyc amazon-beauty --threads 1 2 \
        --out bench/results/epoch_time.json
    python bench/epoch_time.py --models demo --datasets foursquare-nyc --threads 2 --steps 20 --out X.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from models.data import load_dataset
from models.hail import HAIL
from models.presets import preset
from models.splits import leave_last_out
from models.trainer import _step, batch_order, make_windows

from _common import run_header, write_results  # isort: skip - bench/ is on the path of a bench script


def seconds_per_epoch(dataset: str, threads: int, trimmed: bool, steps: int, name: str = "sasrec") -> dict[str, Any]:
    torch.set_num_threads(threads)
    split = leave_last_out(load_dataset(dataset))
    windows = make_windows(split.train, 50)
    torch.manual_seed(0)
    if name == "demo":
        from stream.cli.demo import DEMO_MODEL

        config = preset("hail", peers=2, **DEMO_MODEL)
    else:
        config = preset("sasrec")
    model = HAIL(config, split.vocab.rows).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    if trimmed:
        batches = batch_order((windows != 0).sum(1), 64, gen)
        run = lambda b: _step(model, opt, b, 0)  # noqa: E731 - the trainer's step: trims padding columns
    else:
        order = torch.randperm(len(windows), generator=gen)
        batches = [order[i : i + 64] for i in range(0, len(windows), 64)]

        def run(b: torch.Tensor) -> None:
            loss, _ = model.training_loss(b[:, :-1], b[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for idx in batches[:3]:
        run(windows[idx])
    timed = batches[3 : 3 + steps]
    t0 = time.perf_counter()
    for idx in timed:
        run(windows[idx])
    per_step = (time.perf_counter() - t0) / len(timed)
    return {"model": name, "dataset": dataset, "threads": threads, "trimmed": trimmed, "steps_timed": len(timed),
            "steps_per_epoch": len(batches), "ms_per_step": per_step * 1000, "seconds_per_epoch": per_step * len(batches),
            "item_share": float((windows != 0).float().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["foursquare-nyc", "amazon-beauty"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--models", nargs="+", choices=["sasrec", "demo"], default=["sasrec"])
    ap.add_argument("--out", default="bench/results/epoch_time.json")
    args = ap.parse_args()
    res = run_header()
    load = res["loadavg_start"][0]
    res["rows"] = [seconds_per_epoch(ds, th, trimmed, args.steps, name)
                   for name in args.models for ds in args.datasets for th in args.threads
                   for trimmed in ((False, True) if name == "sasrec" else (True,))]
    write_results(args.out, res, lambda res: markdown(res, load))


def markdown(res: dict[str, Any], load: float) -> str:
    rows = res["rows"]
    lines = [f"Command: `{res['command']}`", f"Machine: {res['machine']}; load average before: {load:.2f}",
             f"Date: {res['date']}", "", "| model | data | threads | trim + buckets | ms/step | steps/epoch | s/epoch |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.get('model', 'sasrec')} | {r['dataset']} | {r['threads']} | {'yes' if r['trimmed'] else 'no'} | {r['ms_per_step']:.0f} | "
              f"{r['steps_per_epoch']} | {r['seconds_per_epoch']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
