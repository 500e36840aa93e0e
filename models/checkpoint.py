"""Checkpoints: one safetensors file holding a HAIL model, its vocabulary and free-form metadata.

Loading never executes code (DESIGN §6): the file is parsed as safetensors (a JSON header plus raw
tensor bytes), never unpickled. The header's string metadata holds::

    format  "hailstream-checkpoint/1"
    config  JSON of dataclasses.asdict(model.config)
    vocab   JSON list of item ids (index 1 first)
    meta    JSON of the caller's dict (version, metrics, data set, ...)
    n_rows  rows of the model's item tables
    sha256  digest of the other fields and of every tensor's name, dtype, shape and bytes

The embedded digest (rather than a sidecar file) travels with the file, so a copy or a rename can
never pair a checkpoint with the wrong checksum, and it covers the metadata too: a flipped byte
anywhere is refused. Writes are atomic (temporary file in the same folder, fsync, ``os.replace``):
a reader sees the old file or the new one, never half of one.

>>> import tempfile, torch
>>> from models.hail import HAIL, HailConfig
>>> from models.vocab import ItemVocab
>>> model = HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4), n_rows=4)
>>> path = save_checkpoint(tempfile.mkdtemp() + "/v1.safetensors", model, ItemVocab("abc"), {"version": 1})
>>> ckpt = load_checkpoint(path)
>>> ckpt.meta, ckpt.vocab.to_list(), ckpt.model.training
({'version': 1}, ['a', 'b', 'c'], False)
>>> seqs = torch.tensor([[0, 1, 2]])
>>> torch.equal(model.eval().log_probs(seqs), ckpt.model.log_probs(seqs))
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models.errors import CheckpointError, ModelsError
from models.vocab import ItemVocab

if TYPE_CHECKING:
    from models.hail import HAIL, HailConfig

FORMAT = "hailstream-checkpoint/1"
_DIGEST_KEY = "sha256"
_REQUIRED = ("format", "config", "vocab", "meta", "n_rows", _DIGEST_KEY)
# A header larger than this is not one we wrote (the vocabulary of a million items is ~20 MB).
_MAX_HEADER_BYTES = 512 * 1024 * 1024
# More item rows than any vocabulary we build (a bounded vocabulary defaults to 100,000 items).
_MAX_ROWS = 50_000_000


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its vocabulary, config and metadata."""

    model: HAIL
    vocab: ItemVocab
    config: HailConfig
    meta: dict[str, Any]
    sha256: str = ""
    path: Path | None = field(default=None, repr=False)


def _looks_pickled(data: bytes) -> bool:
    # torch.save writes a zip (PK..), older torch and plain pickle start with the PROTO opcode.
    return data[:4] == b"PK\x03\x04" or (len(data) > 1 and data[0] == 0x80 and 2 <= data[1] <= 5)


