"""Amazon Beauty: how much does the order of same-day events (timestamp ties) move the baselines?

Beauty's timestamps have day resolution; the order within a user's line is the true order, and
``models.data.load_dataset`` keeps it (stable sort). Pipelines that sort by timestamp with a
non-stable sort, or by (timestamp, item id), reorder those ties. This script measures

1. the tie shares: users whose test target (last item) has the same timestamp as the item before
   it, the same for the validation target, and all consecutive pairs of a user's line that tie;
2. the popularity and Markov baselines' test NDCG@10 / HR@10 (full ranking, leave-last-out: the
   rows of ``bench/offline_accuracy.py --baselines-only``, via ``stream.cli.offline.baseline_metrics``)
   on (a) the true order, (b) ties re-ordered by item id ascending within each (user, timestamp)
   group, (c) ties shuffled within each group (``--seed``, default 0).

    nice -n 10 python bench/beauty_ties.py            # ~1 min on a 2-core VM; writes bench/results/beauty_ties.md

``--write-csv PATH --order source|itemid|shuffle`` instead writes the events in that tie order as a
``user,item,timestamp`` CSV for ``models.data.load_dataset`` (and so ``bench/offline_accuracy.py
--datasets PATH``), loads it back and checks that every user's sequence is the intended one.
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np

from _common import RESULTS, command  # isort: skip - bench/ is on the path

from models.data import Interactions, load_dataset
from models.splits import SequenceSplit, leave_last_out
from stream.cli.offline import baseline_metrics

BASELINES = ("popularity", "markov")


def tie_shares(events: Interactions) -> dict[str, float]:
    """Tie shares over the users with >= 3 events (the evaluated ones) and over all consecutive pairs."""
    times: dict[str, list[float]] = {}
    for u, t in zip(events.users.tolist(), events.ts.tolist(), strict=True):
        times.setdefault(u, []).append(t)
    lines = [t for t in times.values() if len(t) >= 3]
    pairs = sum(len(t) - 1 for t in times.values())
    tied = sum(a == b for t in times.values() for a, b in zip(t, t[1:], strict=False))
    return {"users": len(lines),
            "test target tied with previous": float(np.mean([t[-1] == t[-2] for t in lines])),
            "valid target tied with previous": float(np.mean([t[-2] == t[-3] for t in lines])),
            "consecutive pairs tied": tied / pairs}


def reorder(events: Interactions, key: np.ndarray) -> Interactions:
    """The same events with each (user, timestamp) group sorted by ``key`` (then source order); each
    group keeps its rows' positions, so the order of users and of everything else is unchanged."""
    idx, users = np.arange(len(events)), events.users.astype(str)
    perm = np.empty_like(idx)
    perm[np.lexsort((idx, events.ts, users))] = np.lexsort((idx, key, events.ts, users))
    return events.take(perm)


def write_csv(events: Interactions, path: str) -> None:
    """``events`` as a ``user,item,timestamp`` CSV; loading it back must give the same sequences."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp"])
        w.writerows(zip(events.users.tolist(), events.items.tolist(), map(repr, events.ts.tolist()), strict=True))
    back = load_dataset(path)
    for a in ("users", "items", "ts"):
        if not np.array_equal(getattr(back, a), getattr(events, a)):
            raise SystemExit(f"{path}: loaded {a} differ from the intended order")


def test_targets(split: SequenceSplit) -> dict[str, str]:
    """user id -> test target's item id, for the evaluated users."""
    return {split.user_ids[u]: split.vocab.id_of(int(split.test_target[u])) for u in split.eval_users}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the random shuffle of the ties")
    p.add_argument("--out", default=str(RESULTS / "beauty_ties.md"))
    p.add_argument("--write-csv", metavar="PATH", help="write the events in --order as a CSV and stop")
    p.add_argument("--order", choices=("source", "itemid", "shuffle"), default="itemid")
    args = p.parse_args()
    t0 = time.perf_counter()
    events = load_dataset("amazon-beauty")
    item_id = np.array([int(i) for i in events.items.tolist()])  # Beauty's item ids are integers
    orders = {
        "(a) true order (source)": events,
        "(b) ties by item id ascending": reorder(events, item_id),
        f"(c) ties shuffled (seed {args.seed})": reorder(events, np.random.default_rng(args.seed).permutation(len(events))),
    }
    if args.write_csv:
        ev = list(orders.values())[("source", "itemid", "shuffle").index(args.order)]
        write_csv(ev, args.write_csv)
        users = set(events.users.tolist())
        moved = sum(a != b for a, b in zip(events.items.tolist(), ev.items.tolist(), strict=True))
        print(f"wrote {args.write_csv}: {len(ev)} events, {len(users)} users, {moved} events moved; "
              f"loads back to the intended per-user order")
        return
    true_test = test_targets(leave_last_out(events))
    rows = []
    for name, ev in orders.items():
        split = leave_last_out(ev)
        test = test_targets(split)
        same_test = float(np.mean([test[u] == t for u, t in true_test.items()]))
        m = baseline_metrics(split, ev, "test")
        rows.append((name, same_test, *(m[b][k] for b in BASELINES for k in ("ndcg@10", "hr@10"))))
        print(name, {b: round(m[b]["ndcg@10"], 4) for b in BASELINES}, flush=True)

    ties = tie_shares(events)
    lines = ["| order | test target = true one | popularity NDCG@10 | popularity HR@10 "
             "| Markov NDCG@10 | Markov HR@10 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.1%} | " + " | ".join(f"{x:.4f}" for x in r[2:]) + " |" for r in rows]
    table = "\n".join(lines)
    tie_lines = "\n".join(f"- {k}: {v:.1%}" for k, v in ties.items() if k != "users")
    text = (f"# Amazon Beauty: order of same-day ties vs the baselines\n\n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  \nMachine: 2-core VM  \n"
            f"Command: `nice -n 10 {command()}` ({time.perf_counter() - t0:.0f} s)\n\n"
            f"Tie shares in the true order ({ties['users']} users with >= 3 events; pairs over all users):\n\n"
            f"{tie_lines}\n\n"
            "Test split, full ranking, leave-last-out (the baseline rows of `bench/offline_accuracy.py`; "
            "recorded there: popularity 0.0073 / 0.0154, Markov 0.0303 / 0.0520):\n\n"
            f"{table}\n")
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
