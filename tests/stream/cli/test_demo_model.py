"""stream/cli/demo.py's starting model: the small HAIL with the history-aware output, cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.checkpoint import load_checkpoint
from models.data import Interactions
from stream.cli.demo import demo_model
from stream.settings import Settings


def _revisits(n: int = 600, users: int = 20, items: int = 30, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    # Each user mostly revisits a few places of their own: the data the history output is for.
    i = (u * 3 + rng.integers(0, 4, n)) % items
    return Interactions("toy", np.array([f"u{x}" for x in u], dtype=object),
                        np.array([f"p{x}" for x in i], dtype=object), np.arange(n, dtype=np.float64), None, None)


def test_the_demo_model_has_the_history_output_and_is_reused(tmp_path: Path) -> None:
    settings = Settings(model_dir=str(tmp_path / "models"))
    said: list[str] = []
    path = demo_model(settings, "toy", _revisits(), 1, said.append, progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt.config.history == "copy" and len(ckpt.model.copy_heads) == ckpt.config.n_peers == 2
    assert ckpt.meta["dataset"] == "toy" and "history output" in said[0]
    # The cached file is found again, not retrained (its name says what it holds).
    assert demo_model(settings, "toy", _revisits(), 1, said.append, progress=False) == path
    assert said[-1] == f"model: reusing {path}" and "copy" in path.name
