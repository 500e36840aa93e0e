"""Item 7: bounded, complete shutdown. ``hailstream demo`` stopped by SIGTERM, SIGINT or SIGHUP
leaves no process behind, and a child whose parent died stops on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from models.checkpoint import save_checkpoint
from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.cli.procs import hailstream_argv
from tests.data import needs_nyc

pytestmark = pytest.mark.reliability
WAIT_S = 60.0  # a deadline for waiting, not a measured bound (the timings are in bench/)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [root]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _gone(pids: set[int]) -> set[int]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return {p for p in pids if _alive(p)}


def test_a_child_whose_parent_was_killed_stops_on_its_own(tmp_path: Path) -> None:
    grandchild = textwrap.dedent("""
        import os, time
        from stream.lifeline import watch_parent
        watch_parent(lambda: os._exit(0), poll=0.1)
        time.sleep(600)
    """)
    parent = textwrap.dedent(f"""
        import time
        from stream.cli.procs import spawn_python
        from stream.settings import Settings
        p = spawn_python(["-c", {grandchild!r}], Settings.from_env({{}}), log=None, new_session=True)
        print(p.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert _alive(child)
    finally:
        proc.kill()  # SIGKILL: no finally, no atexit in the parent
        proc.wait()
    assert not _gone({child}), "the orphan kept running"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.data import load_dataset

    ev = load_dataset("foursquare-nyc")
    vocab = ItemVocab(ev.take(ev.block == "T0").items.tolist())
    model = HAIL(HailConfig(n_peers=2, hidden=16, layers=1, max_len=20, seed=3), vocab.rows)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, vocab, {"version": "1"})


@needs_nyc
@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_the_demo_stops_every_process_it_started(sig: signal.Signals, tiny_checkpoint: Path,
                                                             tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAILSTREAM_")}
    out = tmp_path / "demo.out"
    with open(out, "wb") as f:
        demo = subprocess.Popen(
            [*hailstream_argv(), "demo", "--limit", "20000", "--max-rate", "50", "--checkpoint", str(tiny_checkpoint),
             "--metrics-port", "0", "--trainer-metrics-port", "0"],
            cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=f, stderr=subprocess.STDOUT)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "ready after" not in out.read_text(errors="replace"):
            assert demo.poll() is None, out.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        assert "ready after" in out.read_text(errors="replace"), out.read_text(errors="replace")[-3000:]
        started = _descendants(demo.pid)
        assert len(started) >= 3  # the embedded broker, the worker, the trainer
        demo.send_signal(sig)
        demo.wait(WAIT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    left = _gone(started)
    for pid in left:  # never leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after {sig.name}: {left}\n" + out.read_text(errors="replace")[-3000:]


@needs_nyc
@pytest.mark.integration
def test_sigterm_with_the_broker_gone_exits_0(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from stream.cli.procs import spawn_hailstream, stop_process
    from stream.kafka.broker import EmbeddedBroker
    from stream.kafka.topics import ensure_topics
    from stream.settings import Settings

    stats = tmp_path / "stats.json"
    with EmbeddedBroker(log_dir=tmp_path) as broker:
        settings = Settings.from_env({}, bootstrap_servers=broker.bootstrap, app_id="gone", model_dir=tmp_path / "m")
        ensure_topics(settings)
        worker = spawn_hailstream(["worker", "--checkpoint", str(tiny_checkpoint), "--stats-file", str(stats),
                                   "--metrics-port", "0"], settings, tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not stats.exists():
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(0.5)
            assert stats.exists(), (tmp_path / "worker.log").read_text()[-3000:]
        except BaseException:
            stop_process(worker)
            raise
    # the broker is gone now
    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(WAIT_S)
    finally:
        stop_process(worker)
    print(f"worker exited {code} {time.monotonic() - t0:.1f} s after SIGTERM with the broker gone")
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
