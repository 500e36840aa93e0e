"""The layout's promises: every package exports what its ``__all__`` names (lazily: importing a
package loads nothing heavy), modules stay small, the worker's agent stays thin."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stream.kafka", "stream.worker", "stream.trainer", "stream.observe", "stream.cli", "stream.settings")
MAX_LINES = 420  # "split before ~400 lines" (DESIGN §2)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name: str) -> None:
    pkg = importlib.import_module(name)
    assert pkg.__doc__ and len(pkg.__doc__.strip().splitlines()) == 2, "two lines say what lives here"
    for export in pkg.__all__:
        assert getattr(pkg, export) is not None, f"{name}.{export}"


def test_importing_the_packages_loads_neither_torch_nor_faust() -> None:
    code = "import sys, stream.kafka, stream.worker, stream.trainer, stream.observe, stream.cli; " \
           "print(sorted(m for m in ('torch', 'faust') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_is_over_about_400_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "stream").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"split these by concept: {big}"


def test_the_agent_is_thin() -> None:
    from stream.worker import app

    source = inspect.getsource(app.make_app)
    body = source[source.index("async def hailstream_worker"):].split("\n\n")[0]
    assert len(body.splitlines()) <= 15, body
