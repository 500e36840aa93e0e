"""What ``hailstream demo`` shows: the live line, the lifecycle news as it happens (drift
detections, fine-tunes, hot swaps), the final summary and, with ``--drift``, the drift report.

Everything is read from files the processes write: the worker's and the trainer's stats files
(rewritten every second, :class:`~stream.snapshots.WorkerSnapshot` and
:class:`~stream.snapshots.TrainerSnapshot`) and the worker's timeline (:mod:`stream.observe.timeline`,
exact event counts for drift detections and version changes). Pure functions of those records, so
they are tested without running anything.

>>> view = RunView()
>>> view.update(WorkerSnapshot(live_model_version="1", events=10), TrainerSnapshot())
[]
>>> view.update(WorkerSnapshot(live_model_version="v2", events=900),
...             TrainerSnapshot(fine_tunes=1, history=[{"reason": "drift", "outcome": "promoted", "version": "v2",
...              "seconds": 12.5, "candidate": {"ndcg@10": 0.2}, "live": {"ndcg@10": 0.1}}]))
['fine-tune 1 (drift): promoted v2 in 12 s (gate NDCG@10 0.2000 vs live 0.1000)', 'worker: now serving v2 (at event 900)']
>>> view.versions
['v1', 'v2']
"""

from __future__ import annotations

from typing import Any

from stream.snapshots import MODEL_SCORER, TrainerSnapshot, WorkerSnapshot

HR = "hr@10"


class RunView:
    """Follows the stats files once a second: which versions the worker served, and the news
    since the last call (:meth:`update` returns it as printable lines)."""

    def __init__(self) -> None:
        self.versions: list[str] = []
        self.finetunes_seen = 0
        self.verdicts_seen = 0
        self.detections_seen: set[tuple[str, int]] = set()
        self.urls: dict[str, str] = {}

    def update(self, worker: WorkerSnapshot, trainer: TrainerSnapshot | None) -> list[str]:
        news: list[str] = []
        for name, url in (("worker", worker.metrics_url), ("trainer", trainer.metrics_url if trainer else None)):
            if url and name not in self.urls:
                self.urls[name] = url
                news.append(f"{name}: metrics on {url}")
        drift = worker.drift or {}
        for d in drift.get("detections", []):
            key = (str(d.get("detector")), int(d.get("at_event", 0)))
            if key not in self.detections_seen:
                self.detections_seen.add(key)
                news.append(f"drift: {d.get('detector')} detector fired (worker at event ~{worker.events:,}; "
                            f"{d.get('value', 0):.4f} vs baseline {d.get('baseline', 0):.4f})")
        if trainer is not None:
            total = int(trainer.fine_tunes)
            history = trainer.history
            new = history[len(history) - min(len(history), total - self.finetunes_seen):] if total > self.finetunes_seen else []
            for i, h in enumerate(new, start=self.finetunes_seen + 1):
                news.append(finetune_line(i, h))
            self.finetunes_seen = max(self.finetunes_seen, total)
        verdicts = worker.guard_verdicts or []  # the post-swap guard's (last 20)
        for v in verdicts[self.verdicts_seen:]:
            news.append(f"guard: {v.get('action')} {v.get('version')} ({v.get('reason')})")
        self.verdicts_seen = max(self.verdicts_seen, len(verdicts))
        served = worker.live_model_version or worker.model_version
        version = version_label(served) if served else None
        if version and (not self.versions or self.versions[-1] != str(version)):
            if self.versions:
                news.append(f"worker: now serving {version} (at event {worker.events:,})")
            if str(version) not in self.versions:
                self.versions.append(str(version))
        return news


def version_label(version: object) -> str:
    """One label style for model versions everywhere the demo shows one: ``v1``, ``v2``, ...

    >>> version_label("1"), version_label("v2"), version_label(None)
    ('v1', 'v2', '?')
    """
    if version is None or version == "":
        return "?"
    text = str(version)
    return f"v{text}" if text.isdigit() else text


