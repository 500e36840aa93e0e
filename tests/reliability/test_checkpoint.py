"""Item 6: a crafted checkpoint is refused before allocation, and errors never echo file content."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from tests.models.test_checkpoint import rewrite

pytestmark = pytest.mark.reliability


def test_two_billion_rows_with_a_recomputed_digest_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m", HAIL(HailConfig(n_peers=2, hidden=8, layers=1, max_len=4), 7),
                           ItemVocab("abcdef"), {})
    crafted = rewrite(path, tmp_path / "huge", {"n_rows": str(2_000_000_000)}, fix_digest=True)
    with pytest.raises(CheckpointError):
        load_checkpoint(crafted)


def test_a_system_file_named_as_a_checkpoint_is_not_echoed(tmp_path: Path) -> None:
    other = tmp_path / "passwd"
    other.write_bytes(b"root:x:0:0:hunter2:/root:/bin/bash\n" * 4)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(other)
    assert "root:x" not in str(err.value) and "hunter2" not in str(err.value)
