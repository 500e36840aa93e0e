"""``hailstream report``: a run's timeline (:mod:`stream.observe.timeline`) as one PNG, what a person looks at first.

The top panel shows the windowed prequential HR@k over the events processed, for the live model
(``hail``, the thick line) and every baseline; dotted vertical lines mark drift detections (one
colour and legend entry per detector), dashed green ones the model-version changes, labelled with
the new version. A smaller panel below shows the windowed NDCG@k with the same marks. Drawn with
matplotlib's Agg canvas (no display, no pyplot state).

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "r.png"
>>> pts = [{"kind": "point", "events": e, "version": "v1", "k": 10,
...         "window": {"hail": {"n": e, "hr@10": 0.3, "ndcg@10": 0.2}}} for e in (200, 400)]
>>> plot_timeline(pts + [{"kind": "version", "events": 300, "old": "v1", "new": "v2"}], out)["versions"]
1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from stream.errors import StreamError
from stream.observe.timeline import TIMELINE_FILE, read_timeline
from stream.snapshots import MODEL_SCORER

REPORT_FILE = "report.png"
HOW_TO_RECORD = "run `hailstream demo` or `hailstream worker --timeline PATH` first"
DRIFT_COLOURS = {"accuracy": "tab:red", "input_unseen": "tab:orange", "input_popularity": "tab:purple"}
OTHER_DRIFT_COLOURS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan")
VERSION_COLOUR = "tab:green"
#: baselines' colours: none of the model's blue, the drift marks' or the version marks' colours
BASELINE_COLOURS = ("tab:gray", "tab:olive", "tab:cyan", "tab:brown", "tab:pink", "goldenrod", "black")


def resolve_run(run: Path | str, out: Path | str | None = None) -> tuple[Path, Path]:
    """(timeline file, PNG to write) for ``RUN``: a run directory holding ``timeline.jsonl``, or
    the timeline file itself. The PNG defaults to ``report.png`` in the run directory (the
    timeline file's folder)."""
    run = Path(run)
    if run.is_dir():
        timeline, folder = run / TIMELINE_FILE, run
        if not timeline.is_file():
            raise StreamError(f"no {TIMELINE_FILE} in {run}: {HOW_TO_RECORD} (the demo writes it into its run directory)")
    elif run.is_file():
        timeline, folder = run, run.parent
    else:
        raise StreamError(f"no run directory or timeline file at {run}: {HOW_TO_RECORD}")
    return timeline, Path(out) if out is not None else folder / REPORT_FILE


def _scorers(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Scorer names in first-seen order, the model first."""
    names: dict[str, None] = {}
    for p in points:
        for name in p.get("window", {}):
            names.setdefault(name, None)
    return sorted(names, key=lambda n: (n != MODEL_SCORER, not n.startswith(MODEL_SCORER)))


def _series(points: Sequence[Mapping[str, Any]], scorer: str, key: str) -> list[float]:
    """One scorer's values per point; NaN where it had no scored event in its window (a gap, not a 0)."""
    out = []
    for p in points:
        w = p.get("window", {}).get(scorer)
        value = w.get(key) if isinstance(w, Mapping) and w.get("n", 1) else None
        out.append(math.nan if value is None else float(value))
    return out


def _draw_scorers(ax: Axes, points: Sequence[Mapping[str, Any]], scorers: Sequence[str], key: str) -> float:
    """Plot one line per scorer; returns the largest value drawn (0 when none)."""
    x = [int(p["events"]) for p in points]
    top = 0.0
    baselines = 0
    for name in scorers:
        y = _series(points, name, key)
        top = max([top, *(v for v in y if not math.isnan(v))])
        if name == MODEL_SCORER:
            style: dict[str, Any] = {"color": "tab:blue", "linewidth": 2.6, "zorder": 5}
        elif name.startswith(MODEL_SCORER):  # the model on the baselines' user sample
            style = {"color": "tab:blue", "linewidth": 1.2, "linestyle": "--", "zorder": 4}
        else:
            colour = BASELINE_COLOURS[baselines % len(BASELINE_COLOURS)]
            baselines += 1
            style = {"color": colour, "linewidth": 1.2, "alpha": 0.85, "zorder": 3}
        ax.plot(x, y, label=name, marker="o" if len(x) == 1 else None, **style)
    return top


def _draw_marks(ax: Axes, drifts: Sequence[Mapping[str, Any]], versions: Sequence[Mapping[str, Any]],
                first_version: str | None, x0: int, legend: bool) -> None:
    """Drift detections (dotted, a colour per detector) and version changes (dashed, labelled)."""
    colours: dict[str, str] = {}
    for d in drifts:
        name = str(d.get("detector", "drift"))
        first = name not in colours
        if first:
            colours[name] = DRIFT_COLOURS.get(name, OTHER_DRIFT_COLOURS[len(colours) % len(OTHER_DRIFT_COLOURS)])
        ax.axvline(int(d["events"]), color=colours[name], linestyle=":", linewidth=1.4, zorder=2,
                   label=f"drift: {name}" if legend and first else None)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for i, v in enumerate(versions):
        ax.axvline(int(v["events"]), color=VERSION_COLOUR, linestyle="--", linewidth=1.6, zorder=2,
                   label="model version change" if legend and i == 0 else None)
        if legend:
            ax.text(int(v["events"]), 0.98, f" \u2192 {v.get('new')}", transform=top, rotation=90, va="top", ha="left",
                    fontsize=8, color=VERSION_COLOUR)
    if legend and first_version:
        label = f"v{first_version}" if str(first_version).isdigit() else first_version
        ax.text(x0, 0.98, f" model {label}", transform=top, rotation=90, va="top", ha="left", fontsize=8,
                color="dimgray")


def _draw_lifecycle(ax: Axes, injected: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]],
                    legend: bool) -> None:
    """Where the demo injected drift (thick black dash-dot) and the fine-tunes the gate rejected
    (red crosses at the top, labelled)."""
    for i, r in enumerate(injected):
        ax.axvline(int(r["events"]), color="black", linestyle="-.", linewidth=2.0, zorder=2,
                   label="drift injected" if legend and i == 0 else None)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for i, r in enumerate(rejected):
        ax.plot([int(r["events"])], [0.93], marker="x", markersize=9, color="tab:red", transform=top, zorder=3,
                linestyle="none", label="fine-tune not promoted" if legend and i == 0 else None)
        if legend:
            ax.text(int(r["events"]), 0.88, f" {r.get('outcome')}", transform=top, fontsize=7, color="tab:red",
                    va="top", ha="center", rotation=90)


