"""The co-occurrence counter's settings, chosen on validation: one setting at a time around the default.

:class:`models.baselines.CoOccurrence` has three settings: ``lags`` (weights of pairs 1, 2, … steps
apart), ``backward`` (weight of reversed pairs) and ``recent`` (weights of the rows of the user's
latest items). This script fits the counter on each data set's training sequences (leave-last-out,
as every row of ``bench/offline_accuracy.py``), scores validation and test NDCG@10 / HR@10 (full
ranking) for the default and for each variant that changes one setting, and names the variant with
the best **validation** NDCG@10; test is reported, never used to choose. Markov is the first row
(one lag, no reversed pairs, one recent item).

    nice -n 10 python bench/cooccurrence_grid.py --datasets amazon-beauty foursquare-nyc   # ~10 min on 2 cores

Writes ``bench/results/cooccurrence_grid.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import RESULTS, command, write_results  # isort: skip - bench/ is on the path

from models.baselines import CoOccurrence
from models.baselines.cooccurrence import BACKWARD, LAGS, RECENT
from models.data import load_dataset
from models.evaluate import evaluate
from models.splits import leave_last_out

DEFAULT: dict[str, Any] = {"lags": LAGS, "backward": BACKWARD, "recent": RECENT}
VARIANTS: list[dict[str, Any]] = [
    {"lags": (1.0,), "backward": 0.0, "recent": (1.0,)},  # = Markov
    DEFAULT,
    {**DEFAULT, "lags": (1.0,)}, {**DEFAULT, "lags": (1.0, 1.0)}, {**DEFAULT, "lags": (1.0, 0.5, 0.25)},
    {**DEFAULT, "backward": 0.0}, {**DEFAULT, "backward": 1.0},
    {**DEFAULT, "recent": (1.0,)}, {**DEFAULT, "recent": (1.0, 0.6)}, {**DEFAULT, "recent": (1.0, 0.6, 0.4)},
    {**DEFAULT, "recent": (1.0, 0.6, 0.4, 0.2)},
]


def setting(v: dict[str, Any]) -> str:
    return f"lags {v['lags']}, backward {v['backward']:g}, recent {v['recent']}"


def markdown(out: dict[str, Any]) -> str:
    lines = ["# Co-occurrence counter: settings on validation (bench/cooccurrence_grid.py)", "",
             f"`{out['command']}`, {out['date']}", ""]
    for ds, res in out["datasets"].items():
        lines += [f"## {ds}", "", "| setting | valid NDCG@10 | valid HR@10 | test NDCG@10 | test HR@10 |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['setting']}{' **(chosen)**' if r['setting'] == res['chosen_on_valid'] else ''}"
                  f"{' (= Markov)' if n == 0 else ''} | {r['valid_ndcg@10']:.4f} | {r['valid_hr@10']:.4f} | "
                  f"{r['test_ndcg@10']:.4f} | {r['test_hr@10']:.4f} |"
                  for n, r in enumerate(res["rows"])]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["amazon-beauty"])
    p.add_argument("--out", default=str(RESULTS / "cooccurrence_grid.json"))
    args = p.parse_args()
    out: dict[str, Any] = {"command": command(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "datasets": {}}
    for ds in args.datasets:
        events = load_dataset(ds)
        split = leave_last_out(events)
        rows: list[dict[str, Any]] = []
        for v in VARIANTS:
            t0 = time.perf_counter()
            c = CoOccurrence(**v).fit(split, events=events)
            valid, test = evaluate(c, split, "valid"), evaluate(c, split, "test")
            rows.append({"setting": setting(v), **{f"valid_{k}": valid[k] for k in ("ndcg@10", "hr@10")},
                         **{f"test_{k}": test[k] for k in ("ndcg@10", "hr@10")},
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(ds, rows[-1], flush=True)
        best = max(rows, key=lambda r: r["valid_ndcg@10"])
        out["datasets"][ds] = {"rows": rows, "chosen_on_valid": best["setting"]}
    write_results(args.out, out, markdown)


if __name__ == "__main__":
    main()
