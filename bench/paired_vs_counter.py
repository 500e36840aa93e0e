"""Paired Wilcoxon test of every NYC model row against the recency-decayed visit counter.

Reads the per-user test NDCG@10 that ``bench/offline_accuracy.py`` stores per run, recomputes the
counter's (half-life from the baselines' validation choice) and prints, per row (first seed), the
mean difference, how many users differ and the two-sided p-value.

    python bench/paired_vs_counter.py bench/results/offline_accuracy.json --half-life 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from models.baselines import DecayedFrequency
from models.data import load_dataset
from models.evaluate import target_ranks
from models.splits import leave_last_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results")
    p.add_argument("--dataset", default="foursquare-nyc")
    p.add_argument("--half-life", type=float, required=True, help="the half-life chosen on validation")
    args = p.parse_args()
    split = leave_last_out(load_dataset(args.dataset))
    _, ranks = target_ranks(DecayedFrequency(args.half_life).fit(split), split, "test", 512)
    base = np.where(ranks < 10, 1 / np.log2(ranks + 2.0), 0.0)
    print(f"decayed counter (half-life {args.half_life:g}) test NDCG@10 {base.mean():.4f}")
    models = json.loads(Path(args.results).read_text())["datasets"][args.dataset]["models"]
    for name, runs in models.items():
        x = np.asarray(runs[0]["test_user_ndcg@10"])
        w = wilcoxon(x, base)
        print(f"| {name} (seed {runs[0]['seed']}) | {x.mean() - base.mean():+.4f} | "
              f"{np.count_nonzero(x - base)}/{len(x)} | {w.pvalue:.3g} |")


if __name__ == "__main__":
    main()
