"""The lifecycle state machine: triggers, growth for new items, the validation gate, the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import stream.trainer.learner as learner_mod
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.errors import StreamError
from stream.settings import Settings, TrainerSettings
from stream.trainer.learner import Learner, gate_scores
from stream.trainer.model_store import ModelStore
from stream.trainer.process import open_learner
from stream.worker.recommender import OnlineRecommender
from tests.fakes import scrambling_fine_tune

OLD = [f"i{n}" for n in range(30)]


def _model(vocab: ItemVocab) -> HAIL:
    return HAIL(HailConfig(n_peers=2, hidden=16, layers=1, max_len=8, dropout=0.0), vocab.rows)


def _config(**kw: object) -> TrainerSettings:
    base: dict[str, object] = dict(window=2000, holdout=100, gate_min_events=100, every_events=1500, min_new_events=100, steps=100,
                                   lr=1e-2, batch_size=64)
    base.update(kw)
    return TrainerSettings(**base)  # type: ignore[arg-type]


class Stream:
    """20 users; after an old item ``i<k>`` (k < 5) always comes the new item ``new<k>``."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.last: dict[str, str] = {}
        self.n = 0

    def feed(self, learner: Learner, n: int) -> None:
        for _ in range(n):
            user = f"u{self.n % 20}"
            prev = self.last.get(user, "")
            item = "new" + prev[1:] if prev.startswith("i") else f"i{self.rng.integers(0, 5)}"
            self.last[user] = item
            learner.learn_one(user, item)
            self.n += 1


def test_new_items_are_predicted_after_the_next_fine_tune_and_old_rows_are_kept() -> None:
    vocab = ItemVocab(OLD)
    model = _model(vocab)
    before = [p.item_emb.weight.detach().clone() for p in model.networks]
    learner = Learner(model, vocab, "v1", 1, _config())
    stream = Stream()
    stream.feed(learner, 1499)
    assert learner.due() is None
    stream.feed(learner, 1)
    assert learner.due() == "events"
    # Before: the live model cannot name the new items.
    rec = OnlineRecommender(learner.live.model, learner.live.vocab, learner.live.version)
    assert not any(i.startswith("new") for i in rec.recommend_batch([["i3"]], 10)[0][0])

    job = learner.prepare("events")
    assert job.new_rows == 5 and job.recycled_rows == 0
    cand_before_tuning = learner_mod.candidate_from(job.base.model, job.base.vocab, job.vocab)
    for peer, old in zip(cand_before_tuning.networks, before, strict=True):
        assert torch.equal(peer.item_emb.weight[: len(OLD) + 1], old)  # growth keeps old rows bit-identical
    assert job.progress.phase == "queued" and job.progress.to_dict()["eta_s"] is None
    out = learner.finish(learner.run(job))
    # the progress the trainer's stats show while it runs: every step counted, then the gate
    assert (job.progress.phase, job.progress.step, job.progress.steps) == ("gating", _config().steps, _config().steps)

    assert out.outcome == "promoted" and out.version == "v2" and learner.live.version == "v2"
    assert out.new_rows == 5 and len(learner.live.vocab) == 35
    assert out.candidate["ndcg@10"] > out.live["ndcg@10"]
    rec = OnlineRecommender(learner.live.model, learner.live.vocab, learner.live.version)
    top = [items[0] for items, _ in rec.recommend_batch([["i3"], ["new1", "i0"], ["i4"]], 3)]
    assert top == ["new3", "new0", "new4"]
    for peer, old in zip(model.networks, before, strict=True):  # the old live model was never touched
        assert torch.equal(peer.item_emb.weight, old)


def test_a_worse_candidate_is_rejected_and_the_live_version_stays(tmp_path: Path, monkeypatch) -> None:
    vocab = ItemVocab(OLD)
    store = ModelStore(tmp_path)
    store.add(_model(vocab), vocab, status="promoted")
    learner = Learner(_model(vocab), vocab, "v1", 1, _config(), store=store)
    stream = Stream()
    stream.feed(learner, 1500)
    assert learner.step().outcome == "promoted"  # a good v2 first
    live = learner.live

    monkeypatch.setattr(learner_mod, "fine_tune", scrambling_fine_tune)
    stream.feed(learner, 1500)
    out = learner.step()
    assert out is not None and out.outcome == "rejected"
    assert out.candidate["ndcg@10"] < out.live["ndcg@10"]
    assert learner.live is live and learner.live.version == "v2"
    assert learner.outcomes == {"promoted": 1, "rejected": 1, "failed": 0}
    assert [(v.version, v.status) for v in store.list()] == [(1, "promoted"), (2, "promoted"), (3, "rejected")]
    assert store.get(3).checkpoint is None and store.latest_promoted().version == 2