def _split_file(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """(header, tensor bytes) of a safetensors file, with errors a user can act on."""
    try:
        return _parse_header(data, where)
    except CheckpointError:
        if _looks_pickled(data):
            raise CheckpointError(
                f"{where} is a torch.save/pickle file, not a hailstream checkpoint; pickles can run code "
                "and are never loaded. Re-export the model with models.checkpoint.save_checkpoint"
            ) from None
        raise


def _parse_header(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    if len(data) < 8:
        raise CheckpointError(f"{where} is truncated ({len(data)} bytes); copy the checkpoint again")
    # Messages never quote the file: whatever a user names as a checkpoint may be a secret.
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > _MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{where} is truncated or not a safetensors file (its header does not fit in its "
            f"{len(data)} bytes); copy the checkpoint again"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{where} has a corrupt header; it is damaged or not a checkpoint") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where} has a corrupt header (not a JSON object)")
    return header, data[8 + n :]


def _digest(header: dict[str, Any], body: bytes) -> str:
    """sha256 over the canonical metadata (minus the digest itself), then each tensor's name,
    dtype, shape and bytes in name order: independent of the key order safetensors happens to
    write (its metadata is a hash map), sensitive to every value that matters."""
    meta = {k: v for k, v in header.get("__metadata__", {}).items() if k != _DIGEST_KEY}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    h.update(str(len(body)).encode())
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        if not isinstance(info, dict):
            raise CheckpointError(f"tensor entry {name!r} in the header is malformed; the file is damaged")
        try:
            start, end = (int(x) for x in info["data_offsets"])
            spec = json.dumps([name, info["dtype"], info["shape"]])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"tensor entry {name!r} in the header is malformed; the file is damaged") from None
        h.update(spec.encode())
        h.update(body[start:end])
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Persist the rename itself; not every platform lets a directory be opened, hence best effort.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def checkpoint_bytes(model: HAIL, vocab: ItemVocab, meta: dict[str, Any] | None = None) -> bytes:
    """The serialised checkpoint (what :func:`save_checkpoint` writes), e.g. to send elsewhere."""
    config = getattr(model, "config", None)
    if config is None or not is_dataclass(config) or isinstance(config, type):
        raise CheckpointError("the model has no dataclass .config; only HAIL models can be checkpointed")
    n_rows = int(model.n_rows)
    if vocab.rows > n_rows:
        raise CheckpointError(
            f"vocabulary has {vocab.rows} rows but the model only {n_rows}; call model.grow(vocab.rows) first"
        )
    try:
        meta_json = json.dumps({} if meta is None else meta, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint meta must be JSON-serialisable: {e}") from None
    metadata = {
        "format": FORMAT,
        "config": json.dumps(asdict(config), sort_keys=True),
        "vocab": json.dumps(vocab.to_list()),
        "meta": meta_json,
        "n_rows": str(n_rows),
    }
    # Own contiguous CPU copies: safetensors refuses shared storage (tied weights) and views.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    header, body = _split_file(st_save(tensors, metadata=metadata), "the new checkpoint")
    metadata[_DIGEST_KEY] = _digest(header, body)
    return st_save(tensors, metadata=metadata)


def save_checkpoint(path: str | Path, model: HAIL, vocab: ItemVocab, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` + ``vocab`` + ``meta`` to ``path`` atomically; returns the path.

    ``meta`` must be JSON-serialisable. The model's weights are copied, so it may keep training.
    """
    path = Path(path)
    atomic_write(path, checkpoint_bytes(model, vocab, meta))
    return path


def _read_verified(path: Path) -> tuple[dict[str, str], bytes]:
    """Read ``path``, check format and digest; returns (string metadata, whole file bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}; check the path or the model directory") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    header, body = _split_file(data, str(path))
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a {FORMAT} file; it was not written by save_checkpoint "
            "or by a compatible hailstream version"
        )
    missing = [k for k in _REQUIRED if not isinstance(meta.get(k), str)]
    if missing:
        raise CheckpointError(f"{path} lacks checkpoint fields {missing}; the file is damaged")
    if _digest(header, body) != meta[_DIGEST_KEY]:
        raise CheckpointError(
            f"{path} failed its sha256 check: the file is corrupt or was modified. Restore it from a "
            "good copy or use another checkpoint version"
        )
    return meta, data


def _parse_json(meta: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: field {key!r} is not valid JSON; the file is damaged") from None


def _check_shapes(path: Path, config: HailConfig, n_rows: int, header_shapes: dict[str, list[int]]) -> None:
    """Refuse a file whose tensors are not what ``config`` and ``n_rows`` build, before anything
    is allocated: a crafted header (a valid digest is no proof of origin) could otherwise ask
    for any amount of memory. The expected shapes come from a model on the ``meta`` device,
    which has shapes but no storage."""
    from models.hail import HAIL

    if not 1 <= n_rows <= _MAX_ROWS:
        raise CheckpointError(f"{path}: item table of {n_rows} rows is outside 1..{_MAX_ROWS}; the file is not ours")
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in HAIL(config, n_rows).state_dict().items()}
    if expected != header_shapes:
        names = sorted(set(expected) ^ set(header_shapes)) or sorted(
            k for k in expected if expected[k] != header_shapes.get(k))
        raise CheckpointError(f"{path}: weights do not fit the stored config ({', '.join(names[:5])}); "
                              "the file is damaged or not ours")


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """Verified metadata without building the model: ``format``, ``config`` (dict), ``meta``,
    ``n_rows``, ``n_items``, ``sha256``, ``bytes``."""
    path = Path(path)
    meta, data = _read_verified(path)
    return {
        "format": meta["format"],
        "config": _parse_json(meta, "config", path),
        "meta": _parse_json(meta, "meta", path),
        "n_rows": int(meta["n_rows"]),
        "n_items": len(_parse_json(meta, "vocab", path)),
        "sha256": meta[_DIGEST_KEY],
        "bytes": len(data),
    }


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`; the model comes back in eval mode on
    ``map_location``. Anything else (a pickle, a truncated or modified file, another format) raises
    :class:`CheckpointError`. No code from the file is ever executed."""
    from models.hail import HAIL, HailConfig  # here, so that reading metadata needs no model code

    path = Path(path)
    meta, data = _read_verified(path)
    try:
        config = HailConfig.from_dict(_parse_json(meta, "config", path))
        vocab = ItemVocab.from_list(_parse_json(meta, "vocab", path))
        n_rows = int(meta["n_rows"])
    except (ModelsError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config or vocabulary is invalid: {e}") from None
    header, _ = _split_file(data, str(path))
    _check_shapes(path, config, n_rows, {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    try:
        tensors = st_load(data)
    except Exception:  # safetensors raises its own error types; all mean "damaged"
        raise CheckpointError(f"{path}: tensor data is unreadable; the file is damaged") from None
    if vocab.rows > n_rows:
        raise CheckpointError(f"{path}: vocabulary ({vocab.rows} rows) is larger than the model ({n_rows})")
    user_meta = _parse_json(meta, "meta", path)
    if not isinstance(user_meta, dict):
        raise CheckpointError(f"{path}: field 'meta' must be a JSON object")
    model = HAIL(config, n_rows)
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {e}") from None
    model.to(map_location).eval()
    return Checkpoint(model, vocab, config, user_meta, meta[_DIGEST_KEY], path)