def accuracy_by_version(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How accuracy changed with each served version: per stretch of the timeline's points served
    by one version, its events and the windowed HR@10 of the model and of the best baseline at the
    stretch's end.

    >>> pts = [{"kind": "point", "events": e, "version": v, "window": {"hail": {"hr@10": h}, "pop": {"hr@10": 0.1}}}
    ...        for e, v, h in [(100, "1", 0.05), (200, "1", 0.08), (300, "v2", 0.15)]]
    >>> [(r["version"], r["from_event"], r["to_event"], r["hr@10"], r["baseline"]) for r in accuracy_by_version(pts)]
    [('v1', 0, 200, 0.08, ('pop', 0.1)), ('v2', 200, 300, 0.15, ('pop', 0.1))]
    """
    out: list[dict[str, Any]] = []
    for r in timeline:
        if r.get("kind") != "point" or r.get("version") is None:
            continue
        label = version_label(r["version"])
        window = r.get("window", {})
        hr = window.get(MODEL_SCORER, {}).get(HR)
        others = {k: v.get(HR) for k, v in window.items() if k != MODEL_SCORER and v.get(HR) is not None}
        best = max(others.items(), key=lambda kv: kv[1]) if others else None
        if not out or out[-1]["version"] != label:
            start = out[-1]["to_event"] if out else 0
            out.append({"version": label, "from_event": start})
        out[-1].update({"to_event": int(r.get("events", 0)), "hr@10": hr, "baseline": best})
    return out


def finetune_line(n: int, h: dict[str, Any]) -> str:
    """One line for a finished fine-tune (an entry of the trainer's stats ``history``)."""
    cand, live = h.get("candidate") or {}, h.get("live") or {}
    gate = ""
    if "ndcg@10" in cand and "ndcg@10" in live:
        gate = f" (gate NDCG@10 {cand['ndcg@10']:.4f} vs live {live['ndcg@10']:.4f})"
    error = f": {h['error']}" if h.get("error") else ""
    return (f"fine-tune {n} ({h.get('reason')}): {h.get('outcome')} {h.get('version') or ''}".rstrip()
            + f" in {h.get('seconds', 0):.0f} s{gate}{error}")


def _scorer(stats: WorkerSnapshot, name: str, key: str) -> float:
    return float(stats.prequential.get(name, {}).get(key) or 0.0)


def best_baseline(stats: WorkerSnapshot, key: str = f"window_{HR}") -> tuple[str, float]:
    """The baseline with the highest ``key`` (("-", 0.0) when there is none)."""
    scores = [(name, float(p.get(key) or 0.0)) for name, p in stats.prequential.items() if name != MODEL_SCORER]
    return max(scores, key=lambda s: s[1], default=("-", 0.0))


def live_line(worker: WorkerSnapshot, trainer: TrainerSnapshot | None, target: int, rate: float) -> str:
    """The console's one-line view: progress, windowed HR@10 (model vs best baseline), versions,
    drift and fine-tunes."""
    base, base_hr = best_baseline(worker)
    line = (f"events {worker.events:>7,}/{target:<7,} {rate:6.0f}/s | HR@10 (last 1000) HAIL "
            f"{_scorer(worker, MODEL_SCORER, f'window_{HR}'):.3f} {base} {base_hr:.3f} | dead letters "
            f"{worker.dead_letters} | model {version_label(worker.live_model_version or worker.model_version)}"
            f" | drift {len((worker.drift or {}).get('detections', []))}")
    if trainer is not None:
        out = trainer.outcomes
        line += (f" | fine-tunes {trainer.fine_tunes} ({out.get('promoted', 0)} promoted, "
                 f"{out.get('rejected', 0)} rejected){fine_tune_note(trainer)}")
    return line


def fine_tune_note(trainer: TrainerSnapshot) -> str:
    """The running fine-tune as the live line shows it: steps done and time left, or the gate.

    >>> fine_tune_note(TrainerSnapshot(running=True, progress={"phase": "training", "step": 20, "steps": 60,
    ...                                                       "elapsed_s": 10.0, "eta_s": 20.0}))
    ' [fine-tuning 20/60 steps, ~20 s left]'
    >>> fine_tune_note(TrainerSnapshot(running=True, progress={"phase": "gating", "step": 60, "steps": 60}))
    ' [fine-tuning: gating the candidate]'
    >>> fine_tune_note(TrainerSnapshot(running=False))
    ''
    """
    if not trainer.running:
        return ""
    p = trainer.progress or {}
    if p.get("phase") == "training":
        eta = p.get("eta_s")
        left = f", ~{eta:.0f} s left" if eta is not None else ""
        return f" [fine-tuning {p.get('step', 0)}/{p.get('steps', 0)} steps{left}]"
    if p.get("phase") == "gating":
        return " [fine-tuning: gating the candidate]"
    return " [fine-tuning]"


def drift_count(worker: WorkerSnapshot, timeline: list[dict[str, Any]]) -> int:
    """Drift detections of the run: the timeline's drift records (every one), else the worker's
    published drift messages."""
    from_timeline = sum(1 for r in timeline if r.get("kind") == "drift")
    drift = worker.drift or {}
    return max(from_timeline, int(drift.get("published", 0)), len(drift.get("detections", [])))


def versions_served(view_versions: list[str], timeline: list[dict[str, Any]]) -> list[str]:
    """Every version the worker served, in order: the timeline's version changes (exact) merged
    with what the stats files showed."""
    out: list[str] = []
    for r in timeline:
        if r.get("kind") == "point" and r.get("version") is not None:
            names = [str(r["version"])]
        elif r.get("kind") == "version":
            names = [str(r.get("old")), str(r.get("new"))]
        else:
            continue
        out += [version_label(n) for n in names if version_label(n) not in out and n != "None"]
    return out + [version_label(v) for v in view_versions if version_label(v) not in out]


def _hr_at(points: list[dict[str, Any]], scorer: str = MODEL_SCORER) -> float | None:
    if not points:
        return None
    value = points[-1].get("window", {}).get(scorer, {}).get(HR)
    return None if value is None else float(value)


def drift_report(drift_at: int, timeline: list[dict[str, Any]], trainer: TrainerSnapshot | None) -> dict[str, Any]:
    """What happened around the shift at replayed event ``drift_at``, from the worker's timeline
    (event counts are the worker's, which processes the replay in order): the first detection
    after it and its delay in events, the first fine-tune the drift triggered (from the trainer's
    stats), the first hot swap after it, and the windowed HR@10 (last 1000 scored events) of the
    model and of the user-frequency baseline before the shift, at its lowest after it, at the swap
    and at the end."""
    points = [r for r in timeline if r.get("kind") == "point"]
    drifts = [r for r in timeline if r.get("kind") == "drift" and int(r.get("events", 0)) > drift_at]
    swaps = [r for r in timeline if r.get("kind") == "version" and int(r.get("events", 0)) >= drift_at]
    first = drifts[0] if drifts else None
    # the first fine-tune a detection after the shift asked for (the trainer notes when it was asked)
    since = float(first.get("t", 0.0)) - 1.0 if first else float("inf")
    finetune = next((h for h in (trainer.history if trainer is not None else [])
                     if h.get("reason") == "drift" and float(h.get("requested_at") or 0.0) >= since), None)
    # the swap to the drift-triggered version when it was promoted, else the first one after the shift
    target = finetune.get("version") if finetune and finetune.get("outcome") == "promoted" else None
    swap = next((r for r in swaps if target is None or r.get("new") == target), None)
    before = [p for p in points if int(p["events"]) <= drift_at]
    after = [p for p in points if int(p["events"]) > drift_at]
    at_swap = [p for p in points if swap is not None and int(p["events"]) <= int(swap["events"])]
    lowest = min(after, key=lambda p: p.get("window", {}).get(MODEL_SCORER, {}).get(HR, 1.0), default=None)

    def hr(ps: list[dict[str, Any]], scorer: str = MODEL_SCORER) -> float | None:
        return _hr_at(ps, scorer)

    return {
        "at": drift_at,
        "detections_after": len(drifts),
        "first_detection": None if first is None else {
            "detector": first.get("detector"), "events": first.get("events"),
            "delay_events": int(first["events"]) - drift_at,
        },
        "finetune": None if finetune is None else {
            "outcome": finetune.get("outcome"), "version": finetune.get("version"),
            "seconds": finetune.get("seconds"), "candidate": finetune.get("candidate"), "live": finetune.get("live"),
        },
        "swap": None if swap is None else {
            "version": swap.get("new"), "events": swap.get("events"), "after_drift_events": int(swap["events"]) - drift_at,
        },
        "window_hr@10": {
            "model": {"before": hr(before), "lowest_after": hr([lowest] if lowest else []),
                      "at_swap": hr(at_swap) if swap else None, "end": hr(points)},
            "user-frequency": {"before": hr(before, "user-frequency"), "end": hr(points, "user-frequency")},
        },
    }


def summarize(worker: WorkerSnapshot, trainer: TrainerSnapshot | None, versions: list[str],
              timeline: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The demo's final summary: counts, prequential metrics per scorer, the lifecycle (fine-tunes
    by outcome, versions served, drift detections), timings; ``extra`` is merged in."""
    scorers = {
        name: {key: p.get(key) for key in ("hr@10", "ndcg@10", "mrr@10", "n", "cold", "window_hr@10")}
        for name, p in worker.prequential.items()
    }
    trainer = trainer if trainer is not None else TrainerSnapshot()
    outcomes = trainer.outcomes
    return {
        "events": worker.events,
        "predictions": worker.predictions,
        "dead_letters": worker.dead_letters,
        "dead_letter_reasons": worker.dead_letter_reasons,
        "prequential": scorers,
        "model_versions_served": versions_served(versions, timeline),
        "accuracy_by_version": accuracy_by_version(timeline),
        "swaps": worker.swaps or 0,
        "rollbacks": worker.rollbacks or 0,
        "guard_verdicts": worker.guard_verdicts or [],
        "drift_detections": drift_count(worker, timeline),
        "finetunes": int(trainer.fine_tunes),
        "promotions": int(outcomes.get("promoted", 0)),
        "rejections": int(outcomes.get("rejected", 0)),
        "failed_finetunes": int(outcomes.get("failed", 0)),
        "finetune_seconds": [h.get("seconds") for h in trainer.history],
        "latency_s": worker.latency_s or None,
        **extra,
    }


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the console shows it at the end."""
    lines = [f"events {summary['events']:,}  predictions {summary['predictions']:,}  "
             f"dead letters {summary['dead_letters']:,}  wall {summary['wall_seconds']:.1f} s  "
             f"first prediction after {_num(summary.get('first_prediction_s'), '.1f')} s",
             f"{'scorer':<16}{'HR@10':>8}{'NDCG@10':>9}{'MRR@10':>8}{'scored':>9}"]
    for name, m in summary["prequential"].items():
        lines.append(f"{name:<16}{m['hr@10'] or 0:>8.4f}{m['ndcg@10'] or 0:>9.4f}{m['mrr@10'] or 0:>8.4f}"
                     f"{m['n'] or 0:>9,}")
    lines.append(f"model versions served: {', '.join(summary['model_versions_served']) or '-'}")
    for r in summary.get("accuracy_by_version") or []:
        base = r.get("baseline")
        lines.append(f"  {r['version']:<4} events {r['from_event']:>7,}..{r['to_event']:<7,} HAIL HR@10 (last 1000) "
                     f"{_num(r.get('hr@10'))}" + (f" vs {base[0]} {_num(base[1])}" if base else ""))
    if summary.get("trainer", True):
        lines.append(f"fine-tunes {summary['finetunes']} (promoted {summary['promotions']}, rejected "
                     f"{summary['rejections']}, failed {summary['failed_finetunes']}), hot swaps "
                     f"{summary.get('swaps', 0)}, drift detections {summary['drift_detections']}")
    report = summary.get("drift")
    if report:
        first, ft, swap = report["first_detection"], report["finetune"], report["swap"]
        hr = report["window_hr@10"]["model"]
        lines.append(f"drift injected at event {report['at']:,}: "
                     + (f"detected by {first['detector']} {first['delay_events']:,} events later" if first
                        else "not detected"))
        if ft:
            lines.append(f"  drift-triggered fine-tune: {ft['outcome']} {ft.get('version') or ''} in "
                         f"{_num(ft.get('seconds'), '.1f')} s")
        if swap:
            lines.append(f"  hot swap to {swap['version']} {swap['after_drift_events']:,} events after the shift")
        lines.append(f"  HAIL HR@10 (last 1000): before {_num(hr['before'])}, lowest after {_num(hr['lowest_after'])}"
                     f", at the swap {_num(hr['at_swap'])}, end {_num(hr['end'])}")
    return "\n".join(lines)
