"""The suite's leftover-process guard (tests/conftest.py) finds and kills our processes."""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_guard", Path(__file__).with_name("conftest.py"))
assert _spec is not None and _spec.loader is not None
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_guard_sees_and_kills_a_tansu_child() -> None:
    proc = subprocess.Popen(["bash", "-c", "exec -a tansu sleep 60"])
    try:
        found: dict[int, str] = {}
        for _ in range(100):  # exec replaces bash's command line shortly after the fork
            found = guard._descendants()
            if found.get(proc.pid, "").startswith("tansu"):  # seen after the exec, not before it
                break
            time.sleep(0.02)
        assert found.get(proc.pid, "").startswith("tansu")
        guard._kill({proc.pid: found[proc.pid]})
        assert proc.pid not in guard._descendants()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_guard_ignores_unrelated_children() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert proc.pid not in guard._descendants()
    finally:
        proc.kill()
        proc.wait()
