"""stream/cli/demo_view.py and the demo's helpers in stream/cli/demo.py: what the console and the summary
say about a run, from stats files and a timeline shaped like the real ones (no processes)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from stream.cli.demo import _Console, check_port, trainer_sizing
from stream.cli.demo_view import RunView, drift_report, fine_tune_note, format_summary, live_line, summarize
from stream.cli.flags import settings_from_args
from stream.cli.main import build_parser
from stream.errors import StreamError
from stream.settings import Settings
from stream.snapshots import TrainerSnapshot, WorkerSnapshot


def _point(events: int, hr: float, uf: float, version: str, t: float = 0.0) -> dict[str, Any]:
    return {"kind": "point", "t": t, "events": events, "version": version, "k": 10,
            "window": {"hail": {"n": 1000, "hr@10": hr, "ndcg@10": hr / 2},
                       "user-frequency": {"n": 1000, "hr@10": uf, "ndcg@10": uf / 2}}}


TIMELINE = [
    _point(1000, 0.55, 0.40, "1", t=10),
    {"kind": "drift", "t": 15, "events": 1400, "detector": "accuracy", "at_event": 1300, "value": 0.5, "baseline": 0.56},
    {"kind": "version", "t": 18, "events": 1800, "old": "1", "new": "v3"},
    _point(2000, 0.60, 0.45, "v3", t=20),  # the shift is at 2000
    {"kind": "drift", "t": 31, "events": 2090, "detector": "accuracy", "at_event": 1950, "value": 0.2, "baseline": 0.6},
    _point(2200, 0.30, 0.30, "v3", t=32),
    {"kind": "drift", "t": 33, "events": 2400, "detector": "input_popularity", "at_event": 2400, "value": 0.7,
     "baseline": 0.69},
    _point(3000, 0.01, 0.25, "v3", t=40),
    {"kind": "version", "t": 45, "events": 3500, "old": "v3", "new": "v4"},
    {"kind": "version", "t": 50, "events": 3800, "old": "v4", "new": "v5"},
    _point(4000, 0.05, 0.40, "v5", t=55),
    _point(5000, 0.20, 0.45, "v5", t=60),
]
HISTORY = [  # the trainer's stats "history": a drift fine-tune before the shift (a false alarm), then after
    {"reason": "drift", "outcome": "promoted", "version": "v3", "seconds": 5.0, "requested_at": 15.5},
    {"reason": "drift", "outcome": "rejected", "version": "v4", "seconds": 7.0, "requested_at": 31.2},
    {"reason": "events", "outcome": "promoted", "version": "v4", "seconds": 6.0, "requested_at": 40.0},
    {"reason": "drift", "outcome": "promoted", "version": "v5", "seconds": 8.0, "requested_at": 33.5},
]
TRAINER_STATS = {"fine_tunes": 4, "outcomes": {"promoted": 3, "rejected": 1, "failed": 0}, "history": HISTORY,
           "live_version": "v5", "running": False, "events": 5000}
WORKER_STATS = {"events": 5003, "predictions": 5000, "dead_letters": 3, "dead_letter_reasons": {"bad_json": 3},
          "live_model_version": "v5", "swaps": 3,
          "drift": {"published": 3, "detections": [{"detector": "accuracy", "at_event": 1950, "value": 0.2,
                                                     "baseline": 0.6}]},
          "prequential": {"hail": {"hr@10": 0.3, "ndcg@10": 0.2, "mrr@10": 0.1, "n": 4000, "cold": 1000,
                                   "window_hr@10": 0.2},
                          "user-frequency": {"hr@10": 0.35, "ndcg@10": 0.2, "mrr@10": 0.1, "n": 4000, "cold": 1000,
                                             "window_hr@10": 0.45}}}


def _worker(**changes: Any) -> WorkerSnapshot:
    return WorkerSnapshot.from_dict({**WORKER_STATS, **changes})


def _trainer(**changes: Any) -> TrainerSnapshot:
    return TrainerSnapshot.from_dict({**TRAINER_STATS, **changes})


WORKER, TRAINER = _worker(), _trainer()


def test_drift_report_measures_the_shift_from_the_timeline() -> None:
    r = drift_report(2000, TIMELINE, TRAINER)
    assert r["first_detection"] == {"detector": "accuracy", "events": 2090, "delay_events": 90}
    assert r["detections_after"] == 2
    # the first fine-tune asked for after the shift's detection (not the false alarm's before it)
    assert r["finetune"]["version"] == "v4" and r["finetune"]["outcome"] == "rejected"
    assert r["swap"] == {"version": "v4", "events": 3500, "after_drift_events": 1500}
    hr = r["window_hr@10"]
    assert hr["model"] == {"before": 0.60, "lowest_after": 0.01, "at_swap": 0.01, "end": 0.20}
    assert hr["user-frequency"] == {"before": 0.45, "end": 0.45}


def test_drift_report_follows_the_promoted_drift_version_and_says_when_nothing_happened() -> None:
    history = [dict(HISTORY[0]), dict(HISTORY[3])]
    r = drift_report(2000, TIMELINE, _trainer(history=history))
    assert r["finetune"]["version"] == "v5" and r["swap"]["version"] == "v5"  # its own swap, not the first one
    quiet = drift_report(2000, TIMELINE[:4], None)
    assert quiet["first_detection"] is None and quiet["finetune"] is None and quiet["swap"] is None
    assert "not detected" in format_summary(summarize(WORKER, None, [], [], {
        "wall_seconds": 1.0, "trainer": False, "drift": quiet}))


def test_summary_counts_come_from_the_processes() -> None:
    s = summarize(WORKER, TRAINER, ["1", "v5"], TIMELINE, {"wall_seconds": 70.0, "drift": drift_report(
        2000, TIMELINE, TRAINER)})
    assert (s["finetunes"], s["promotions"], s["rejections"], s["failed_finetunes"]) == (4, 3, 1, 0)
    assert s["model_versions_served"] == ["v1", "v3", "v4", "v5"]  # one label style
    assert s["drift_detections"] == 3 and s["swaps"] == 3 and s["dead_letter_reasons"] == {"bad_json": 3}
    assert s["finetune_seconds"] == [5.0, 7.0, 6.0, 8.0]
    text = format_summary(s)
    assert "fine-tunes 4 (promoted 3, rejected 1, failed 0), hot swaps 3, drift detections 3" in text
    assert "detected by accuracy 90 events later" in text and "hot swap to v4 1,500 events after" in text
    assert "before 0.600, lowest after 0.010, at the swap 0.010, end 0.200" in text
    no_trainer = summarize(WORKER, None, ["1"], [], {"wall_seconds": 1.0, "trainer": False})
    assert no_trainer["finetunes"] == no_trainer["promotions"] == 0
    assert "fine-tunes" not in format_summary(no_trainer)


def test_run_view_reports_each_piece_of_news_once() -> None:
    view = RunView()
    first = view.update(_worker(live_model_version="1", metrics_url="http://127.0.0.1:1/metrics"),
                        TrainerSnapshot(metrics_url="http://127.0.0.1:2/metrics"))
    assert first[:2] == ["worker: metrics on http://127.0.0.1:1/metrics", "trainer: metrics on http://127.0.0.1:2/metrics"]
    assert any(n.startswith("drift: accuracy detector fired") for n in first)
    news = view.update(WORKER, TRAINER)
    assert [n.split(":")[0] for n in news] == ["fine-tune 1 (drift)", "fine-tune 2 (drift)", "fine-tune 3 (events)",
                                              "fine-tune 4 (drift)", "worker"]
    assert view.update(WORKER, TRAINER) == []  # nothing new
    assert view.versions == ["v1", "v5"] and set(view.urls) == {"worker", "trainer"}
    line = live_line(WORKER, _trainer(running=True), 5000, 99.0)
    assert "HAIL 0.200 user-frequency 0.450" in line and "model v5" in line
    assert "fine-tunes 4 (3 promoted, 1 rejected) [fine-tuning]" in line


@pytest.mark.parametrize("n", [100, 600, 4000, 10_000, 100_000])
def test_demo_trainer_sizing_is_valid_trainer_settings(n: int) -> None:
    cfg = Settings(**trainer_sizing(n)).trainer
    assert 0 < cfg.holdout < cfg.window <= 2000 and cfg.every_events is not None and cfg.on_drift


def test_a_taken_metrics_port_fails_early_saying_which_flag() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(StreamError, match="--trainer-metrics-port"):
            check_port("127.0.0.1", s.getsockname()[1], "--trainer-metrics-port")
    check_port("127.0.0.1", 0, "--metrics-port")  # 0: any free port, nothing to check


def test_demo_flags() -> None:
    args = build_parser().parse_args(["demo", "--drift-at", "300", "--no-trainer", "--linger", "5", "--metrics-port",
                                      "0", "--trainer-steps", "5", "--trainer-tolerance", "1"])
    s = settings_from_args(args, env={})
    assert (args.drift_at, args.no_trainer, args.linger, s.worker.metrics_port) == (300, True, 5.0, 0)
    assert (s.trainer.steps, s.trainer.tolerance) == (5, 1.0) and args.drift is False and args.drift_seed == 7


def test_plain_console_prints_a_changed_line_only(capsys: pytest.CaptureFixture[str]) -> None:
    console = _Console(live=True)  # captured stdout is not a terminal: plain lines
    for text in ["events 1", "events 1", "events 2", "events 2", "events 2"]:
        console.line(text)
    console.say("news")
    console.line("events 2")  # unchanged after the news: still not repeated
    assert capsys.readouterr().out.splitlines() == ["events 1", "events 2", "news"]


def test_fine_tune_note_shows_steps_and_time_left() -> None:
    running = TrainerSnapshot(fine_tunes=1, running=True,
                              progress={"phase": "training", "step": 30, "steps": 60, "elapsed_s": 6.0, "eta_s": 6.0})
    assert fine_tune_note(running) == " [fine-tuning 30/60 steps, ~6 s left]"
    assert fine_tune_note(TrainerSnapshot(running=True)) == " [fine-tuning]"  # an older trainer: no progress
