"""Every setting is a flag of the commands that use it, and ``hailstream worker`` / ``trainer`` parse
exactly the settings of their process (no broker)."""

from __future__ import annotations

import pytest

from stream.cli.flags import flag_name, settings_from_args
from stream.cli.main import DEMO_OWN, build_parser, main
from stream.settings import settings_fields


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {o for a in sub.choices[command]._actions for o in a.option_strings}  # type: ignore[attr-defined]


def test_every_setting_is_a_flag_of_its_process_command() -> None:
    worker, trainer, demo = _flags("worker"), _flags("trainer"), _flags("demo")
    for flat, (section, _, _) in settings_fields().items():
        if section in (None, "worker"):
            assert flag_name(flat) in worker, flat
        if section in (None, "trainer"):
            assert flag_name(flat) in trainer, flat
        if flat not in DEMO_OWN:
            assert flag_name(flat, trainer_prefix="trainer_") in demo, flat


def test_flags_win_over_the_environment() -> None:
    args = build_parser().parse_args(["trainer", "--steps", "9", "--no-drift", "--every-events", "none"])
    s = settings_from_args(args, env={"HAILSTREAM_TRAINER_STEPS": "3", "HAILSTREAM_TRAINER_WINDOW": "3000",
                                      "HAILSTREAM_PARTITIONS": "2"})
    assert (s.trainer.steps, s.trainer.window, s.partitions) == (9, 3000, 2)
    assert s.trainer.on_drift is False and s.trainer.every_events is None


def test_a_bad_flag_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--batch-size", "many"])


def test_the_worker_without_a_model_says_what_to_do(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HAILSTREAM_CHECKPOINT", raising=False)
    assert main(["worker"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
