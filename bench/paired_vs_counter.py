"""Paired Wilcoxon test of every model run against a counter: the recency-decayed visit counter
(NYC) or the co-occurrence counter (Beauty).

Reads the per-user test NDCG@10 that ``bench/offline_accuracy.py`` stores per run, recomputes the
counter's (the decayed counter's half-life from the baselines' validation choice; the co-occurrence
counter with its defaults, or ``--lags``/``--backward``/``--recent`` from
``bench/cooccurrence_grid.py``'s validation choice) and prints, per run, the mean difference, how
many users differ and the two-sided p-value.

    python bench/paired_vs_counter.py bench/results/offline_accuracy.json --half-life 50
    python bench/paired_vs_counter.py RUN.json --dataset amazon-beauty --counter co-occurrence --lags 1 0.5 0.25
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from models.baselines import CoOccurrence, DecayedFrequency
from models.baselines.cooccurrence import BACKWARD, LAGS, RECENT
from models.data import load_dataset
from models.evaluate import target_ranks
from models.splits import leave_last_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results")
    p.add_argument("--dataset", default="foursquare-nyc")
    p.add_argument("--counter", choices=("decayed", "co-occurrence"), default="decayed")
    p.add_argument("--half-life", type=float, help="decayed: the half-life chosen on validation")
    p.add_argument("--lags", nargs="+", type=float, default=list(LAGS), help="co-occurrence settings")
    p.add_argument("--backward", type=float, default=BACKWARD)
    p.add_argument("--recent", nargs="+", type=float, default=list(RECENT))
    args = p.parse_args()
    events = load_dataset(args.dataset)
    split = leave_last_out(events)
    if args.counter == "decayed":
        if args.half_life is None:
            p.error("--counter decayed needs --half-life (the baselines' validation choice)")
        counter, name = DecayedFrequency(args.half_life).fit(split), f"decayed counter (half-life {args.half_life:g})"
    else:
        counter = CoOccurrence(args.lags, args.backward, args.recent).fit(split, events=events)
        name = repr(counter)
    _, ranks = target_ranks(counter, split, "test", 512)
    base = np.where(ranks < 10, 1 / np.log2(ranks + 2.0), 0.0)
    print(f"{name} test NDCG@10 {base.mean():.4f}")
    models = json.loads(Path(args.results).read_text())["datasets"][args.dataset]["models"]
    for row, runs in models.items():
        for run in runs:
            x = np.asarray(run["test_user_ndcg@10"])
            w = wilcoxon(x, base)
            print(f"| {row} (seed {run['seed']}) | {x.mean() - base.mean():+.4f} | "
                  f"{np.count_nonzero(x - base)}/{len(x)} | {w.pvalue:.3g} |")


if __name__ == "__main__":
    main()
