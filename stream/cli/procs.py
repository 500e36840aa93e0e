"""Child processes of hailstream: ``hailstream worker`` / ``hailstream trainer`` (the command a user
types, :func:`spawn_hailstream`) started with a :class:`~stream.settings.Settings` in their
environment, and stopped by PID with a grace period.

Used by the demo, the lifecycle benchmark and the integration tests, so that every one of them
hands settings over and stops a worker the same way (SIGTERM, wait, then SIGKILL: a Faust worker
that is still starting may ignore SIGTERM).

>>> import sys
>>> from stream.settings import Settings
>>> proc = spawn_python(["-c", "import time; time.sleep(60)"], Settings.from_env({}), log=None)
>>> stop_process(proc, grace=5.0); proc.returncode is not None
True
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from stream.lifeline import PARENT_ENV
from stream.settings import Settings

STOP_GRACE = 15.0


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment without any ``HAILSTREAM_*`` variable, plus ``settings``
    (:meth:`Settings.to_env`), unbuffered output and this pid as the child's parent to watch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILSTREAM_")}
    env.update(settings.to_env())
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_ENV] = str(os.getpid())  # the child stops when we die (stream.lifeline.watch_parent)
    return env


def spawn_python(
    argv: Sequence[str], settings: Settings, log: Path | None, *, cwd: Path | None = None, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """``python <argv>`` with :func:`child_env`; output appended to ``log`` (None: discarded).
    ``new_session`` keeps a terminal's Ctrl-C away from the child (the caller stops it)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child keeps its copy
    try:
        return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=child_env(settings), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=new_session)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def hailstream_argv() -> list[str]:
    """How to run the ``hailstream`` command of this interpreter: its console script when it sits
    beside ``sys.executable`` (an installed environment), else ``python -m stream.cli``."""
    script = Path(sys.executable).with_name("hailstream")
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "stream.cli"]


def spawn_hailstream(
    argv: Sequence[str], settings: Settings, log: Path | None, *, cwd: Path | None = None, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """``hailstream <argv>`` (e.g. ``["worker", "--checkpoint", path]``) with :func:`child_env`; see
    :func:`spawn_python`."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child keeps its copy
    try:
        return subprocess.Popen([*hailstream_argv(), *argv], cwd=cwd, env=child_env(settings), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=new_session)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; no-op for None or a finished process."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def child_process(name: str, argv: Sequence[str], settings: Settings, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`spawn_hailstream` (``argv`` = the command and its flags) in its own session with its
    output in ``<run_dir>/<name>.log``, stopped (:func:`stop_process`) when the block ends, however
    it ends."""
    proc = spawn_hailstream(argv, settings, run_dir / f"{name}.log", new_session=True)
    try:
        yield proc
    finally:
        stop_process(proc)
