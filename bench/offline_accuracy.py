"""Offline accuracy benchmark (issue: HAIL model core), chronological leave-last-out, full ranking.

Phase 1 (validation only, seed 0): sweep the MED form, λ (med_weight) and med_topk of 2-SASRec-peer
HAIL; the best setting by validation NDCG@10 is used for every HAIL row of phase 2. The test split is
never looked at to choose anything.
Phase 2 (test): the baselines, single SASRec, single GRU4Rec, 2 peers with λ = 0 (ensemble), DML,
HAIL (2 SASRec), HAIL (SASRec + GRU4Rec), HAIL K = 3: mean ± std over the seeds of NDCG@10, HR@10,
MRR@10, plus seconds per training epoch and the best epoch.

    python bench/offline_accuracy.py --datasets foursquare-nyc amazon-beauty --seeds 0 1 2 \
        --epochs 20 --out bench/results/offline_accuracy.json

Writes JSON with every run and prints a Markdown table (also saved next to the JSON as .md).
Runs split over processes (e.g. one per data set, or a seed in another process) are combined with

    python bench/offline_accuracy.py --merge a.json b.json --out bench/results/offline_accuracy.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data import load_dataset
from models.evaluate import ModelScorer, evaluate
from models.presets import preset
from models.repeat import RepeatMixture, choose_alpha
from models.splits import SequenceSplit, leave_last_out
from models.trainer import TrainConfig, train
from stream.cli.offline import baseline_metrics

METRICS = ("ndcg@10", "hr@10", "mrr@10")
REPEAT_ALPHAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8)


def run_one(split: SequenceSplit, name: str, config: Any, tc: TrainConfig, repeat_mix: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = train(split, config, tc)
    scorer = ModelScorer(result.model)
    extra: dict[str, Any] = {}
    if repeat_mix:  # alpha chosen on validation only
        alpha, by_alpha = choose_alpha(scorer, split, REPEAT_ALPHAS)
        extra = {"repeat_alpha": alpha, "repeat_valid": by_alpha,
                 "repeat_test": evaluate(RepeatMixture(scorer, alpha), split, "test")}
    return {**extra,
        "name": name,
        "config": asdict(config),
        "seed": config.seed,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "seconds_per_epoch": result.seconds_per_epoch,
        "wall_seconds": time.perf_counter() - t0,
        "valid": evaluate(scorer, split, "valid"),
        "test": evaluate(scorer, split, "test"),
    }


def sweep(split: SequenceSplit, tc: TrainConfig, forms: list[str], weights: list[float], topks: list[int],
          warmups: list[int]) -> list[dict[str, Any]]:
    runs = []
    for form, lam, topk, warm in itertools.product(forms, weights, topks, warmups):
        cfg = preset("hail", peers=2, med_form=form, med_weight=lam, med_topk=topk, med_warmup_epochs=warm, seed=0)
        r = run_one(split, f"hail[{form},λ={lam},top{topk},warm{warm}]", cfg, tc)
        print(f"  sweep {r['name']}: valid ndcg@10 {r['valid']['ndcg@10']:.4f}", flush=True)
        runs.append(r)
    return runs


def model_rows(best: dict[str, Any]) -> dict[str, dict[str, Any]]:
    med = {k: best[k] for k in ("med_form", "med_weight", "med_topk", "med_warmup_epochs")}
    return {
        "SASRec (1 peer)": {"model": "sasrec"},
        "HAIL (2 SASRec)": {"model": "hail", "peers": 2, **med},
        "2 peers, λ=0 (ensemble)": {"model": "ensemble", "peers": 2},
        "DML (2 SASRec)": {"model": "dml", "peers": 2},
        "GRU4Rec (1 peer)": {"model": "gru4rec"},
        "HAIL (SASRec + GRU4Rec)": {"model": "hail", "peers": 2, "encoders": ("sasrec", "gru4rec"), **med},
        "HAIL (K=3 SASRec)": {"model": "hail", "peers": 3, **med},
    }


def mean_std(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for ds, res in results["datasets"].items():
        lines.append(f"\n### {ds} — test split, full ranking, seeds requested {results['seeds']}, "
                     f"at most {res.get('epochs', results['epochs'])} epochs\n")
        lines.append("| model | NDCG@10 | HR@10 | MRR@10 | seeds run | s/epoch | best epoch |")
        lines.append("|---|---|---|---|---|---|---|")
        for name, m in res["baselines"].items():
            lines.append(f"| {name} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {m['mrr@10']:.4f} | – | – | – |")
        for name, runs in res["models"].items():
            cells = [mean_std([r["test"][k] for r in runs]) for k in METRICS]
            spe = np.mean([r["seconds_per_epoch"] for r in runs])
            be = "/".join(str(r["best_epoch"]) for r in runs)
            lines.append(f"| {name} | {' | '.join(cells)} | {len(runs)} | {spe:.1f} | {be} |")
        mixed = {name: runs for name, runs in res["models"].items() if all("repeat_test" in r for r in runs)}
        if mixed:
            lines.append("\nRepeat-aware mixture (1-α)·p_model + α·(user's item frequencies), α chosen on validation:\n")
            lines.append("| model + repeat mixture | NDCG@10 | HR@10 | MRR@10 | α per seed |")
            lines.append("|---|---|---|---|---|")
            for name, runs in mixed.items():
                cells = [mean_std([r["repeat_test"][k] for r in runs]) for k in METRICS]
                alphas = "/".join(f"{r['repeat_alpha']:g}" for r in runs)
                lines.append(f"| {name} | {' | '.join(cells)} | {alphas} |")
        if res.get("sweep"):
            lines.append(f"\nMED sweep on the validation split (2 SASRec peers, seed 0) — chosen: `{res['chosen']}`\n")
            lines.append("| setting | valid NDCG@10 | valid HR@10 |")
            lines.append("|---|---|---|")
            for r in sorted(res["sweep"], key=lambda r: -r["valid"]["ndcg@10"]):
                lines.append(f"| {r['name']} | {r['valid']['ndcg@10']:.4f} | {r['valid']['hr@10']:.4f} |")
    return "\n".join(lines)


def merge(paths: list[str]) -> dict[str, Any]:
    """One result from several runs of this script: data sets side by side, runs of the same
    model row appended (seeds), baselines/sweep/chosen from the first file that has them."""
    merged: dict[str, Any] = {"commands": [], "datasets": {}, "seeds": [], "epochs": None}
    for path in paths:
        part = json.loads(Path(path).read_text())
        merged["commands"].append(part["command"])
        merged.setdefault("machine", part["machine"])
        merged.setdefault("date", part["date"])
        merged["seeds"] = sorted(set(merged["seeds"]) | set(part["seeds"]))
        merged["epochs"] = merged["epochs"] or part["epochs"]
        for ds, res in part["datasets"].items():
            into = merged["datasets"].setdefault(ds, {"models": {}, "epochs": part["epochs"]})
            for key in ("baselines", "sweep", "chosen"):
                if key in res and key not in into:
                    into[key] = res[key]
            for name, runs in res["models"].items():
                have = {r["seed"] for r in into["models"].get(name, [])}
                into["models"].setdefault(name, []).extend(r for r in runs if r["seed"] not in have)
    merged["command"] = " && ".join(merged["commands"])
    return merged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["foursquare-nyc", "amazon-beauty"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--forms", nargs="+", default=["weighted_ce", "unlikelihood", "exclusive"])
    p.add_argument("--weights", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    p.add_argument("--topks", nargs="+", type=int, default=[1, 10])
    p.add_argument("--warmups", nargs="+", type=int, default=[0])
    p.add_argument("--no-sweep", action="store_true", help="use --med instead of sweeping")
    p.add_argument("--med", default="weighted_ce:1.0:10", help="FORM:λ:TOPK for HAIL rows when not sweeping")
    p.add_argument("--sweep-epochs", type=int, default=None, help="epochs per sweep point (default --epochs)")
    p.add_argument("--repeat-mix", action="store_true", help="also report each model mixed with the user's "
                   "item frequencies (α chosen on validation)")
    p.add_argument("--out", default="bench/results/offline_accuracy.json")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine earlier runs' JSON files into --out")
    args = p.parse_args()
    if args.merge:
        results = merge(args.merge)
        out = Path(args.out)
        out.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(f"Commands: `{results['command']}`\nMachine: {results['machine']}\n"
                                          f"Date: {results['date']}\n{markdown(results)}\n")
        print(markdown(results))
        return
    torch.set_num_threads(args.threads)

    results: dict[str, Any] = {
        "command": "python " + " ".join(__import__("sys").argv),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "seeds": args.seeds,
        "epochs": args.epochs,
        "datasets": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets:
        events = load_dataset(ds)
        split = leave_last_out(events)
        tc = TrainConfig(epochs=args.epochs, patience=args.patience, threads=args.threads, progress=False)
        res: dict[str, Any] = {"baselines": baseline_metrics(split, events, "test"), "models": {}, "epochs": args.epochs}
        print(f"{ds}: baselines " + ", ".join(f"{k} {v['ndcg@10']:.4f}" for k, v in res["baselines"].items()), flush=True)
        form, lam, topk = args.med.split(":")
        best = {"med_form": form, "med_weight": float(lam), "med_topk": int(topk), "med_warmup_epochs": 0}
        if not args.no_sweep:
            stc = TrainConfig(**{**asdict(tc), "epochs": args.sweep_epochs or args.epochs})
            res["sweep"] = sweep(split, stc, args.forms, args.weights, args.topks, args.warmups)
            top = max(res["sweep"], key=lambda r: r["valid"]["ndcg@10"])["config"]
            best = {k: top[k] for k in best}
        res["chosen"] = best
        # seed-major: an interrupted run still has every row for the first seeds
        for seed in args.seeds:
            for name, spec in model_rows(best).items():
                spec = dict(spec)
                model, peers = spec.pop("model"), spec.pop("peers", 2)
                cfg = preset(model, peers=peers, seed=seed, **spec)
                r = run_one(split, name, cfg, TrainConfig(**{**asdict(tc), "seed": seed}), args.repeat_mix)
                res["models"].setdefault(name, []).append(r)
                mix = f", +repeat {r['repeat_test']['ndcg@10']:.4f} (α {r['repeat_alpha']:g})" if args.repeat_mix else ""
                print(f"  {name} seed {seed}: test ndcg@10 {r['test']['ndcg@10']:.4f}{mix} "
                      f"({r['seconds_per_epoch']:.1f} s/epoch, best epoch {r['best_epoch']})", flush=True)
                results["datasets"][ds] = res
                out.write_text(json.dumps(results, indent=1))
        results["datasets"][ds] = res
        out.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(
            f"Command: `{results['command']}`\nMachine: {results['machine']}\nDate: {results['date']}\n{markdown(results)}\n")
    md = markdown(results)
    out.with_suffix(".md").write_text(
        f"Command: `{results['command']}`\nMachine: {results['machine']}\nDate: {results['date']}\n{md}\n")
    print(md)


if __name__ == "__main__":
    main()
