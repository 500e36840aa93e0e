"""The trainer process's logic that needs no broker: control messages, following an operator's
rollback, the command-line flags. (The Kafka loop runs in tests/integration/test_lifecycle.py.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from models.hail import HAIL, HailConfig
from models.vocab import ItemVocab
from stream.cli.flags import add_settings_flags, settings_from_args
from stream.messages import ControlMessage, drift_message, model_message, parse_control, trigger_message
from stream.observe.metrics import Metrics
from stream.settings import Settings, TrainerSettings
from stream.trainer.model_store import ModelStore
from stream.trainer.process import open_learner
from stream.trainer.runtime import TrainerRuntime, consumer_group


def _runtime(tmp_path: Path, **config: object) -> TrainerRuntime:
    vocab = ItemVocab(["a", "b", "c"])
    store = ModelStore(tmp_path)
    for seed in range(2):
        store.add(HAIL(HailConfig(hidden=8, layers=1, max_len=4, seed=seed), vocab.rows), vocab, status="promoted")
    settings = Settings.from_env({}, model_dir=tmp_path)
    learner = open_learner(settings, TrainerSettings(**config))  # type: ignore[arg-type]
    return TrainerRuntime(settings, learner, metrics=Metrics(process="trainer", process_collector=False))


def _msg(raw: bytes) -> ControlMessage:
    msg = parse_control(raw)
    assert msg is not None
    return msg


def test_drift_and_trigger_messages_request_a_fine_tune(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    assert rt.learner.live.version == "v2"
    rt.on_control(_msg(drift_message("accuracy", 10, 0.1, 0.3)), live=False)  # history: stale
    assert rt.learner.pending_request is None
    rt.on_control(_msg(drift_message("accuracy", 10, 0.1, 0.3)), live=True)
    assert rt.learner.pending_request == "drift"
    rt2 = _runtime(tmp_path / "b")
    rt2.on_control(_msg(trigger_message("whatever")), live=True)
    assert rt2.learner.pending_request == "manual"
    rt3 = _runtime(tmp_path / "c", on_drift=False)
    rt3.on_control(_msg(drift_message("accuracy", 10, 0.1, 0.3)), live=True)
    assert rt3.learner.pending_request is None


def test_an_operator_rollback_is_followed(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    store = ModelStore(tmp_path)
    live = store.rollback()
    rt.on_control(_msg(model_message(live.label, live.version, store.checkpoint_path(1), live.sha256,
                                     reason="rollback")), live=True)
    rt._follow_store()
    assert rt.learner.live.version == "v1"
    assert rt.metrics is not None and rt.metrics.value("hailstream_model_version") == 1.0
    # its own announcement (the live version) changes nothing
    rt.on_control(_msg(model_message("v1", 1, store.checkpoint_path(1))), live=True)
    assert rt._follow is None
    snap = rt.snapshot()
    assert snap.live_version == "v1" and snap.outcomes == {"promoted": 0, "rejected": 0, "failed": 0}


def test_command_line_flags() -> None:
    ap = argparse.ArgumentParser()
    add_settings_flags(ap, ["shared", "trainer"])
    args = ap.parse_args(["--every-seconds", "30", "--steps", "7", "--item-capacity", "500", "--keep-rejected"])
    cfg = settings_from_args(args, env={}).trainer
    assert (cfg.every_seconds, cfg.steps, cfg.item_capacity, cfg.keep_rejected, cfg.on_drift) == (30.0, 7, 500,
                                                                                                  True, True)
    assert cfg.every_events == TrainerSettings().every_events and cfg.nice == 10 and cfg.threads == 1
    with pytest.raises(SystemExit):
        ap.parse_args(["--steps", "many"])
    assert consumer_group(Settings(app_id="x")) == "x-trainer"