def plot_timeline(records: Sequence[Mapping[str, Any]], out_path: Path | str, title: str | None = None) -> dict[str, Any]:
    """Draw ``records`` (from :func:`stream.observe.timeline.read_timeline`) into the PNG ``out_path``.

    Returns what was drawn: ``{"points", "drifts", "versions", "scorers", "events", "k", "out"}``
    (``events``: the last event count of the timeline). Raises :class:`StreamError` when there is
    no ``point`` record to draw.
    """
    if not records:
        raise StreamError(f"the timeline is empty: {HOW_TO_RECORD}, and let the worker process some events")
    points = sorted((r for r in records if r.get("kind") == "point"), key=lambda r: int(r["events"]))
    if not points:
        raise StreamError(
            f"the timeline has no accuracy points yet ({len(records)} other records): let the worker run longer "
            "(one point per --timeline-every events, 200 by default, and one at shutdown)"
        )
    drifts = [r for r in records if r.get("kind") == "drift"]
    injected = [r for r in records if r.get("kind") == "injected"]
    rejected = [r for r in records if r.get("kind") == "finetune" and r.get("outcome") != "promoted"]
    window = max((int(p.get("window", {}).get(MODEL_SCORER, {}).get("n", 0)) for p in points), default=0)
    versions = sorted((r for r in records if r.get("kind") == "version"), key=lambda r: int(r["events"]))
    k = int(points[-1].get("k", 10))
    scorers = _scorers(points)
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    hr_ax, ndcg_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.2))
    top = _draw_scorers(hr_ax, points, scorers, f"hr@{k}")
    _draw_marks(hr_ax, drifts, versions, points[0].get("version"), int(points[0]["events"]), legend=True)
    _draw_lifecycle(hr_ax, injected, rejected, legend=True)
    _draw_lifecycle(ndcg_ax, injected, rejected, legend=False)
    hr_ax.set_ylim(0, max(0.05, top * 1.2))
    per = f" (last {window:,} events)" if window else ""
    hr_ax.set_ylabel(f"windowed HR@{k}{per}")
    hr_ax.grid(alpha=0.3)
    hr_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    hr_ax.set_title(title or "hailstream run: prequential accuracy, drift and model versions")
    ndcg_top = _draw_scorers(ndcg_ax, points, scorers, f"ndcg@{k}")
    _draw_marks(ndcg_ax, drifts, versions, None, 0, legend=False)
    ndcg_ax.set_ylim(0, max(0.05, ndcg_top * 1.2))
    ndcg_ax.set_ylabel(f"windowed NDCG@{k}")
    ndcg_ax.set_xlabel("events processed")
    ndcg_ax.grid(alpha=0.3)
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, format="png")
    except OSError as e:
        raise StreamError(f"cannot write the report {out}: {e}; pass a writable --out") from e
    last = max(int(r.get("events", 0)) for r in records)
    return {"points": len(points), "drifts": len(drifts), "versions": len(versions), "scorers": scorers,
            "events": last, "k": k, "out": str(out), "window": window, "injected": len(injected),
            "rejected": len(rejected)}


def report_command(run: Path | str, out: Path | str | None = None, title: str | None = None) -> str:
    """``hailstream report RUN``: draw the run's timeline; returns the line to print (the PNG's path first)."""
    timeline, png = resolve_run(run, out)
    records = read_timeline(timeline)
    if title is None:
        title = f"{timeline.parent.name}: windowed prequential accuracy, drift detections and model versions"
    s = plot_timeline(records, png, title)
    return (f"{s['out']}  ({s['points']} points over {s['events']} events, {len(s['scorers'])} scorers, "
            f"{s['drifts']} drift detections, {s['versions']} version changes)")
