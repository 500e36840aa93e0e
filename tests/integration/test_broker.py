"""The embedded broker against the real Tansu binary."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.errors import BrokerError
from stream.kafka.broker import EmbeddedBroker, free_port, wait_for_broker

pytestmark = pytest.mark.integration


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state = cols[1], cols[3]
            addr, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(addr)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_session_broker_answers_metadata(broker: str) -> None:
    assert broker.startswith("127.0.0.1:")
    wait_for_broker(broker, timeout=5.0)


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs Linux /proc/net/tcp")
def test_listens_on_loopback_only(broker: str) -> None:
    port = int(broker.rsplit(":", 1)[1])
    # 0100007F is 127.0.0.1 in /proc's little-endian hex; 00000000 would be 0.0.0.0 (all interfaces)
    assert _listen_addresses(port) == {"0100007F"}


def test_start_stop_leaves_no_process(tmp_path: Path) -> None:
    b = EmbeddedBroker(log_dir=tmp_path)
    with b:
        pid = b.pid
        assert pid is not None and _pid_alive(pid) and b.is_running()
        assert b.startup_seconds is not None and b.startup_seconds < b.startup_timeout
        assert b.log_path is not None and b.log_path.parent == tmp_path
        with socket.create_connection(("127.0.0.1", b.port), timeout=2):
            pass
        assert os.getsid(pid) == pid  # own session: a terminal's Ctrl-C reaches us, not the broker
    assert not b.is_running() and not _pid_alive(pid)
    assert b.stop() is not None  # idempotent
    with pytest.raises(BrokerError, match="cannot reach Kafka"):
        wait_for_broker(f"127.0.0.1:{b.port}", timeout=0.5)


def test_explicit_port_in_use_is_refused(broker: str, tmp_path: Path) -> None:
    port = int(broker.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(port=port, log_dir=tmp_path).start()


def test_run_broker_foreground_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    code = f"from stream.kafka.broker import run_broker; raise SystemExit(run_broker(port={port}, log_dir={str(tmp_path)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(2)]
        assert "ready on 127.0.0.1:" in banner[0], banner
        assert banner[1].strip() == f"export HAILSTREAM_BOOTSTRAP_SERVERS=127.0.0.1:{port}"
        wait_for_broker(f"127.0.0.1:{port}", timeout=5.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(OSError):  # the broker went with it: nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_broker_dies_with_a_killed_owner(tmp_path: Path) -> None:
    code = (
        "import time; from stream.kafka.broker import EmbeddedBroker; "
        f"b = EmbeddedBroker(log_dir={str(tmp_path)!r}).start(); print(b.pid, flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        broker_pid = int(owner.stdout.readline())
        assert _pid_alive(broker_pid)
    finally:
        owner.kill()  # SIGKILL: no atexit, no finally in the owner
        owner.wait()
    for _ in range(200):
        if not _pid_alive(broker_pid):
            break
        time.sleep(0.05)
    survived = _pid_alive(broker_pid)
    if survived:  # orphaned: outside the guard's reach, so clean up here before failing
        os.kill(broker_pid, signal.SIGKILL)
    assert not survived, "the broker outlived its SIGKILLed owner"
