"""Bounded shutdown and orphan detection for hailstream's processes.

- :func:`arm_exit_deadline`: once a stop is asked for (SIGTERM/SIGINT), the process exits 0 within
  ``seconds`` even when a clean stop hangs (a Faust worker whose broker is gone retries for a
  minute and more before it gives up), after a last ``before_exit`` (the stats file).
- :func:`watch_parent`: a child started by ``hailstream demo`` (or anything that sets
  :data:`PARENT_ENV` to its pid, :func:`stream.cli.procs.child_env` does) stops on its own when
  that parent dies, even by SIGKILL: the demo's worker and trainer never outlive it.
- :func:`stop_signals_raise`: SIGTERM and SIGHUP raise :class:`Stopped` (a ``SystemExit``) in the
  main thread, so ``with`` blocks (the demo's children, its embedded broker) clean up as on Ctrl-C.

>>> parent_pid({PARENT_ENV: "4242"}), parent_pid({PARENT_ENV: "1"}), parent_pid({})  # init is nobody's watcher
(4242, None, None)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: The environment variable naming the pid whose death stops this process.
PARENT_ENV = "HAILSTREAM_PARENT_PID"
#: Seconds between two looks at the parent.
PARENT_POLL_S = 0.5
#: Default bound on a stop (the issue's promise is 10 s; this leaves room for the exit itself).
EXIT_DEADLINE_S = 8.0

_armed = threading.Event()


def arm_exit_deadline(seconds: float = EXIT_DEADLINE_S, before_exit: Callable[[], None] | None = None,
                      code: int = 0) -> bool:
    """Exit the process with ``code`` ``seconds`` from now unless it has exited by then; False
    when already armed (idempotent)."""
    if _armed.is_set():
        return False
    _armed.set()

    def expire() -> None:
        time.sleep(seconds)
        log.warning("a clean stop did not finish within %.0f s (broker gone?): exiting now", seconds)
        if before_exit is not None:
            with contextlib.suppress(Exception):
                before_exit()
        logging.shutdown()
        os._exit(code)

    threading.Thread(target=expire, name="hailstream-exit-deadline", daemon=True).start()
    return True


def parent_pid(env: Mapping[str, str] | None = None) -> int | None:
    """The pid in :data:`PARENT_ENV`, or None when absent or not a number."""
    raw = (os.environ if env is None else env).get(PARENT_ENV, "")
    return int(raw) if raw.strip().isdigit() and int(raw) > 1 else None


def watch_parent(on_orphan: Callable[[], None], pid: int | None = None, poll: float = PARENT_POLL_S) -> bool:
    """Call ``on_orphan`` once (in a daemon thread) when process ``pid`` (default:
    :func:`parent_pid`) is no longer our parent; False when there is nothing to watch."""
    pid = parent_pid() if pid is None else pid
    if pid is None:
        return False

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(poll)
        log.warning("parent process %d is gone: stopping", pid)
        on_orphan()

    threading.Thread(target=watch, name="hailstream-parent-watch", daemon=True).start()
    return True


def stop_self(deadline: float = EXIT_DEADLINE_S, before_exit: Callable[[], None] | None = None) -> None:
    """SIGTERM to this process (its normal clean stop) with :func:`arm_exit_deadline`."""
    arm_exit_deadline(deadline, before_exit)
    os.kill(os.getpid(), signal.SIGTERM)


class Stopped(SystemExit):
    """Raised in the main thread by a stop signal (see :func:`stop_signals_raise`)."""


@contextlib.contextmanager
def stop_signals_raise(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, each of ``signals`` raises :class:`Stopped` (exit status 128 + signal);
    the previous handlers come back after it. Main thread only (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for s in signals:  # one stop at a time: a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(128 + signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
