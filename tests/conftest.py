"""Suite-wide guard: a test that leaves a broker, Faust worker or ``hailstream`` process running
fails, and the leftover process is killed (by its PID) so it cannot disturb later tests.

Processes started by module- or session-scoped fixtures exist before a test starts and are not
blamed on it; the end of the session checks that nothing at all is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_OURS = re.compile(r"(^|[/\s])(tansu|faust|hailstream)(\s|$)|faust|-m\s+stream\.")
_PROC = Path("/proc")


def _has_children() -> bool:
    """Cheap pre-check (most tests start no process): False only when the kernel says this
    process has no children at all."""
    try:
        return any((t / "children").read_text().strip() for t in (_PROC / str(os.getpid()) / "task").iterdir())
    except OSError:
        return True  # no /proc/<pid>/task/*/children on this kernel: do the full scan


def _descendants() -> dict[int, str]:
    """Live (non-zombie) descendants of this process whose command line is one of ours:
    pid -> command line. Linux only (reads /proc); empty elsewhere."""
    if not _PROC.is_dir() or not _has_children():
        return {}
    parent: dict[int, int] = {}
    for d in _PROC.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        fields = stat[stat.rfind(")") + 2:].split()
        if fields and fields[0] != "Z":
            parent[int(d.name)] = int(fields[1])
    me = os.getpid()
    found: dict[int, str] = {}
    for pid in parent:
        p, hops = parent.get(pid), 0
        while p is not None and p != me and p > 1 and hops < 64:
            p, hops = parent.get(p), hops + 1
        if p != me or pid == me:
            continue
        try:
            cmd = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if _OURS.search(cmd):
            found[pid] = cmd
    return found


def _kill(pids: dict[int, str]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        # Reap it if it is our child; otherwise its parent (or init) does.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _allowed(config: pytest.Config) -> set[int]:
    return set(getattr(config, "hailstream_allowed_pids", set()))


@pytest.fixture(autouse=True)
def _no_leftover_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(_descendants())
    yield
    leaked = {p: c for p, c in _descendants().items() if p not in before and p not in _allowed(request.config)}
    if leaked:
        _kill(leaked)
        pytest.fail(
            "test left processes running (killed now): "
            + "; ".join(f"pid {p}: {c[:200]}" for p, c in leaked.items())
            + ". Stop every broker/worker you start (context manager or finally).",
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = _descendants()
    if left:
        _kill(left)
        sys.stderr.write(
            "\nhailstream test guard: processes were still running at the end of the session and were killed:\n"
            + "".join(f"  pid {p}: {c[:200]}\n" for p, c in left.items())
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
