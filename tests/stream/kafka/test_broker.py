"""Broker lifecycle edge cases with fake binaries (fast; no real broker needed)."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

import stream.kafka.broker as broker_mod
from stream.errors import BrokerError
from stream.kafka.broker import EmbeddedBroker, free_port, port_is_free, tansu_binary, wait_for_broker


def _script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "fake-tansu"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return p


def test_tansu_binary_is_the_packaged_executable() -> None:
    path = tansu_binary()
    assert path.name == "tansu" or path.name.startswith("tansu-")
    assert path.is_file() and os.access(path, os.X_OK)


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "bin").mkdir(parents=True)
    binary = pkg / "bin" / "tansu"
    binary.write_bytes(b"#!/bin/sh\nexit 0\n")
    binary.chmod(0o644)
    monkeypatch.setattr(broker_mod.importlib.resources, "files", lambda name: pkg)
    monkeypatch.setattr(broker_mod, "_CACHE_DIR", tmp_path / "cache")
    return binary


def test_missing_exec_bit_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _fake_package(tmp_path, monkeypatch)
    assert tansu_binary() == binary
    assert binary.stat().st_mode & stat.S_IXUSR


def test_read_only_package_gets_a_cached_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _fake_package(tmp_path, monkeypatch)
    real_chmod = Path.chmod

    def chmod(self: Path, mode: int, **kw: object) -> None:
        if self == binary:
            raise PermissionError("read-only file system")
        real_chmod(self, mode)

    monkeypatch.setattr(Path, "chmod", chmod)
    monkeypatch.setattr(broker_mod.os, "access", lambda p, m: Path(p) != binary and os.path.exists(p)
                        and bool(os.stat(p).st_mode & stat.S_IXUSR))
    copy = tansu_binary()
    assert copy.parent == tmp_path / "cache" and copy.read_bytes() == binary.read_bytes()
    assert copy.stat().st_mode & stat.S_IXUSR
    assert tansu_binary() == copy  # reused, not copied again


def test_binary_that_exits_reports_the_log_tail(tmp_path: Path) -> None:
    fake = _script(tmp_path, 'echo "boom: cannot open storage" >&2; exit 3')
    b = EmbeddedBroker(binary=fake, log_dir=tmp_path, startup_timeout=10)
    with pytest.raises(BrokerError) as e:
        b.start()
    assert "exited with code 3" in str(e.value) and "boom: cannot open storage" in str(e.value)
    assert not b.is_running()


def test_binary_that_never_listens_times_out_and_is_killed(tmp_path: Path) -> None:
    fake = _script(tmp_path, "echo starting; exec sleep 60")
    b = EmbeddedBroker(binary=fake, log_dir=tmp_path, startup_timeout=0.5, grace=1.0)
    with pytest.raises(BrokerError, match="(?s)did not listen.*starting"):
        b.start()
    assert not b.is_running() and b.pid is not None
    assert not Path(f"/proc/{b.pid}").exists() or "Z" in Path(f"/proc/{b.pid}/stat").read_text().split(")")[-1][:3]


def test_sigterm_ignored_then_sigkill(tmp_path: Path) -> None:
    fake = _script(tmp_path, "trap '' TERM; exec sleep 60")
    b = EmbeddedBroker(binary=fake, log_dir=tmp_path, startup_timeout=0.3, grace=0.3)
    with pytest.raises(BrokerError):
        b.start()
    assert b.stop() == -signal.SIGKILL and not b.is_running()


def test_unstarted_broker_has_no_address() -> None:
    b = EmbeddedBroker()
    with pytest.raises(BrokerError, match="not started"):
        _ = b.bootstrap
    assert b.stop() is None and "unstarted" in repr(b)


def test_free_port() -> None:
    port = free_port()
    assert 0 < port < 65536 and port_is_free(port)


def test_wait_for_broker_unreachable_says_what_to_do() -> None:
    port = free_port()
    with pytest.raises(BrokerError) as e:
        wait_for_broker(f"127.0.0.1:{port}", timeout=0.3)
    msg = str(e.value)
    assert f"cannot reach Kafka at 127.0.0.1:{port}: is it running? set HAILSTREAM_BOOTSTRAP_SERVERS" in msg


def test_wait_for_broker_bad_client_settings() -> None:
    with pytest.raises(BrokerError, match="invalid Kafka client settings"):
        wait_for_broker("127.0.0.1:1", timeout=0.3, client_kwargs={"no_such_option": 1})
