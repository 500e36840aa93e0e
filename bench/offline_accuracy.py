"""Offline accuracy benchmark (issue 11), chronological leave-last-out, full ranking (DESIGN §4).

Rows are named model configurations (``ROWS``); every run trains to early stopping on validation
NDCG@10 within an epoch budget and records its best epoch, the epochs it ran, and whether the
budget stopped it while still improving. Runs go seed-major, rows in the order given, and the JSON
is rewritten after every run, so an interrupted benchmark keeps everything it finished. Each run
also stores the per-user test NDCG@10 (for the paired Wilcoxon test of ``--compare``) and the
authors' sampled protocol (target + 99 uniformly sampled unseen items; a separate, labelled column,
never mixed with the full-ranking numbers).

    python bench/offline_accuracy.py --datasets foursquare-nyc --seeds 0 --rows hail+copy ensemble+copy \\
        --epochs 40 --patience 4 --threads 1 --out bench/results/nyc_a.json
    python bench/offline_accuracy.py --baselines-only --datasets foursquare-nyc amazon-beauty --out b.json
    python bench/offline_accuracy.py --merge b.json nyc_a.json --out bench/results/offline_accuracy.json

``--sweep`` runs the MED α/β/γ grid of ``--alphas/--betas/--gammas`` on ``--sweep-row`` (default: 2
SASRec peers, shared table, history output; seed 0) and records validation NDCG@10 only: the test split
never chooses anything. ``--med-alpha/--med-beta/--med-gamma`` then run ``--rows`` at the chosen values.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.baselines import DecayedFrequency, choose_half_life
from models.data import load_dataset
from models.evaluate import ModelScorer, evaluate, sampled_ranks, target_ranks
from models.metrics import summarize
from models.names import OPTIMIZERS, SCHEDULES
from models.presets import preset
from models.repeat import RepeatMixture, choose_alpha
from models.splits import SequenceSplit, leave_last_out
from models.trainer import TrainConfig, train
from models.transitions import NEIGHBOURS
from stream.cli.offline import baseline_metrics

METRICS = ("ndcg@10", "hr@10", "mrr@10")
REPEAT_ALPHAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8)
HALF_LIVES = (1, 2, 5, 10, 25, 50, 100, 200)

SHARED = {"share_embedding": True, "output_bias": True}
PUBLISHED = {"encoders": ("bert4rec",), "heads": 2, **SHARED}
# name -> (preset, peers, overrides). "+copy" = the history-aware output (models/history.py).
ROWS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "sasrec": ("sasrec", 1, {}),
    "sasrec+copy": ("sasrec", 1, {"history": "copy"}),
    "ensemble": ("ensemble", 2, {}),
    "ensemble+copy": ("ensemble", 2, {"history": "copy"}),
    "dml": ("dml", 2, {}),
    "dml+copy": ("dml", 2, {"history": "copy"}),
    "hail-shared": ("hail", 2, SHARED),
    "hail-shared+copy": ("hail", 2, {**SHARED, "history": "copy"}),
    "hail-separate": ("hail", 2, {}),
    "hail-separate+copy": ("hail", 2, {"history": "copy"}),
    "hail-k3": ("hail", 3, {}),
    "hail-k3+copy": ("hail", 3, {"history": "copy"}),
    "hail-published": ("hail", 2, PUBLISHED),
    "hail-published+copy": ("hail", 2, {**PUBLISHED, "history": "copy"}),
    "sasrec-recbole": ("sasrec", 1, {"heads": 2, "ffn": 256, "activation": "gelu", "dropout": 0.5}),
    "sasrec-recbole+copy": ("sasrec", 1, {"heads": 2, "ffn": 256, "activation": "gelu", "dropout": 0.5,
                                          "history": "copy"}),
    # the contrastive option (models.contrast, after DuoRec: λ 0.1, τ 1)
    "sasrec-cl": ("sasrec", 1, {"contrast": 0.1}),
    "sasrec-cl+copy": ("sasrec", 1, {"contrast": 0.1, "history": "copy"}),
    "hail-shared-cl+copy": ("hail", 2, {**SHARED, "history": "copy", "contrast": 0.1}),
    # the earlier reconstructions of MED, as 1-seed ablations
    "hail-weighted_ce+copy": ("hail", 2, {**SHARED, "history": "copy", "med_form": "weighted_ce"}),
    "hail-unlikelihood+copy": ("hail", 2, {**SHARED, "history": "copy", "med_form": "unlikelihood"}),
    "hail-exclusive+copy": ("hail", 2, {**SHARED, "history": "copy", "med_form": "exclusive"}),
}
# "+trans": the global transition output (models/transitions.py), 100 successors per item.
TRANSITIONS = 100
for _name in ("sasrec", "ensemble", "dml", "hail-shared", "hail-k3"):
    _model, _peers, _spec = ROWS[_name + "+copy"]
    ROWS[_name + "+copy+trans"] = (_model, _peers, {**_spec, "transitions": TRANSITIONS})
# "+nbr": the same output over a neighbour table (models/transitions.py): pairs up to two steps
# apart, reversed pairs at half weight, the rows of the user's last three items: the co-occurrence
# counter's defaults (bench/RESULTS.md, 2026-12-07 night).
for _name in ("sasrec", "ensemble", "dml", "hail-shared", "hail-separate", "hail-k3"):
    _model, _peers, _spec = ROWS[_name + "+copy"]
    ROWS[_name + "+copy+nbr"] = (_model, _peers, {**_spec, "transitions": TRANSITIONS, **NEIGHBOURS})
    # "+bias": the table enters as evidence added to the logits (trans_mode="bias"), not as a mixture
    ROWS[_name + "+copy+nbr+bias"] = (_model, _peers, {**ROWS[_name + "+copy+nbr"][2], "trans_mode": "bias"})
    # "+drop5": the same with dropout 0.5 (default 0.2): with the counter in the logits these rows
    # over-fit within 2-4 epochs
    ROWS[_name + "+copy+nbr+bias+drop5"] = (_model, _peers, {**ROWS[_name + "+copy+nbr+bias"][2], "dropout": 0.5})
ROWS["sasrec+trans"] = ("sasrec", 1, {"transitions": TRANSITIONS})
ROWS["sasrec+copy+trans+softmax"] = ("sasrec", 1, {"history": "copy", "transitions": TRANSITIONS, "softmax_ce": 1.0})
# Every row above counts SASRec positions from the window's end (the default until 2026-12-03, when
# these rows were run); "-start": the same row with positions from the window's start (the default
# since, models/encoders.py).
for _name, (_model, _peers, _spec) in ROWS.items():
    ROWS[_name] = (_model, _peers, {"positions": "end", **_spec})
for _name in ("sasrec", "ensemble", "hail-shared"):
    for _copy in ("", "+copy"):
        _model, _peers, _spec = ROWS[_name + _copy]
        ROWS[f"{_name}-start{_copy}"] = (_model, _peers, {**_spec, "positions": "start"})
LABELS = {
    "sasrec": "SASRec (1 peer)",
    "ensemble": "2 SASRec, λ=0 (ensemble)",
    "dml": "DML (2 SASRec)",
    "hail-shared": "HAIL coded (2 SASRec, shared table)",
    "hail-separate": "HAIL coded (2 SASRec, separate tables)",
    "hail-k3": "HAIL coded (K=3 SASRec)",
    "hail-published": "HAIL as published (2 BERT4Rec, shared)",
    "sasrec-recbole": "SASRec RecBole-style (2 heads, FFN 256, GELU, dropout 0.5)",
    "sasrec-cl": "SASRec + same-target contrast (λ 0.1)",
    "hail-shared-cl": "HAIL coded (2 SASRec, shared table) + same-target contrast (λ 0.1)",
    "hail-weighted_ce": "HAIL reconstruction weighted_ce (ablation)",
    "hail-unlikelihood": "HAIL reconstruction unlikelihood (ablation)",
    "hail-exclusive": "HAIL reconstruction exclusive (ablation)",
}


def _suffix(row: str, suffix: str) -> tuple[str, bool]:
    return (row[: -len(suffix)], True) if row.endswith(suffix) else (row, False)


def label(row: str) -> str:
    row, soft = _suffix(row, "+softmax")
    row, drop5 = _suffix(row, "+drop5")
    row, bias = _suffix(row, "+bias")
    row, trans = _suffix(row, "+trans")
    row, nbr = _suffix(row, "+nbr")
    base, copy = _suffix(row, "+copy")
    base, start = _suffix(base, "-start")
    return (LABELS.get(base, base) + (", positions from the start" if start else "")
            + (" + history output" if copy else "") + (" + transition output" if trans else "")
            + (" + neighbour output" if nbr and not bias else "") + (" + neighbour logit bias" if bias else "")
            + (" + softmax CE" if soft else "") + (", dropout 0.5" if drop5 else ""))


def per_user_ndcg(ranks: np.ndarray, k: int = 10) -> list[float]:
    return [round(float(1.0 / np.log2(r + 2.0)) if r < k else 0.0, 6) for r in ranks]


def run_one(split: SequenceSplit, row: str, seed: int, tc: TrainConfig, overrides: dict[str, Any],
            repeat_mix: bool = False) -> dict[str, Any]:
    model, peers, spec = ROWS[row]
    cfg = preset(model, peers=peers, seed=seed, **{**spec, **overrides})
    t0 = time.perf_counter()
    result = train(split, cfg, TrainConfig(**{**asdict(tc), "seed": seed}))
    scorer = ModelScorer(result.model)
    _, ranks = target_ranks(scorer, split, "test", 512)
    sampled = sampled_ranks(scorer, split, "test")
    out: dict[str, Any] = {
        "name": row,
        "config": asdict(cfg),
        "train": asdict(tc),
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "budget": result.budget,
        "budget_bound": result.budget_bound,
        "calibration": result.calibration,
        "seconds_per_epoch": result.seconds_per_epoch,
        "wall_seconds": time.perf_counter() - t0,
        "history": result.history,
        "valid": evaluate(scorer, split, "valid"),
        "test": summarize(ranks),
        "test_sampled99": summarize(sampled),
        "test_user_ndcg@10": per_user_ndcg(ranks),
    }
    if repeat_mix:  # the models/repeat.py late-fusion baseline, alpha on validation only
        alpha, by_alpha = choose_alpha(scorer, split, REPEAT_ALPHAS)
        out.update(repeat_alpha=alpha, repeat_valid=by_alpha,
                   repeat_test=evaluate(RepeatMixture(scorer, alpha), split, "test"))
    return out


def baselines(split: SequenceSplit, events: Any) -> dict[str, Any]:
    res: dict[str, Any] = {name: m for name, m in baseline_metrics(split, events, "test").items()}
    half, by_half = choose_half_life(split, HALF_LIVES)
    decayed = DecayedFrequency(half).fit(split)
    res[f"decayed-frequency (half-life {half:g} visits, chosen on valid)"] = {
        **evaluate(decayed, split, "test"), "half_life": half, "valid_by_half_life": by_half}
    return res


def wilcoxon(a: list[float], b: list[float]) -> dict[str, float]:
    """Two-sided paired Wilcoxon signed-rank test on per-user NDCG@10 (zero differences dropped)."""
    from scipy.stats import wilcoxon as _w

    x, y = np.asarray(a), np.asarray(b)
    d = x - y
    res = _w(x, y, zero_method="wilcox", alternative="two-sided")
    return {"n_users": int(len(d)), "n_nonzero": int(np.count_nonzero(d)), "mean_diff": float(d.mean()),
            "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std) over seeds; a single run is shown as its value alone."""
    a = np.asarray(values)
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if len(a) > 1 else f"{a.mean():.4f}"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for ds, res in results["datasets"].items():
        lines.append(f"\n### {ds} — test split, full ranking (last column: the authors' sampled protocol)\n")
        lines.append("| model | NDCG@10 | HR@10 | MRR@10 | seeds | best epoch / epochs run / budget | s/epoch "
                     "| sampled-99 NDCG@10 (not comparable) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, m in res.get("baselines", {}).items():
            lines.append(f"| {name} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {m['mrr@10']:.4f} | – | – | – | – |")
        for name, runs in res.get("models", {}).items():
            cells = [mean_std([r["test"][k] for r in runs]) for k in METRICS]
            seeds = ",".join(str(r["seed"]) for r in runs)
            ep = "; ".join(f"{r['best_epoch']}/{r['epochs_run']}/{r['budget']}" + (" (budget-bound)" if
                                                                                   r["budget_bound"] else "")
                           for r in runs)
            spe = np.mean([r["seconds_per_epoch"] for r in runs])
            samp = mean_std([r["test_sampled99"]["ndcg@10"] for r in runs])
            lines.append(f"| {label(name)} | {' | '.join(cells)} | {seeds} | {ep} | {spe:.1f} | {samp} |")
        mixed = {n: rs for n, rs in res.get("models", {}).items() if all("repeat_test" in r for r in rs)}
        if mixed:
            lines.append("\nLate fusion with the user's item frequencies (models/repeat.py), α on validation:\n")
            lines.append("| model + repeat mixture | NDCG@10 | HR@10 | MRR@10 | α per seed |")
            lines.append("|---|---|---|---|---|")
            for name, runs in mixed.items():
                cells = [mean_std([r["repeat_test"][k] for r in runs]) for k in METRICS]
                lines.append(f"| {label(name)} | {' | '.join(cells)} | "
                             f"{'/'.join(format(r['repeat_alpha'], 'g') for r in runs)} |")
        for cmp in res.get("wilcoxon", []):
            lines.append(f"\nPaired Wilcoxon, per-user test NDCG@10, {label(cmp['a'])} vs {label(cmp['b'])} "
                         f"(seed {cmp['seed']}): mean difference {cmp['mean_diff']:+.4f}, "
                         f"{cmp['n_nonzero']}/{cmp['n_users']} users differ, p = {cmp['p_value']:.3g}")
        if res.get("sweep"):
            rows = sorted({r["name"] for r in res["sweep"]})
            lines.append(f"\nMED α/β/γ sweep of {', '.join(rows)}, validation NDCG@10 only (seed 0):\n")
            lines.append("| α | β | γ | valid NDCG@10 | best epoch / run / budget |")
            lines.append("|---|---|---|---|---|")
            for r in sorted(res["sweep"], key=lambda r: -r["valid"]["ndcg@10"]):
                c = r["config"]
                lines.append(f"| {c['med_alpha']:g} | {c['med_beta']:g} | {c['med_gamma']:g} | "
                             f"{r['valid']['ndcg@10']:.4f} | {r['best_epoch']}/{r['epochs_run']}/{r['budget']} |")
    return "\n".join(lines)


def merge(paths: list[str]) -> dict[str, Any]:
    """One result from several runs of this script: data sets side by side, runs of the same row
    appended (new seeds only), baselines / sweep from the first file that has them."""
    merged: dict[str, Any] = {"commands": [], "datasets": {}, "machine": [], "dates": []}
    for path in paths:
        part = json.loads(Path(path).read_text())
        merged["commands"].extend(part.get("commands", [part.get("command", "")]))
        merged["machine"].extend(part["machine"] if isinstance(part["machine"], list) else [part["machine"]])
        merged["dates"].extend(part.get("dates", [part.get("date", "")]))
        for ds, res in part["datasets"].items():
            into = merged["datasets"].setdefault(ds, {"models": {}})
            for key in ("baselines", "sweep"):
                if key in res and key not in into:
                    into[key] = res[key]
            for name, runs in res.get("models", {}).items():
                have = {r["seed"] for r in into["models"].get(name, [])}
                into["models"].setdefault(name, []).extend(r for r in runs if r["seed"] not in have)
    return merged


def compare(results: dict[str, Any], pairs: list[str]) -> None:
    for res in results["datasets"].values():
        res["wilcoxon"] = []
        for pair in pairs:
            a, b = pair.split(":")
            runs_a = {r["seed"]: r for r in res["models"].get(a, [])}
            runs_b = {r["seed"]: r for r in res["models"].get(b, [])}
            for seed in sorted(set(runs_a) & set(runs_b)):
                w = wilcoxon(runs_a[seed]["test_user_ndcg@10"], runs_b[seed]["test_user_ndcg@10"])
                res["wilcoxon"].append({"a": a, "b": b, "seed": seed, **w})


def write(results: dict[str, Any], out: Path) -> None:
    out.write_text(json.dumps(results, indent=1))
    head = "\n".join(f"Command: `{c}`" for c in results["commands"])
    out.with_suffix(".md").write_text(f"{head}\nMachine: {'; '.join(sorted(set(results['machine'])))}\n"
                                      f"Dates: {', '.join(sorted(set(results['dates'])))}\n{markdown(results)}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["foursquare-nyc"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--rows", nargs="+", default=["hail-shared+copy", "ensemble+copy", "sasrec+copy"],
                   choices=sorted(ROWS))
    p.add_argument("--epochs", type=int, default=40, help="epoch budget per run")
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning rate: constant, or warm-up then linear decay to 0 over the budget")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--repeat-mix", action="store_true", help="also the models/repeat.py late fusion")
    p.add_argument("--baselines-only", action="store_true")
    p.add_argument("--sweep", action="store_true", help="MED α/β/γ grid on validation instead of --rows")
    p.add_argument("--alphas", nargs="+", type=float, default=[0.5, -1.0])
    p.add_argument("--betas", nargs="+", type=float, default=[0.02])
    p.add_argument("--gammas", nargs="+", type=float, default=[1.0, 2.0])
    p.add_argument("--sweep-row", default="hail-shared+copy", choices=sorted(r for r in ROWS if r.startswith("hail")),
                   help="the row whose MED settings --sweep varies")
    p.add_argument("--med-alpha", type=float, default=None, help="MED α for every row (default: the row's)")
    p.add_argument("--med-beta", type=float, default=None, help="MED β for every row (default: the row's)")
    p.add_argument("--med-gamma", type=float, default=None, help="MED γ for every row (default: the row's)")
    p.add_argument("--compare", nargs="*", default=["hail-shared+copy:ensemble+copy", "hail-shared:ensemble"],
                   help="ROW_A:ROW_B pairs for the paired Wilcoxon test")
    p.add_argument("--out", default="bench/results/offline_accuracy.json")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine earlier runs' JSON files into --out")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merged = merge(args.merge)
        compare(merged, args.compare)
        write(merged, out)
        print(markdown(merged))
        return
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "commands": ["python " + " ".join(sys.argv)],
        "machine": [f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                    f"torch {torch.get_num_threads()} thread(s), load average at start "
                    f"{os.getloadavg()[0]:.1f}"],
        "dates": [time.strftime("%Y-%m-%d")],
        "datasets": {},
    }
    tc = TrainConfig(epochs=args.epochs, patience=args.patience, threads=args.threads, progress=False,
                     batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                     optimizer=args.optimizer, schedule=args.schedule, warmup_steps=args.warmup_steps)
    overrides: dict[str, Any] = {"max_len": args.max_len} if args.max_len else {}
    overrides.update({f"med_{k}": v for k, v in (("alpha", args.med_alpha), ("beta", args.med_beta),
                                                  ("gamma", args.med_gamma)) if v is not None})
    for ds in args.datasets:
        events = load_dataset(ds)
        split = leave_last_out(events)
        res: dict[str, Any] = results["datasets"].setdefault(ds, {"models": {}})
        if args.baselines_only:
            res["baselines"] = baselines(split, events)
            print(ds, {k: round(v["ndcg@10"], 4) for k, v in res["baselines"].items()}, flush=True)
            write(results, out)
            continue
        if args.sweep:
            res["sweep"] = []
            for a, b, g in itertools.product(args.alphas, args.betas, args.gammas):
                r = run_one(split, args.sweep_row, 0, tc, {**overrides, "med_alpha": a, "med_beta": b,
                                                               "med_gamma": g})
                r.pop("test"), r.pop("test_sampled99"), r.pop("test_user_ndcg@10")  # validation only
                res["sweep"].append(r)
                print(f"  sweep α {a} β {b} γ {g}: valid ndcg@10 {r['valid']['ndcg@10']:.4f} "
                      f"(best epoch {r['best_epoch']}/{r['epochs_run']})", flush=True)
                write(results, out)
            continue
        for seed in args.seeds:
            for row in args.rows:
                r = run_one(split, row, seed, tc, overrides, args.repeat_mix)
                res["models"].setdefault(row, []).append(r)
                print(f"  {ds} {row} seed {seed}: test ndcg@10 {r['test']['ndcg@10']:.4f} valid "
                      f"{r['valid']['ndcg@10']:.4f} sampled99 {r['test_sampled99']['ndcg@10']:.4f} "
                      f"({r['seconds_per_epoch']:.1f} s/epoch, best epoch {r['best_epoch']}/{r['epochs_run']}"
                      f"/{r['budget']})", flush=True)
                compare(results, args.compare)
                write(results, out)
    print(markdown(results))


if __name__ == "__main__":
    main()
