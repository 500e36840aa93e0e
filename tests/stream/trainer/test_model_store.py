"""The model store: versions, promotion order, rollback, and crash safety (a writer killed mid-write
never leaves a loadable corrupt version)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from models.errors import CheckpointError
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.cli.model_admin import models_command
from stream.settings import Settings
from stream.trainer.model_store import ModelStore, ModelStoreError

ROOT = Path(__file__).resolve().parents[3]


def _model(rows: int = 5, seed: int = 0) -> HAIL:
    return HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4, seed=seed), rows)


def _vocab() -> ItemVocab:
    return ItemVocab(["a", "b", "c", "d"])


def test_versions_promotion_order_and_rollback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    assert store.list() == [] and store.latest_promoted() is None and store.load_latest() is None
    v1 = store.add(_model(), _vocab(), status="promoted")
    v2 = store.add(_model(seed=1), _vocab(), status="promoted", parent=1, metrics={"candidate": {"ndcg@10": 0.2}})
    v3 = store.add(None, None, status="rejected", parent=2, metrics={"candidate": {"ndcg@10": 0.0}})
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    assert store.latest_promoted().version == 2
    assert v3.checkpoint is None
    with pytest.raises(ModelStoreError, match="no weights"):
        store.promote(3)
    # The checkpoint carries its version label: what a worker publishes as model_version.
    assert store.load(2).meta["version"] == "v2"
    # rollback: v2 withdrawn, v1 live again; promote v2 again: live again
    assert store.rollback().version == 1
    assert store.get(2).status == "rolled_back"
    with pytest.raises(ModelStoreError, match="only promoted version"):
        store.rollback()
    store.promote(2)
    assert store.latest_promoted().version == 2
    # Promoting an older version makes it live; rollback then returns to the previous live one.
    store.promote(1)
    assert store.latest_promoted().version == 1
    assert store.rollback().version == 2


def test_manifest_is_json_with_the_declared_fields(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    info = store.add(_model(), _vocab(), status="candidate", parent=None, metrics={"x": 1}, trigger="drift")
    d = json.loads((tmp_path / "v1.json").read_text())
    assert d["format"] == "hailstream-model-manifest/1"
    assert {d["version"], d["status"], d["trigger"], d["checkpoint"]} == {1, "candidate", "drift", "v1.safetensors"}
    assert d["sha256"] == info.sha256 and d["created_at"] > 0 and d["metrics"] == {"x": 1}


def test_damaged_or_replaced_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.add(_model(), _vocab(), status="promoted")
    store.add(_model(seed=1), _vocab(), status="promoted")
    path = store.checkpoint_path(2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn copy
    with pytest.raises(CheckpointError):
        store.load(2)
    info, ckpt = store.load_latest()
    assert info.version == 1 and ckpt.meta["version"] == "v1"
    # a valid checkpoint that is not the one the manifest names (here: v1's file) is refused too
    shutil.copy(store.checkpoint_path(1), path)
    with pytest.raises(CheckpointError, match="sha256 differs"):
        store.load(2)
    with pytest.raises(CheckpointError):
        store.promote(2)


def test_unreadable_manifest_is_skipped(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.add(_model(), _vocab(), status="promoted")
    (tmp_path / "v2.json").write_text("{half")
    assert [v.version for v in store.list()] == [1]
    assert store.add(_model(), _vocab()).version == 3  # never reuses a number on disk


def test_prune_keeps_the_live_and_recent_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for _ in range(4):
        store.add(_model(), _vocab(), status="promoted")
    store.add(_model(), _vocab(), status="candidate")
    assert store.prune(keep=2) == [1, 2]
    assert [v.checkpoint is not None for v in store.list()] == [False, False, True, True, True]
    assert not store.checkpoint_path(1).exists()


_HANGING_WRITER = textwrap.dedent("""
    import os, sys, time
    from models.hail import HAIL, HailConfig
    from models.vocab import ItemVocab
    from stream.trainer.model_store import ModelStore

    store = ModelStore(sys.argv[1])
    vocab = ItemVocab([f"i{n}" for n in range(20000)])
    model = HAIL(HailConfig(n_peers=2, hidden=32, layers=1, max_len=8), vocab.rows)

    def stuck(fd):  # the disk stalls with the new checkpoint's bytes in a temporary file
        open(os.path.join(sys.argv[1], "writing"), "w").close()
        time.sleep(600)

    os.fsync = stuck
    store.add(model, vocab, status="promoted", parent=1)
