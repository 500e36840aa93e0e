"""What every benchmark records besides its numbers, and how it writes them: the machine, the load,
the command and the date (:func:`run_header`), a load sampler for long runs (:class:`LoadSampler`), a
process's resident memory (:func:`rss_mb`), and the results as ``<out>.json`` plus ``<out>.md`` (:func:`write_results`).

Imported by the scripts as ``from _common import ...`` (``python bench/<script>.py`` puts ``bench/``
on the path).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; empty where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of process ``pid`` (default: this one) in MB, from ``/proc/<pid>/statm``
    (Linux); raises ``OSError`` when the process is gone."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def machine_info() -> dict[str, Any]:
    """The machine as data: cores, CPU model, Python, platform, torch."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                            "platform": platform.platform(), "node": platform.node(), "arch": platform.machine()}
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
    return info


def machine(extra: str = "") -> str:
    """The machine in one line, for a result's ``machine`` field."""
    m = machine_info()
    line = f"{m['node']} {m['arch']}, {m['nproc']} CPUs, {m['cpu'] or 'unknown CPU'}, {m['platform']}"
    if "torch" in m:
        line += f", torch {m['torch']}"
    return f"{line}, {extra}" if extra else line


def command(argv: Sequence[str] | None = None) -> str:
    """How the script was run: ``python bench/x.py ARGS`` (or ``main(ARGS)`` when called in-process)."""
    if argv is not None:
        return "main(" + " ".join(argv) + ")"
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def run_header(argv: Sequence[str] | None = None, machine_extra: str = "") -> dict[str, Any]:
    """The fields every result starts with: ``date`` (UTC), ``machine``, ``command`` and
    ``loadavg_start`` (1, 5 and 15 minutes: a busy machine makes timings incomparable)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(machine_extra),
        "command": command(argv),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(out: Path | str, results: dict[str, Any], markdown: Callable[[dict[str, Any]], str] | None = None,
                  *, echo: bool = True) -> Path:
    """Write ``results`` to ``out`` with suffix ``.json`` and, given ``markdown``, its rendering to
    ``.md`` (printed too, unless ``echo`` is false); returns the JSON path."""
    path = Path(out).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    if markdown is not None:
        text = markdown(results)
        path.with_suffix(".md").write_text(text)
        if echo:
            print(text)
    return path


class LoadSampler:
    """Samples the 1-minute load average every few seconds in a background thread."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [0.0]
        return {"min": min(s), "mean": sum(s) / len(s), "max": max(s)}
