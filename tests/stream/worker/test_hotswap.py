"""Hot swap of announced versions and the store-aware start-up (no broker needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.messages import ModelAnnouncement, model_message, parse_control
from stream.observe.metrics import Metrics
from stream.trainer.model_store import ModelStore
from stream.worker.hotswap import HotSwapper, newer_in_store
from stream.worker.recommender import OnlineRecommender


def _model(rows: int, seed: int = 0) -> HAIL:
    return HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, seed=seed), rows)


def _announce(store: ModelStore, version: int) -> ModelAnnouncement:
    info = store.get(version)
    msg = parse_control(model_message(info.label, info.version, store.checkpoint_path(version), info.sha256))
    assert isinstance(msg, ModelAnnouncement)
    return msg


def _store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path)
    store.add(_model(4), ItemVocab("abc"), status="promoted")
    store.add(_model(5, seed=1), ItemVocab("abcd"), status="promoted", parent=1)
    store.add(_model(6, seed=2), ItemVocab("abcde"), status="promoted", parent=2)
    return store


def test_live_announcement_is_loaded_and_swapped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = OnlineRecommender(store.load(1).model, store.load(1).vocab, "v1")
    metrics = Metrics(process_collector=False)
    swapper = HotSwapper(rec, metrics)
    swapper.on_message(_announce(store, 2), live=True)
    assert rec.version == "v2" and len(rec.live.vocab) == 4
    assert "d" in rec.predict_one(["a"], k=4)  # the new item is servable
    assert metrics.value("hailstream_model_version") == 2.0 and metrics.value("hailstream_model_swaps_total") == 1.0
    assert metrics.value("hailstream_vocabulary_items") == 4.0
    # the same version again: nothing to do; a rollback (older version, live message): applied
    assert swapper.apply(_announce(store, 2)) is False
    swapper.on_message(_announce(store, 1), live=True)
    assert rec.version == "v1" and swapper.swaps == 2
    assert swapper.last_swap is not None and swapper.last_swap["previous"] == "v2"


def test_history_applies_only_the_newest_and_only_if_newer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = OnlineRecommender(store.load(2).model, store.load(2).vocab, "v2")
    swapper = HotSwapper(rec)
    for v in (1, 2, 3):
        swapper.on_message(_announce(store, v), live=False)
    assert rec.version == "v2"  # history is not replayed one by one
    swapper.on_caught_up()
    assert rec.version == "v3" and swapper.swaps == 1
    old = HotSwapper(OnlineRecommender(store.load(3).model, store.load(3).vocab, "v3"))
    old.on_message(_announce(store, 1), live=False)
    old.on_caught_up()
    assert old.recommender.version == "v3" and old.swaps == 0


def test_a_broken_announcement_keeps_the_served_version(tmp_path: Path) -> None:
    store = _store(tmp_path)
    rec = OnlineRecommender(store.load(1).model, store.load(1).vocab, "v1")
    swapper = HotSwapper(rec)
    msg = _announce(store, 2)
    path = Path(msg.checkpoint)
    data = path.read_bytes()
    path.write_bytes(data[:100])
    assert swapper.apply(msg) is False
    missing = dataclasses.replace(msg, checkpoint=str(tmp_path / "nope.safetensors"))
    assert swapper.apply(missing) is False
    wrong = dataclasses.replace(_announce(store, 3), sha256="0" * 64)
    assert swapper.apply(wrong) is False
    assert rec.version == "v1" and swapper.failures == 3
    # model messages with junk are not control messages at all
    assert parse_control(json.dumps({"type": "model", "version": 3}).encode()) is None


def test_newer_in_store(tmp_path: Path) -> None:
    assert newer_in_store(tmp_path / "missing", "1") is None
    store = _store(tmp_path)
    found = newer_in_store(tmp_path, "it-v1")
    assert found is not None and found[0].label == "v3" and found[1].meta["version"] == "v3"
    assert newer_in_store(tmp_path, "v3") is None
    # a damaged newest version: the previous promoted one, if still newer
    store.checkpoint_path(3).write_bytes(b"garbage")
    found = newer_in_store(tmp_path, "v1")
    assert found is not None and found[0].label == "v2"
    assert torch.equal(found[1].model.log_probs(torch.tensor([[1, 2]])),
                       store.load(2).model.log_probs(torch.tensor([[1, 2]])))