""")

_LOOPING_WRITER = textwrap.dedent("""
    import sys
    from models.hail import HAIL, HailConfig
    from models.vocab import ItemVocab
    from stream.trainer.model_store import ModelStore

    store = ModelStore(sys.argv[1])
    vocab = ItemVocab([f"i{n}" for n in range(30000)])
    for n in range(1000):
        model = HAIL(HailConfig(n_peers=2, hidden=32, layers=1, max_len=8, seed=n), vocab.rows)
        store.add(model, vocab, status="promoted")
        store.prune(keep=2)
        print(n, flush=True)
""")


def _child(script: str, directory: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, str(directory)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_writer_killed_mid_write_leaves_no_loadable_corrupt_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.add(_model(), _vocab(), status="promoted")
    proc = _child(_HANGING_WRITER, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "writing").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer never reached its checkpoint write"
            time.sleep(0.05)
    finally:
        _kill(proc)
    leftovers = list(tmp_path.glob(".v2.safetensors.*.tmp"))
    assert leftovers and leftovers[0].stat().st_size > 1_000_000  # killed with the bytes on disk
    assert [v.version for v in store.list()] == [1]
    info, ckpt = store.load_latest()
    assert info.version == 1 and ckpt.meta["version"] == "v1"
    # The next writer gets a fresh version; the leftover is never taken for a checkpoint.
    assert store.add(_model(seed=3), _vocab(), status="promoted").version == 2
    assert store.load_latest()[0].version == 2


def test_writer_killed_at_an_arbitrary_moment_keeps_the_store_consistent(tmp_path: Path) -> None:
    proc = _child(_LOOPING_WRITER, tmp_path)
    try:
        assert proc.stdout is not None
        for _ in range(3):  # a few versions written, then kill it wherever it is
            line = proc.stdout.readline()
            assert line, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.137)
    finally:
        _kill(proc)
    store = ModelStore(tmp_path)
    versions = store.list()
    assert len(versions) >= 3
    for info in versions:  # every version a manifest names either loads or has no weights
        if info.checkpoint is not None and store.checkpoint_path(info.version).exists():
            assert store.load(info.version).meta["version"] == info.label
    latest = store.load_latest()
    assert latest is not None and latest[0].version == max(v.version for v in versions if v.status == "promoted"
                                                           and v.checkpoint is not None)


def test_models_command(tmp_path: Path) -> None:
    settings = Settings.from_env({}, model_dir=tmp_path)
    assert models_command(settings, "list").startswith("no versions")
    store = ModelStore(tmp_path)
    store.add(_model(), _vocab(), status="promoted")
    store.add(_model(), _vocab(), status="promoted", parent=1,
              metrics={"candidate": {"ndcg@10": 0.25}, "live": {"ndcg@10": 0.2}})
    table = models_command(settings, "list")
    assert "0.2500/0.2000" in table and table.splitlines()[2].startswith("*")
    assert models_command(settings, "rollback", announce=False) == "rolled back: v1 is live"
    assert models_command(settings, "promote", 2, announce=False) == "v2 is live"
    with pytest.raises(ModelStoreError):
        models_command(settings, "promote", None, announce=False)
    # Loading a model built from a store checkpoint gives identical scores.
    seqs = torch.tensor([[0, 1, 2]])
    a = store.load(2).model.log_probs(seqs)
    assert torch.equal(a, store.load(2).model.log_probs(seqs))
