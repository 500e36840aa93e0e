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
    _, split = load_split(dataset, data_dir, limit)
    config: HailConfig = preset(model, peers=peers, **(model_overrides or {}))
    tc = TrainConfig(**(train_overrides or {}))
    start = time.perf_counter()
    result = train(split, config, tc)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
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
                    {"dataset": dataset, "model": model, "valid": metrics["valid"]})
    (out / "history.json").write_text(json.dumps(result.history, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_command(
    checkpoint: Path,
    dataset: str,
    stage: Stage = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    with_baselines: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint (and optionally the baselines) on ``dataset``'s leave-last-out split.

    The split's items are mapped through the checkpoint's own vocabulary, so a checkpoint trained on
    the same data set gives the same indices; items it does not know cannot be ranked and count as misses.
    """
    ckpt = load_checkpoint(checkpoint)
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
