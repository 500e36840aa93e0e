"""Item 3: a worker serves only versions of its own model store, and with a key only signed ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.messages import ModelAnnouncement, model_message, parse_control
from stream.observe.metrics import Metrics
from stream.settings import Settings
from stream.trainer.model_store import ModelStore
from stream.worker.hotswap import HotSwapper
from stream.worker.recommender import OnlineRecommender

pytestmark = pytest.mark.reliability
KEY = b"k" * 32


def _store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    vocab = ItemVocab(["a", "b", "c"])
    for seed in (0, 1):
        store.add(HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, seed=seed), vocab.rows), vocab,
                  status="promoted")
    return store


def _swapper(store: ModelStore, key: bytes | None) -> tuple[HotSwapper, Metrics]:
    ckpt = store.load(1)
    metrics = Metrics(process_collector=False)
    return HotSwapper(OnlineRecommender(ckpt.model, ckpt.vocab, "v1"), metrics, model_dir=store.directory,
                      key=key), metrics


def _announce(path: Path, sha: str | None, key: bytes | None, version: str = "v2") -> ModelAnnouncement:
    msg = parse_control(model_message(version, int(version[1:]), path, sha, key=key))
    assert isinstance(msg, ModelAnnouncement)
    return msg


def test_a_checkpoint_outside_the_store_is_refused_and_counted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    outside = tmp_path / "elsewhere" / "v999.safetensors"
    outside.parent.mkdir()
    shutil.copy(store.checkpoint_path(2), outside)
    swapper, metrics = _swapper(store, None)
    assert not swapper.apply(_announce(outside, None, None, "v999"))
    sneaky = store.directory / ".." / "elsewhere" / "v999.safetensors"  # a path that only looks inside
    assert not swapper.apply(_announce(sneaky, None, None, "v999"))
    assert swapper.recommender.version == "v1" and swapper.refusals["outside_store"] == 2
    assert metrics.value("hailstream_model_refusals_total", reason="outside_store") == 2
    assert swapper.apply(_announce(store.checkpoint_path(2), store.get(2).sha256, None))  # the store's own: served


def test_with_a_key_only_signed_announcements_swap(tmp_path: Path) -> None:
    store = _store(tmp_path)
    path, sha = store.checkpoint_path(2), store.get(2).sha256
    swapper, metrics = _swapper(store, KEY)
    assert not swapper.apply(_announce(path, sha, None))  # a topic writer without the key
    assert not swapper.apply(_announce(path, sha, b"another key"))
    assert swapper.recommender.version == "v1"
    assert metrics.value("hailstream_model_refusals_total", reason="unsigned") == 1
    assert metrics.value("hailstream_model_refusals_total", reason="bad_signature") == 1
    assert swapper.apply(_announce(path, sha, KEY)) and swapper.recommender.version == "v2"


def test_the_key_comes_from_a_setting_or_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_bytes(KEY + b"\n")
    assert Settings(model_updates_key_file=secret).signing_key() == KEY
    s = Settings(model_updates_key="abc")
    assert s.signing_key() == b"abc" and s.redacted()["model_updates_key"] == "***" and "abc" in s.secrets()
    assert Settings().signing_key() is None
