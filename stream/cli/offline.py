"""``hailstream train`` and ``hailstream evaluate``: offline training and full-ranking evaluation.

Training writes ``<out>/model.safetensors`` (config + vocabulary + all peers), ``<out>/history.json``
(per-epoch loss and validation metrics) and ``<out>/metrics.json`` (validation and test metrics).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.baselines import default_baselines
from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import Interactions, load_dataset
from models.evaluate import ModelScorer, evaluate, format_table
from models.hail import HailConfig
from models.presets import preset
from models.splits import SequenceSplit, Stage, leave_last_out
from models.trainer import TrainConfig, train
from stream.errors import StreamError


def load_split(dataset: str, data_dir: str | Path | None, limit: int | None = None) -> tuple[Interactions, SequenceSplit]:
    """Load a data set (name or path) and split it leave-last-out; ``limit`` keeps the first N events."""
    events = load_dataset(dataset, data_dir)
    if limit:
        events = events.head(limit)
    return events, leave_last_out(events)


#: How ``hailstream train`` splits the events (recorded in the checkpoint).
SPLIT = "leave-last-out"


def data_source(dataset: str) -> str:
    """What a checkpoint records as its data set: a bundled name as is, a file as its absolute path."""
    return dataset if dataset in ("foursquare-nyc", "amazon-beauty") else str(Path(dataset).resolve())


def check_trainable(dataset: str, events: Interactions, split: SequenceSplit) -> None:
    """Refuse data too small to train and validate on (instead of a run that reports nan)."""
    if len(split.eval_users) == 0:
        raise StreamError(f"{dataset!r} is too small to train on: {len(events)} events and no user with at least "
                          "3 events (one for training, one for validation, one for test)")


def baseline_metrics(split: SequenceSplit, events: Interactions, stage: Stage = "test") -> dict[str, dict[str, float]]:
    """Full-ranking metrics of every baseline that applies to this data set (learned in time order)."""
    out = {}
    for name, b in default_baselines(split).items():
        b.fit(split, events=events)
        out[name] = evaluate(b, split, stage)
    return out


def train_command(
    dataset: str,
    out: Path,
    model: str = "hail",
    peers: int = 2,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a named model on ``dataset`` and write its checkpoint and metrics to ``out``."""
    events, split = load_split(dataset, data_dir, limit)
    check_trainable(dataset, events, split)
    config: HailConfig = preset(model, peers=peers, **(model_overrides or {}))
    tc = TrainConfig(**(train_overrides or {}))
    out.mkdir(parents=True, exist_ok=True)
    source = data_source(dataset)
    meta = {"dataset": source, "model": model, "limit": limit, "split": SPLIT}

    def save_best(m: Any, epoch: int, row: dict[str, float]) -> None:
        # the best model so far: an interrupted run leaves it
        save_checkpoint(out / "model.safetensors", m, split.vocab,
                        {**meta, "epoch": epoch, "valid_ndcg@10": row.get("valid_ndcg@10")})

    start = time.perf_counter()
    result = train(split, config, tc, on_best=save_best)
    seconds = time.perf_counter() - start
    scorer = ModelScorer(result.model)
    metrics = {
        "model": model,
        "dataset": dataset,
        "config": asdict(config),
        "train": asdict(tc),
        "best_epoch": result.best_epoch,
        "seconds_per_epoch": result.seconds_per_epoch,
        "train_seconds": seconds,
        "valid": evaluate(scorer, split, "valid"),
        "test": evaluate(scorer, split, "test"),
    }
    save_checkpoint(out / "model.safetensors", result.model, split.vocab,
                    {**meta, "epoch": result.best_epoch, "valid": metrics["valid"]})
    (out / "history.json").write_text(json.dumps(result.history, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def checkpoint_file(path: Path) -> Path:
    """A checkpoint given as its file or as the folder ``hailstream train --out`` wrote."""
    if path.is_dir():
        inner = path / "model.safetensors"
        if not inner.is_file():
            raise StreamError(f"{path} is a folder without model.safetensors: pass the checkpoint file or the "
                              "folder hailstream train --out wrote")
        return inner
    if not path.exists():
        raise StreamError(f"file not found: {path}")
    return path


def evaluate_command(
    checkpoint: Path,
    dataset: str | None = None,
    stage: Stage = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    with_baselines: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint (and optionally the baselines) on ``dataset``'s leave-last-out split.

    The split's items are mapped through the checkpoint's own vocabulary, so a checkpoint trained on
    the same data set gives the same indices; items it does not know cannot be ranked and count as misses.
    """
    checkpoint = checkpoint_file(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    if dataset is None:
        dataset = ckpt.meta.get("dataset")
        if not dataset:
            raise StreamError(f"{checkpoint} does not record its data set: pass --dataset")
        if limit is None:
            limit = ckpt.meta.get("limit")
    events, split = load_split(dataset, data_dir, limit)
    if split.vocab.to_list() != ckpt.vocab.to_list()[: len(split.vocab)]:
        raise StreamError(
            f"{checkpoint} was trained with another item vocabulary than {dataset!r}; evaluate it on the "
            "data set (and --limit) it was trained on"
        )
    rows = {f"{ckpt.meta.get('model', 'model')}": evaluate(ModelScorer(ckpt.model), split, stage)}
    if with_baselines:
        rows.update(baseline_metrics(split, events, stage))
    return rows


def print_table(rows: dict[str, dict[str, float]], as_json: bool) -> None:
    print(json.dumps(rows, indent=2) if as_json else format_table(rows))
