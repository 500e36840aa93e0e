"""Streaming (prequential) accuracy of static and incrementally fine-tuned models (issue 3).

For each data set, the first part is known before the stream starts (Foursquare NYC: block T0;
Amazon Beauty: the chronological first half): the models are pre-trained on it (offline trainer,
early stopping on a leave-last-out validation split of that part), and every online component has
seen it (user sequences, baselines' counts, the trainer's window). The rest (T1..T5 / the second
half) is then replayed in time order through the worker's own per-batch code
(:func:`stream.worker.batch.process_batch`: micro-batches, one forward pass each, prequential scoring of
each event against the top-10 published after the same user's previous event) and, for the
fine-tuned rows, the trainer's own :class:`stream.trainer.learner.Learner` (window + reservoir, bounded
vocabulary with growth for new items, fine-tune every N events, validation gate on the newest
held-out slice, promote or reject), whose promoted versions are swapped into the recommender.

This runs **in-process, without Kafka**: the prequential protocol and the classes are the ones the
deployed worker and trainer run, but a fine-tune here blocks the stream and its promotion is
served from the next micro-batch on (zero swap latency); in the deployed system the stream goes on
during a fine-tune and the swap lands seconds later (measured by ``bench/lifecycle_latency.py``).
The Kafka path itself is covered by ``tests/integration/test_lifecycle.py``.

Rows: popularity (last 1000 events), first-order Markov, user frequency (baselines learn every
event), static HAIL (no fine-tuning), fine-tuned single peer (one SASRec, CE), fine-tuned peers
with λ = 0 (2 SASRec, independent CE), fine-tuned HAIL (2 SASRec, MED). All neural rows share the
architecture and the fine-tuning budget. Events whose user has no earlier prediction in the replay
are cold: not scored (DESIGN §4).

    python bench/streaming_accuracy.py                       # both data sets, default budget
    python bench/streaming_accuracy.py --datasets foursquare-nyc --limit 5000   # a quick look

Writes ``bench/results/streaming_accuracy.json`` and ``.md`` (machine, command, date included).
Pre-trained models are cached in ``--cache-dir`` (keyed by data set and settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import Interactions, load_dataset
from models.hail import HAIL
from models.presets import preset
from models.splits import leave_last_out
from models.trainer import TrainConfig, train
from models.vocab import ItemVocab
from stream.cli.demo import split_stream
from stream.settings import Settings, TrainerSettings
from stream.snapshots import MODEL_SCORER
from stream.trainer.learner import Learner
from stream.worker.batch import Source, new_prequential, process_batch
from stream.worker.prequential import Prequential
from stream.worker.recommender import OnlineBaselines, OnlineRecommender

from _common import ROOT, run_header, write_results  # isort: skip - bench/ is on the path
DATASETS = ("foursquare-nyc", "amazon-beauty")
#: name -> (preset, fine-tuned?)
VARIANTS = {
    "static HAIL": ("hail", False),
    "fine-tuned single peer": ("sasrec", True),
    "fine-tuned peers λ=0": ("ensemble", True),
    "fine-tuned HAIL": ("hail", True),
}
BASELINES = ("popularity", "markov", "user-frequency")
METRICS = ("hr@10", "ndcg@10", "mrr@10")


def architecture(args: argparse.Namespace) -> dict[str, Any]:
    return {"hidden": args.hidden, "layers": args.layers, "max_len": args.max_len, "dropout": 0.2,
            "seed": args.seed}


def trainer_config(args: argparse.Namespace, dataset: str) -> TrainerSettings:
    every = args.every_events or (10_000 if dataset == "foursquare-nyc" else 20_000)
    return TrainerSettings(window=args.window, holdout=args.holdout, reservoir=args.reservoir, every_events=every,
                         min_new_events=min(every, 1000), steps=args.steps, lr=args.lr, batch_size=args.ft_batch,
                         seed=args.seed, item_capacity=None)


def pretrain(name: str, dataset: str, part: Interactions, args: argparse.Namespace) -> tuple[HAIL, ItemVocab, dict]:
    """Pre-train (or load from the cache) the ``name`` preset on the known part of the data."""
    config = preset(name, **architecture(args))
    tc = TrainConfig(epochs=args.epochs, patience=2, seed=args.seed, progress=False,
                     max_train_windows=args.max_train_windows)
    key = hashlib.sha256(json.dumps([dataset, len(part), dataclasses.asdict(config), dataclasses.asdict(tc)],
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = Path(args.cache_dir) / f"{dataset}-{name}-{key}.safetensors"
    if path.exists():
        ckpt = load_checkpoint(path)
        return ckpt.model, ckpt.vocab, ckpt.meta
    split = leave_last_out(part)
    t0 = time.perf_counter()
    result = train(split, config, tc)
    meta = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "train_seconds": time.perf_counter() - t0, "valid": result.history[result.best_epoch - 1]}
    save_checkpoint(path, result.model, split.vocab, meta)
    return result.model.eval(), split.vocab, meta


def _raw(user: str, item: str, ts: float) -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "ts": ts}).encode()


def _batches(events: Interactions, size: int) -> Iterator[list[tuple[str, str, float]]]:
    users, items, ts = events.users.tolist(), events.items.tolist(), events.ts.tolist()
    for start in range(0, len(users), size):
        yield list(zip(users[start : start + size], items[start : start + size], ts[start : start + size], strict=True))


def replay(
    known: Interactions,
    stream: Interactions,
    model: HAIL,
    vocab: ItemVocab,
    args: argparse.Namespace,
    learner_config: TrainerSettings | None,
    with_baselines: bool,
) -> dict[str, Any]:
    """Replay ``stream`` through process_batch (and the Learner when ``learner_config``) after
    every component has seen ``known``; returns prequential summaries and lifecycle counts."""
    settings = Settings(top_k=10, max_seq_len=model.config.max_len, batch_size=args.batch)
    # Baselines: all three when compared, else popularity only as the cold-start fallback (as a
    # deployed worker has), predicting for no user (sample_every huge).
    online = (OnlineBaselines(1000) if with_baselines
              else OnlineBaselines(1000, names=("popularity",), sample_every=2**62))
    recommender = OnlineRecommender(model, vocab, "v1", fallback=online.popular)
    preq: dict[str, Prequential] = new_prequential(10, online, window=1000)
    states: dict[str, dict[str, Any]] = {}
    max_len = model.config.max_len
    for user, item in zip(known.users.tolist(), known.items.tolist(), strict=True):
        online.learn_one(user, item)
        st = states.setdefault(user, {"items": [], "pred": None, "off": None})
        st["items"].append(item)
        if len(st["items"]) > max_len:
            del st["items"][0]
    learner = None
    if learner_config is not None:
        learner = Learner(model, vocab, "v1", 1, learner_config)
        tail = max(0, len(known) - learner_config.window)
        for user, item, ts in zip(known.users[tail:].tolist(), known.items[tail:].tolist(),
                                  known.ts[tail:].tolist(), strict=True):
            learner.learn_one(user, item, ts, count=False)
    offset = 0
    t0 = time.perf_counter()
    ft_seconds = 0.0
    versions = []
    for batch in _batches(stream, args.batch):
        sources = []
        for user, item, ts in batch:
            sources.append(Source(_raw(user, item, ts), "replay", 0, offset))
            offset += 1
        result = process_batch(sources, states.get, recommender, online, preq, settings)
        for user, upd in result.updates.items():
            states[user] = upd.value
        if learner is not None:
            for user, item, ts in batch:
                learner.learn_one(user, item, ts)
            started = time.perf_counter()
            out = learner.step()
            if out is not None:
                ft_seconds += time.perf_counter() - started
                if out.outcome == "promoted" and out.model is not None and out.vocab is not None:
                    recommender.swap(out.model, out.vocab, out.version or "?")
                    versions.append(out.version)
    wall = time.perf_counter() - t0
    names = (MODEL_SCORER, *BASELINES) if with_baselines else (MODEL_SCORER,)
    res: dict[str, Any] = {"prequential": {n: preq[n].summary() for n in names}, "wall_seconds": wall,
                           "events": len(stream)}
    if learner is not None:
        hist = learner.history
        res["lifecycle"] = {
            "fine_tunes": learner.fine_tunes, "promotions": learner.outcomes["promoted"],
            "rejections": learner.outcomes["rejected"], "failures": learner.outcomes["failed"],
            "mean_fine_tune_seconds": float(np.mean([h["seconds"] for h in hist])) if hist else None,
            "fine_tune_wall_seconds": ft_seconds, "versions": versions,
            "vocabulary_items": len(learner.capacity.vocab), "new_items": learner.capacity.grown,
            "gate": [{"outcome": h["outcome"], "candidate_ndcg@10": h["candidate"].get("ndcg@10"),
                      "live_ndcg@10": h["live"].get("ndcg@10")} for h in hist],
        }
    return res


def run_dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    events = load_dataset(dataset, args.data_dir)
    known, rows = split_stream(events)
    if args.limit:
        rows = rows[: args.limit]
    stream = events.take(rows)
    out: dict[str, Any] = {"known_events": len(known), "stream_events": len(stream), "rows": {}, "pretrain": {}}
    models: dict[str, tuple[HAIL, ItemVocab, dict]] = {}
    for variant, (name, tuned) in VARIANTS.items():
        if name not in models:
            t0 = time.perf_counter()
            models[name] = pretrain(name, dataset, known, args)
            out["pretrain"][name] = {**models[name][2], "load_or_train_seconds": time.perf_counter() - t0}
            print(f"[{dataset}] pre-trained {name}: {out['pretrain'][name]}", flush=True)
        model, vocab, _ = models[name]
        # Each row starts from the same pre-trained weights (the learner never trains them in place).
        res = replay(known, stream, model, vocab, args, trainer_config(args, dataset) if tuned else None,
                     with_baselines=variant == "static HAIL")
        preq = res.pop("prequential")
        out["rows"][variant] = {**preq[MODEL_SCORER], **res}
        for b in BASELINES:
            if b in preq:
                out["rows"][b] = preq[b]
        print(f"[{dataset}] {variant}: " + ", ".join(f"{m} {preq[MODEL_SCORER][m]:.4f}" for m in METRICS)
              + f" ({res['wall_seconds']:.0f} s)" + (f" {res['lifecycle']}" if "lifecycle" in res else ""), flush=True)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Streaming (prequential) accuracy", "",
             f"{results['date']} · {results['machine']} · `{results['command']}` · {results['wall_seconds']:.0f} s", "",
             "In-process replay through the worker's `process_batch` and the trainer's `Learner` (no Kafka; a "
             "promotion is served from the next micro-batch). Prequential metrics over every non-cold event of "
             "the replay, k = 10.", ""]
    lines += [f"- Note: {n}" for n in results.get("notes", [])] + ([""] if results.get("notes") else [])
    order = [*BASELINES, *VARIANTS]
    for dataset, d in results["datasets"].items():
        lines += [f"## {dataset}", "",
                  f"known part {d['known_events']:,} events, replayed {d['stream_events']:,} events", "",
                  "| row | HR@10 | NDCG@10 | MRR@10 | scored | fine-tunes | promoted | rejected | mean fine-tune s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in order:
            r = d["rows"].get(row)
            if r is None:
                continue
            lc = r.get("lifecycle")
            life = (f"{lc['fine_tunes']} | {lc['promotions']} | {lc['rejections']} | "
                    f"{lc['mean_fine_tune_seconds'] or 0:.1f}") if lc else "- | - | - | -"
            lines.append(f"| {row} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | {r['n']:,} | {life} |")
        static, tuned = d["rows"].get("static HAIL"), d["rows"].get("fine-tuned HAIL")
        if static and tuned and static["ndcg@10"] > 0:
            gain = tuned["ndcg@10"] / static["ndcg@10"] - 1
            best_base = max((d["rows"][b]["ndcg@10"], b) for b in BASELINES if b in d["rows"])
            lines += ["", f"fine-tuned HAIL vs static HAIL: {gain:+.1%} NDCG@10 (goal >= +10%); best baseline "
                          f"{best_base[1]} {best_base[0]:.4f} vs fine-tuned HAIL {tuned['ndcg@10']:.4f}"]
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(results["settings"], indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None, help="replay only the first N stream events")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5, help="pre-training epochs (early stopping, patience 2)")
    ap.add_argument("--max-train-windows", type=int, default=3000,
                    help="pre-training windows (a seeded subset; Foursquare T0 has ~2.8k at max_len 20)")
    ap.add_argument("--batch", type=int, default=256, help="worker micro-batch (events)")
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--holdout", type=int, default=500)
    ap.add_argument("--reservoir", type=int, default=1000)
    ap.add_argument("--every-events", type=int, default=None, help="default 10000 (Foursquare), 20000 (Beauty)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--ft-batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "hailstream" / "bench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "streaming_accuracy.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        **run_header(argv, machine_extra=f"{args.threads} torch threads"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "cache_dir", "data_dir")},
        "datasets": {},
    }
    for dataset in args.datasets:
        results["datasets"][dataset] = run_dataset(dataset, args)
    results["wall_seconds"] = time.perf_counter() - started
    write_results(args.out, results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
