"""Accuracy of a strided serving window (issue 14): what ``HAILSTREAM_WINDOW_STRIDE`` costs.

With a stride S > 0 the worker's model window starts at a multiple of S and moves only when it
would exceed ``max_len`` (:func:`models.padding.window_start`), so it holds ``max_len - S + 1``
to ``max_len`` items and grows by one per event in between: a cached encoder state (SASRec with
positions from the start, GRU4Rec) can then be stepped on a mature stream, where the last-
``max_len`` window slides on every event and every state is re-encoded. This measures what the
shorter windows cost: the checkpoint's leave-last-out validation and test NDCG@10 / HR@10 (full
ranking, the split and vocabulary it was trained on) for each stride, and the per-user Wilcoxon
test of each stride against stride 0 on test.

    hailstream train --dataset foursquare-nyc --history copy --max-len 50 --threads 1 --out /tmp/nyc50
    python bench/window_stride.py --checkpoint /tmp/nyc50 --strides 0 10 25 50

Writes ``bench/results/window_stride.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import wilcoxon

from _common import RESULTS, run_header, write_results  # isort: skip - bench/ is on the path

from models.checkpoint import load_checkpoint
from models.evaluate import ModelScorer, evaluate, target_ranks
from models.metrics import summarize
from models.padding import window_start
from stream.cli.offline import checkpoint_file, load_split


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a checkpoint, or the folder hailstream train --out wrote")
    ap.add_argument("--strides", nargs="+", type=int, default=[0, 10, 25, 50])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "window_stride"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = checkpoint_file(Path(args.checkpoint))
    ckpt = load_checkpoint(path)
    _, split = load_split(str(ckpt.meta["dataset"]), None, ckpt.meta.get("limit"))
    max_len = ckpt.model.config.max_len
    lengths = [len(split.history(int(u), "test")) for u in split.eval_users]
    res: dict[str, Any] = {**run_header(argv), "checkpoint": str(path), "dataset": ckpt.meta["dataset"],
                           "model": asdict(ckpt.model.config),
                           "max_len": max_len, "rows": []}
    base: np.ndarray | None = None
    for stride in args.strides:
        scorer = ModelScorer(ckpt.model, stride=stride)
        _, ranks = target_ranks(scorer, split, "test", 512)
        gains = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
        row: dict[str, Any] = {"stride": stride, "valid": evaluate(scorer, split, "valid"), "test": summarize(ranks)}
        row["mean_window"] = float(np.mean([min(n, max_len) if stride == 0 else n - window_start(n, max_len, stride)
                                            for n in lengths]))
        row["full_share"] = float(np.mean([n > max_len for n in lengths]))
        if base is None:
            base = gains
        else:
            diff = gains - base
            row["test_ndcg_diff_vs_0"] = float(diff.mean())
            row["users_that_differ"] = int((diff != 0).sum())
            row["wilcoxon_p"] = float(wilcoxon(gains, base).pvalue) if (diff != 0).any() else 1.0
        res["rows"].append(row)
        print(row["stride"], round(row["valid"]["ndcg@10"], 4), round(row["test"]["ndcg@10"], 4), flush=True)
    write_results(args.out, res, markdown)
    return res


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Strided serving window: accuracy (issue 14)", "",
        f"- date: {r['date']}; command: `{r['command']}`", f"- machine: {r['machine']}",
        f"- checkpoint: `{r['checkpoint']}` ({r['dataset']}, max_len {r['max_len']}); full ranking, leave-last-out",
        f"- test users whose history is longer than max_len (where the stride matters): {100 * r['rows'][0]['full_share']:.0f}%",
        "", "| stride | window (items) | mean window | valid NDCG@10 | test NDCG@10 | test HR@10 | test Δ vs stride 0 | users that differ | Wilcoxon p |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        s, m = row["stride"], r["max_len"]
        window = f"last {m}" if s == 0 else f"{m - s + 1}–{m}"
        lines.append(
            f"| {s} | {window} | {row['mean_window']:.1f} | {row['valid']['ndcg@10']:.4f} | {row['test']['ndcg@10']:.4f} | {row['test']['hr@10']:.4f} | "
            + (f"{row['test_ndcg_diff_vs_0']:+.4f} | {row['users_that_differ']} | {row['wilcoxon_p']:.3g} |"
               if "wilcoxon_p" in row else "– | – | – |")
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
