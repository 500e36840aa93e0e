"""Checkpoints: exact round trip, atomic writes, and refusal of anything we did not write."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from models import checkpoint as ck
from models.checkpoint import FORMAT, checkpoint_bytes, inspect_checkpoint, load_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab

SEQS = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 1, 1, 2], [0, 0, 0, 0, 6]])


def tiny_model(n_rows: int = 7, **overrides: object) -> HAIL:
    cfg = dict(n_peers=2, encoders=("sasrec", "gru4rec"), hidden=8, layers=1, max_len=5, dropout=0.1, seed=3)
    cfg.update(overrides)
    return HAIL(HailConfig(**cfg), n_rows)  # type: ignore[arg-type]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, HAIL]:
    model = tiny_model()
    with torch.no_grad():  # move away from the seeded init, so a fresh HAIL cannot pass by accident
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    path = save_checkpoint(tmp_path / "models" / "v1.safetensors", model, ItemVocab("abcdef"), {"version": 1})
    return path, model


def test_round_trip_gives_identical_predictions(saved: tuple[Path, HAIL]) -> None:
    path, model = saved
    ckpt = load_checkpoint(path)
    assert not ckpt.model.training
    assert ckpt.config == model.config and ckpt.model.n_rows == 7
    assert ckpt.vocab.to_list() == list("abcdef") and ckpt.meta == {"version": 1}
    assert len(ckpt.sha256) == 64 and ckpt.path == path
    model.eval()
    for peer in (None, 0, 1):
        assert torch.equal(model.log_probs(SEQS, peer=peer), ckpt.model.log_probs(SEQS, peer=peer))


def test_grown_model_round_trips(tmp_path: Path) -> None:
    model = tiny_model(n_rows=4)
    model.grow(9)  # capacity beyond the vocabulary is allowed
    path = save_checkpoint(tmp_path / "g.safetensors", model, ItemVocab("abc"), {})
    ckpt = load_checkpoint(path)
    assert ckpt.model.n_rows == 9 and len(ckpt.vocab) == 3
    assert torch.equal(model.eval().log_probs(SEQS.clamp(max=8)), ckpt.model.log_probs(SEQS.clamp(max=8)))


def test_inspect_reads_metadata_without_model(saved: tuple[Path, HAIL]) -> None:
    path, model = saved
    info = inspect_checkpoint(path)
    assert info["format"] == FORMAT and info["n_rows"] == 7 and info["n_items"] == 6
    assert HailConfig.from_dict(info["config"]) == model.config
    assert info["meta"] == {"version": 1} and info["bytes"] == path.stat().st_size
    assert info["sha256"] == load_checkpoint(path).sha256


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tiny_model(), ItemVocab("ab"), {"v": 1})
    before = path.read_bytes()
    save_checkpoint(path, tiny_model(seed=9), ItemVocab("ab"), {"v": 2})  # overwrite works
    assert load_checkpoint(path).meta == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    good = path.read_bytes()
    monkeypatch.setattr(ck.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tiny_model(seed=11), ItemVocab("ab"), {"v": 3})
    assert path.read_bytes() == good != before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_refuses_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "x", tiny_model(), ItemVocab("ab"), {"when": object()})
    with pytest.raises(CheckpointError, match="grow"):
        save_checkpoint(tmp_path / "x", tiny_model(n_rows=3), ItemVocab("abcd"), {})
    with pytest.raises(CheckpointError, match="config"):
        save_checkpoint(tmp_path / "x", torch.nn.Linear(2, 2), ItemVocab("a"), {})  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


class Payload:
    """Unpickling this creates a directory: the side effect a code-executing loader would cause."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle2", "pickle5"])
