"""``hailstream report``: a synthetic timeline drawn into a PNG, the summary, and the errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from stream.cli.main import main
from stream.errors import StreamError
from stream.observe.report import plot_timeline, report_command, resolve_run
from stream.observe.timeline import TIMELINE_FILE, read_timeline

SCORERS = ("hail", "popularity", "markov", "user-frequency")


def _point(events: int, version: str, hr: float, n: int = 100) -> dict[str, Any]:
    window = {s: {"n": n, "hr@10": hr / (i + 1), "ndcg@10": hr / (i + 2)} for i, s in enumerate(SCORERS)}
    window["markov"]["n"] = 0 if events <= 400 else n  # no scored event yet: a gap in its line
    return {"kind": "point", "t": 1.0, "events": events, "version": version, "k": 10, "window": window}


def _timeline(run: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for e in range(200, 4001, 200):
        records.append(_point(e, "v1" if e <= 2600 else "v2", 0.4 if e < 1500 or e > 3000 else 0.15))
        if e == 1600:
            records.append({"kind": "drift", "t": 1.0, "events": e, "detector": "accuracy", "at_event": e,
                            "value": 0.15, "baseline": 0.4, "direction": "down"})
        if e in (1800, 2000):
            records.append({"kind": "drift", "t": 1.0, "events": e, "detector": "input_unseen", "at_event": e,
                            "value": 0.3, "baseline": 0.05, "direction": "up"})
    records.append({"kind": "version", "t": 1.0, "events": 2600, "old": "v1", "new": "v2", "reason": "drift"})
    run.mkdir(parents=True, exist_ok=True)
    with open(run / TIMELINE_FILE, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write('{"kind": "point", "eve')  # a torn last line, as a killed worker leaves it
    return records


def _share_of_colour(img: np.ndarray, colour: str, tol: float = 0.03) -> float:
    """Share of the image's pixels within ``tol`` of ``colour`` (RGB)."""
    diff = np.abs(img[..., :3] - np.array(to_rgb(colour))).max(axis=-1)
    return float((diff < tol).mean())


def test_report_writes_a_png_with_the_model_line_and_the_marks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "demo-run"
    records = _timeline(run)
    assert main(["report", str(run)]) == 0
    out = run / "report.png"
    assert capsys.readouterr().out.startswith(f"{out}  (20 points over 4000 events")
    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500 and img.shape[2] in (3, 4)
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert _share_of_colour(img, "tab:blue") > 0.002  # the model's line
    assert _share_of_colour(img, "tab:red") > 0.0001  # the accuracy drift mark (0 without it)
    assert _share_of_colour(img, "tab:green") > 0.0002  # the version change
    summary = plot_timeline(read_timeline(run / TIMELINE_FILE), tmp_path / "again.png")
    assert summary == {"points": 20, "drifts": 3, "versions": 1, "scorers": list(SCORERS), "events": 4000,
                       "k": 10, "out": str(tmp_path / "again.png"), "window": 100, "injected": 0, "rejected": 0}
    assert len(records) == 24


def test_out_title_and_a_timeline_file_as_run(tmp_path: Path) -> None:
    _timeline(tmp_path / "r")
    line = report_command(tmp_path / "r" / TIMELINE_FILE, tmp_path / "png" / "x.png", title="my run")
    assert line.startswith(str(tmp_path / "png" / "x.png")) and (tmp_path / "png" / "x.png").is_file()
    assert resolve_run(tmp_path / "r" / TIMELINE_FILE) == (tmp_path / "r" / TIMELINE_FILE, tmp_path / "r" / "report.png")
    assert not (tmp_path / "r" / "report.png").exists()


def test_model_version_of_points_only_and_a_single_point(tmp_path: Path) -> None:
    summary = plot_timeline([_point(500, "v7", 0.3)], tmp_path / "one.png")
    assert (summary["points"], summary["drifts"], summary["versions"]) == (1, 0, 0)
    assert imread(tmp_path / "one.png")[..., :3].std() > 0.05


def test_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "no-such-run")]) == 2
    err = capsys.readouterr().err
    assert "hailstream report: error:" in err and "hailstream demo" in err and "--timeline" in err
    (tmp_path / "empty-run").mkdir()
    assert main(["report", str(tmp_path / "empty-run")]) == 2
    assert TIMELINE_FILE in capsys.readouterr().err
    (tmp_path / "empty-run" / TIMELINE_FILE).write_text("")
    with pytest.raises(StreamError, match="empty"):
        report_command(tmp_path / "empty-run")
    drift = {"kind": "drift", "events": 10, "detector": "accuracy", "value": 0.1, "baseline": 0.3}
    with pytest.raises(StreamError, match="no accuracy points"):
        plot_timeline([drift], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_the_report_marks_the_window_the_injected_drift_and_rejected_fine_tunes(tmp_path: Path) -> None:
    """What the demo appends after its run (stream.cli.demo.lifecycle_marks) is drawn: a black
    dash-dot line where drift was injected, red crosses for fine-tunes not promoted; the axis says
    the window size."""
    records = _timeline(tmp_path) + [{"kind": "injected", "events": 2000},
                                     {"kind": "finetune", "outcome": "rejected", "version": None, "events": 2600}]
    out = tmp_path / "marks.png"
    summary = plot_timeline(records, out)
    assert (summary["window"], summary["injected"], summary["rejected"]) == (100, 1, 1)
    plain = tmp_path / "plain.png"
    plot_timeline(_timeline(tmp_path), plain)
    img, before = imread(out), imread(plain)
    assert _share_of_colour(img, "tab:red") > _share_of_colour(before, "tab:red")
    assert _share_of_colour(img, "black") > _share_of_colour(before, "black")
