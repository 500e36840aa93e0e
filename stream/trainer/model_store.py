"""Versioned model checkpoints in one directory (``settings.model_dir``): the model store.

Each version ``n`` is two files::

    v<n>.safetensors   a models.checkpoint file (weights + vocabulary + meta, embedded sha256)
    v<n>.json          its manifest: version, status, parent, created_at, validation metrics,
                       trigger, checkpoint file name and sha256, promotion order

Statuses: ``candidate`` (written, not yet decided), ``promoted`` (may serve), ``rejected`` (failed
the validation gate; its weights are usually not kept), ``rolled_back`` (was live, withdrawn).
The *live* version is the promoted one promoted last (:meth:`ModelStore.latest_promoted`);
:meth:`~ModelStore.rollback` withdraws it, which makes the one promoted before it live again, and
:meth:`~ModelStore.promote` can make any version with weights live (again).

Crash safety: the checkpoint is written first, then the manifest, each atomically (temporary file,
fsync, rename); a version exists only once its manifest does. A writer killed mid-write leaves a
temporary file (ignored, removed by the next writer) or a checkpoint without manifest (ignored);
a damaged or truncated checkpoint fails its sha256 check and is never loaded:
:meth:`~ModelStore.load_latest` then falls back to the previous promoted version. Writers take an
advisory lock on ``.lock`` (one trainer plus an operator's ``hailstream models`` commands).

>>> import tempfile
>>> from models.hail import HAIL, HailConfig
>>> from models.vocab import ItemVocab
>>> store = ModelStore(tempfile.mkdtemp())
>>> model = HAIL(HailConfig(hidden=8, layers=1, max_len=4), n_rows=3)
>>> v1 = store.add(model, ItemVocab("ab"), status="promoted")
>>> v2 = store.add(model, ItemVocab("ab"), status="promoted", parent=1, metrics={"ndcg@10": 0.1})
>>> [(v.label, v.status) for v in store.list()], store.latest_promoted().label
([('v1', 'promoted'), ('v2', 'promoted')], 'v2')
>>> store.rollback().label, store.get(2).status
('v1', 'rolled_back')
>>> store.load_latest()[1].meta["version"]
'v1'
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fcntl
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.checkpoint import Checkpoint, atomic_write, inspect_checkpoint, load_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.hail import HAIL
from models.vocab import ItemVocab
from stream.errors import StreamError
from stream.messages import version_label

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "hailstream-model-manifest/1"
STATUSES = ("candidate", "promoted", "rejected", "rolled_back")
_MANIFEST = re.compile(r"v(\d+)\.json")
_CHECKPOINT = re.compile(r"v(\d+)\.safetensors")
# A temporary file older than this is a dead writer's leftover (a live write takes seconds).
_STALE_TMP_SECONDS = 600.0


class ModelStoreError(StreamError):
    """A model store operation is impossible (unknown version, nothing to roll back to, ...)."""


@dataclass
class VersionInfo:
    """One version's manifest."""

    version: int
    status: str
    created_at: float
    parent: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    trigger: str | None = None
    checkpoint: str | None = None  # file name inside the store, None when the weights were not kept
    sha256: str | None = None
    promoted_seq: int | None = None  # order of promotions: the live version has the highest
    promoted_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return version_label(self.version)

    def to_dict(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionInfo:
        if d.get("format") != MANIFEST_FORMAT:
            raise ModelStoreError(f"not a {MANIFEST_FORMAT} manifest (format {d.get('format')!r})")
        known = {f.name for f in dataclasses.fields(cls)}
        info = cls(**{k: v for k, v in d.items() if k in known})
        if info.status not in STATUSES:
            raise ModelStoreError(f"manifest of v{info.version} has unknown status {info.status!r}")
        return info


class ModelStore:
    """The versions in ``directory`` (created on the first write; reading a missing directory
    finds no versions)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    # -- reading ---------------------------------------------------------------------------
    def _manifest_path(self, version: int) -> Path:
        return self.directory / f"v{int(version)}.json"

    def checkpoint_path(self, version: int) -> Path:
        """Where version ``version``'s checkpoint file lives (whether or not it exists)."""
        return self.directory / f"v{int(version)}.safetensors"

    def _read(self, path: Path) -> VersionInfo | None:
        try:
            return VersionInfo.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, ModelStoreError) as e:
            # Only written by rename, so this is outside damage; skip it rather than stop serving.
            log.warning("ignoring unreadable manifest %s: %s", path, e)
            return None

    def list(self) -> builtins.list[VersionInfo]:
        """Every version with a readable manifest, oldest first."""
        if not self.directory.is_dir():
            return []
        out = []
        for p in self.directory.iterdir():
            if _MANIFEST.fullmatch(p.name):
                info = self._read(p)
                if info is not None:
                    out.append(info)
        return sorted(out, key=lambda v: v.version)

    def get(self, version: int) -> VersionInfo:
        path = self._manifest_path(version)
        info = self._read(path) if path.exists() else None
        if info is None:
            known = ", ".join(v.label for v in self.list()) or "none"
            raise ModelStoreError(f"no version {version_label(version)} in {self.directory} (versions: {known})")
        return info

    def promoted(self) -> builtins.list[VersionInfo]:
        """Promoted versions, live first (latest promotion first)."""
        out = [v for v in self.list() if v.status == "promoted"]
        return sorted(out, key=lambda v: (v.promoted_seq or 0, v.version), reverse=True)

    def latest_promoted(self) -> VersionInfo | None:
        """The live version: the promoted one promoted last (None if there is none)."""
        p = self.promoted()
        return p[0] if p else None

    def load(self, version: int, map_location: str = "cpu") -> Checkpoint:
        """Load a version's checkpoint; refuses a file whose checksum fails or does not match the
        manifest (:class:`~models.errors.CheckpointError`)."""
        info = self.get(version)
        if info.checkpoint is None:
            raise ModelStoreError(f"{info.label} was {info.status} and its weights were not kept")
        ckpt = load_checkpoint(self.directory / info.checkpoint, map_location)
        if info.sha256 and ckpt.sha256 != info.sha256:
            raise CheckpointError(
                f"{self.directory / info.checkpoint} is not the checkpoint {info.label}'s manifest names "
                "(sha256 differs); it was replaced. Restore it or promote another version"
            )
        return ckpt

    def load_latest(self, map_location: str = "cpu") -> tuple[VersionInfo, Checkpoint] | None:
        """The newest promoted version that loads, skipping (with a warning) damaged ones; None
        when no promoted version loads."""
        for info in self.promoted():
            try:
                return info, self.load(info.version, map_location)
            except (CheckpointError, ModelStoreError) as e:
                log.warning("model store: cannot load %s (%s); trying the version promoted before it", info.label, e)
        return None

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _next_version(self) -> int:
        # Orphaned checkpoints (a writer died between its two renames) keep their number: a new
        # version never takes the name of a file that may be someone's half-finished work.
        numbers = [0]
        for p in self.directory.iterdir():
            m = _MANIFEST.fullmatch(p.name) or _CHECKPOINT.fullmatch(p.name)
            if m:
                numbers.append(int(m.group(1)))
        return max(numbers) + 1

    def _clean_temporaries(self) -> None:
        now = time.time()
        for p in self.directory.glob(".v*.tmp"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    p.unlink()

    def _write_manifest(self, info: VersionInfo) -> None:
        atomic_write(self._manifest_path(info.version), json.dumps(info.to_dict(), indent=1, sort_keys=True).encode())

    def _next_seq(self) -> int:
        return max((v.promoted_seq or 0 for v in self.list()), default=0) + 1

    def add(
        self,
        model: HAIL | None,
        vocab: ItemVocab | None,
        *,
        status: str = "candidate",
        parent: int | None = None,
        metrics: dict[str, Any] | None = None,
        trigger: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> VersionInfo:
        """Write a new version (checkpoint, then manifest); returns its manifest.

        ``model=None`` records a version without weights (e.g. a rejected candidate kept for the
        audit trail). ``meta`` is added to the checkpoint's metadata; ``meta["version"]`` is set
        to the version label, which is what a worker serving it publishes as ``model_version``.
        """
        if status not in STATUSES:
            raise ModelStoreError(f"status must be one of {STATUSES}, not {status!r}")
        if (model is None) != (vocab is None):
            raise ModelStoreError("pass both the model and its vocabulary, or neither")
        if model is None and status == "promoted":
            raise ModelStoreError("a version without weights cannot be promoted")
        with self._locked():
            self._clean_temporaries()
            n = self._next_version()
            info = VersionInfo(n, status, time.time(), parent, dict(metrics or {}), trigger)
            if model is not None and vocab is not None:
                path = self.checkpoint_path(n)
                full_meta = {**(meta or {}), "version": info.label, "parent": parent, "created_at": info.created_at}
                save_checkpoint(path, model, vocab, full_meta)
                info.checkpoint = path.name
                info.sha256 = inspect_checkpoint(path)["sha256"]
            if status == "promoted":
                info.promoted_seq, info.promoted_at = self._next_seq(), time.time()
            self._write_manifest(info)
        return info

    def import_checkpoint(self, path: str | Path, status: str = "promoted", trigger: str = "import") -> VersionInfo:
        """Add an existing checkpoint file (e.g. the offline-trained initial model) as a new version."""
        ckpt = load_checkpoint(path)
        meta = {k: v for k, v in ckpt.meta.items() if k not in ("version", "parent", "created_at")}
        meta["imported_from"] = str(Path(path).resolve())
        return self.add(ckpt.model, ckpt.vocab, status=status, trigger=trigger, meta=meta,
                        metrics={"source_version": ckpt.meta.get("version")})

    def set_status(self, version: int, status: str) -> VersionInfo:
        """Change a version's status (promotion order is kept for :meth:`promote`)."""
        if status not in STATUSES:
            raise ModelStoreError(f"status must be one of {STATUSES}, not {status!r}")
        with self._locked():
            info = self.get(version)
            info.status = status
            self._write_manifest(info)
        return info

    def promote(self, version: int) -> VersionInfo:
        """Make ``version`` live (promoted last); its checkpoint must exist and pass its checksum."""
        with self._locked():
            info = self.get(version)
            if info.checkpoint is None:
                raise ModelStoreError(f"{info.label} has no weights ({info.status}); it cannot be promoted")
            self.load(version)  # verify before anyone is told to serve it
            info.status, info.promoted_seq, info.promoted_at = "promoted", self._next_seq(), time.time()
            self._write_manifest(info)
        return info

    def rollback(self) -> VersionInfo:
        """Withdraw the live version (status ``rolled_back``); returns the version that is live
        now, the one promoted before it."""
        with self._locked():
            promoted = self.promoted()
            if len(promoted) < 2:
                raise ModelStoreError(
                    f"nothing to roll back to in {self.directory}: "
                    + ("no promoted version" if not promoted else f"{promoted[0].label} is the only promoted version")
                )
            current = promoted[0]
            current.status = "rolled_back"
            self._write_manifest(current)
            return promoted[1]

    def prune(self, keep: int = 5) -> builtins.list[int]:
        """Delete the weights of all but the ``keep`` most recently promoted versions (the live
        one always stays) and of every rejected/rolled-back/candidate version outside them;
        manifests stay for the audit trail. Returns the versions whose weights were deleted."""
        if keep < 1:
            raise ModelStoreError(f"keep must be >= 1, not {keep}")
        with self._locked():
            keep_ids = {v.version for v in self.promoted()[:keep]}
            newest = max((v.version for v in self.list()), default=0)
            removed = []
            for info in self.list():
                # The newest version may be a candidate a trainer is still deciding on.
                if info.version in keep_ids or info.checkpoint is None or info.version == newest:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / info.checkpoint).unlink()
                info.checkpoint = None
                self._write_manifest(info)
                removed.append(info.version)
        return removed

    def __repr__(self) -> str:
        live = self.latest_promoted()
        return f"ModelStore({str(self.directory)!r}, live={live.label if live else None})"