def test_pickle_payload_is_refused_without_running_it(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    payload = {"state": Payload(marker), "weights": torch.zeros(2)}
    if how == "torch.save":
        torch.save(payload, path)
    elif how == "torch.save-legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    with pytest.raises(CheckpointError, match=r"pickle|not a safetensors|truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        inspect_checkpoint(path)
    assert not marker.exists()


def test_torch_save_message_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(tiny_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="save_checkpoint"):
        load_checkpoint(path)


def test_truncated_files_are_refused(saved: tuple[Path, HAIL], tmp_path: Path) -> None:
    path, _ = saved
    data = path.read_bytes()
    for n in (0, 3, 8, 50, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{n}"
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_any_flipped_byte_is_refused(saved: tuple[Path, HAIL], tmp_path: Path) -> None:
    path, _ = saved
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    rng = np.random.default_rng(0)
    positions = {0, 1, 7, 8, 9, 8 + header_len - 1, 8 + header_len, len(data) - 1}
    positions |= set(rng.integers(0, 8 + header_len, 25).tolist())  # header: config, vocab, meta
    positions |= set(rng.integers(8 + header_len, len(data), 25).tolist())  # weights
    for pos in sorted(positions):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= bit
            target = tmp_path / "flipped.safetensors"
            target.write_bytes(bytes(bad))
            with pytest.raises(CheckpointError):
                load_checkpoint(target)


def rewrite(path: Path, dest: Path, edit_meta: dict[str, str | None], fix_digest: bool) -> Path:
    """Re-save ``path``'s tensors with edited metadata, optionally with a matching digest."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    for key, value in edit_meta.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    if fix_digest:
        meta.pop("sha256", None)
        header, body = ck._split_file(st_save(tensors, metadata=meta), "test")
        meta["sha256"] = ck._digest(header, body)
    dest.write_bytes(st_save(tensors, metadata=meta))
    return dest


def test_other_formats_are_refused(saved: tuple[Path, HAIL], tmp_path: Path) -> None:
    path, model = saved
    with pytest.raises(CheckpointError, match="not a hailstream-checkpoint/1 file") as err:
        load_checkpoint(rewrite(path, tmp_path / "a", {"format": "other/2"}, fix_digest=True))
    assert "other/2" not in str(err.value)  # what the file says is never echoed
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"w": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not a hailstream-checkpoint/1"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="sha256"):  # edited, digest not updated: tampering
        load_checkpoint(rewrite(path, tmp_path / "b", {"meta": json.dumps({"version": 99})}, fix_digest=False))
    # Consistent digest but weights that do not fit the config: still a clean CheckpointError.
    bigger = json.dumps(dict(inspect_checkpoint(path)["config"], hidden=16))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(rewrite(path, tmp_path / "c", {"config": bigger}, fix_digest=True))
    with pytest.raises(CheckpointError, match="config or vocabulary"):
        load_checkpoint(rewrite(path, tmp_path / "d", {"vocab": json.dumps(["a", "a"])}, fix_digest=True))
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(rewrite(path, tmp_path / "e", {"vocab": None}, fix_digest=True))


def test_checkpoint_digest_is_deterministic() -> None:
    model = tiny_model()
    # safetensors writes metadata keys in hash-map order, so compare content, not bytes.
    first, second = (ck._split_file(checkpoint_bytes(model, ItemVocab("ab"), {"x": 1}), "t") for _ in range(2))
    assert first[0]["__metadata__"] == second[0]["__metadata__"] and first[1] == second[1]


def test_a_crafted_size_is_refused_before_anything_is_allocated(saved: tuple[Path, HAIL], tmp_path: Path) -> None:
    # A consistent digest (recomputed by whoever crafted the file) and an item table of 2e9 rows:
    # building that model would try to allocate hundreds of GB.
    path, _ = saved
    crafted = rewrite(path, tmp_path / "huge", {"n_rows": str(2_000_000_000)}, fix_digest=True)
    with pytest.raises(CheckpointError, match="outside"):
        load_checkpoint(crafted)
    plausible = rewrite(path, tmp_path / "more", {"n_rows": str(5000)}, fix_digest=True)
    with pytest.raises(CheckpointError, match="do not fit"):  # shapes checked against the header first
        load_checkpoint(plausible)


def test_errors_never_echo_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0:s3cret-password-here:/root:/bin/bash\n" * 3)
    for target in (secret, tmp_path / "short"):
        if target.name == "short":
            target.write_bytes(b"s3cr")
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(target)
        assert "s3cr" not in str(err.value) and "root:x" not in str(err.value)
    as_header = tmp_path / "hdr"
    body = b'{"s3cret": 1'  # a header that is not JSON: the parser's message would quote it
    as_header.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(as_header)
    assert "s3cret" not in str(err.value)