def test_tolerance_lets_a_slightly_worse_candidate_through(monkeypatch) -> None:
    vocab = ItemVocab(OLD)
    learner = Learner(_model(vocab), vocab, "v1", 1, _config(tolerance=1.0))
    monkeypatch.setattr(learner_mod, "fine_tune", lambda m, *a, **k: {"steps": 0.0, "loss": 1.0, "first_loss": 1.0,
                                                                        "last_loss": 1.0, "seconds": 0.0})
    Stream().feed(learner, 1500)
    assert learner.step().outcome == "promoted"


def test_diverged_fine_tune_fails_without_changing_anything(monkeypatch) -> None:
    vocab = ItemVocab(OLD)
    learner = Learner(_model(vocab), vocab, "v1", 1, _config())
    nan = float("nan")
    monkeypatch.setattr(learner_mod, "fine_tune", lambda m, *a, **k: {"steps": 1.0, "loss": nan, "first_loss": nan,
                                                                        "last_loss": nan, "seconds": 0.0})
    Stream().feed(learner, 1500)
    out = learner.step()
    assert out.outcome == "failed" and "diverged" in (out.error or "")
    assert learner.live.version == "v1"


def test_triggers() -> None:
    clock = [0.0]
    vocab = ItemVocab(OLD)
    learner = Learner(_model(vocab), vocab, "v1", 1,
                      _config(every_events=None, every_seconds=60.0, min_new_events=200), now=lambda: clock[0])
    stream = Stream()
    stream.feed(learner, 150)
    learner.request("drift")
    assert learner.due() is None  # too few new events to learn a new regime from
    stream.feed(learner, 199)
    clock[0] = 61.0
    assert learner.due() is None  # 199 < 2 x holdout events since the signal: the schedule waits too
    stream.feed(learner, 1)
    assert learner.due() == "drift"
    clock[0] = 0.0
    learner.prepare("drift")
    assert learner.due() is None and learner.pending_request is None
    stream.feed(learner, 300)
    assert learner.due() is None
    clock[0] = 61.0
    assert learner.due() == "schedule"
    # warm (re-read) events do not count
    learner.prepare("schedule")
    for n in range(500):
        learner.learn_one("w", OLD[n % 30], count=False)
    clock[0] = 200.0
    assert learner.due() is None
    no_drift = Learner(_model(vocab), vocab, "v1", 1, _config(on_drift=False))
    no_drift.request("drift")
    assert no_drift.pending_request is None


def test_operator_requests_do_not_wait_for_drift_events() -> None:
    vocab = ItemVocab(OLD)
    learner = Learner(_model(vocab), vocab, "v1", 1, _config(every_events=None, min_new_events=100, drift_wait=30))
    Stream().feed(learner, 110)
    learner.request("manual")
    assert learner.due() == "manual"
    learner.prepare("manual")
    Stream().feed(learner, 120)
    learner.request("drift")
    Stream().feed(learner, 29)
    assert learner.due() is None
    Stream().feed(learner, 1)
    assert learner.due() == "drift"


def test_config_is_validated() -> None:
    with pytest.raises(StreamError, match="drift_wait"):
        TrainerSettings(drift_wait=-1)
    assert TrainerSettings(holdout=300).drift_events == 600 and TrainerSettings(drift_wait=0).drift_events == 0
    with pytest.raises(StreamError):
        TrainerSettings(window=100, holdout=100)
    with pytest.raises(StreamError):
        TrainerSettings(every_events=0)
    with pytest.raises(StreamError):
        TrainerSettings(gate_metric="auc")


def test_gate_scores_counts_unknown_histories_as_misses() -> None:
    vocab = ItemVocab(["a", "b"])
    s = gate_scores(_model(vocab), vocab, [(["zz"], "a"), ([], "b")])
    assert s["hr@10"] == 0.0 and s["n"] == 2


def test_open_learner_imports_then_resumes_from_the_store(tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint

    vocab = ItemVocab(OLD)
    initial = save_checkpoint(tmp_path / "initial.safetensors", _model(vocab), vocab, {"version": "1"})
    settings = Settings.from_env({}, model_dir=tmp_path / "store")
    with pytest.raises(StreamError, match="no promoted model"):
        open_learner(settings, _config())
    learner = open_learner(settings, _config(), initial)
    assert learner.live.version == "v1" and learner.store is not None
    Stream().feed(learner, 1500)
    assert learner.step().outcome == "promoted"
    resumed = open_learner(settings, _config(), initial)  # restart: the checkpoint flag is not re-imported
    assert resumed.live.version == "v2" and len(resumed.live.vocab) == 35
    assert [v.version for v in ModelStore(tmp_path / "store").list()] == [1, 2]
