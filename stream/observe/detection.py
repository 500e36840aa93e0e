"""What a drift detector reports: a :class:`Detection` when it fires, and its :class:`DriftState`
at any time (for metrics and logs). Shared by :mod:`stream.observe.drift` and
:mod:`stream.observe.input_drift`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from stream.errors import StreamError

Direction = Literal["down", "up", "both"]
DIRECTIONS = ("down", "up", "both")
#: Detections kept per detector for inspection (the total is counted without a limit).
HISTORY = 256


@dataclass(frozen=True)
class Detection:
    """One detected drift.

    ``at_event`` is the 1-based count of events the detector had seen when it fired; ``value`` is
    the statistic after the change and ``baseline`` what it is compared with: for accuracy, the
    hit-rate estimate after and before; for the unseen share, the recent and reference shares; for
    popularity, the Jensen-Shannon divergence and the threshold it crossed.
    """

    detector: str
    at_event: int
    value: float
    baseline: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"drift detected by {self.detector} at event {self.at_event}: {self.value:.4f} (baseline {self.baseline:.4f})"


@dataclass(frozen=True)
class DriftState:
    """A detector's state for metrics and logs: ``statistic`` (accuracy: estimated hit rate;
    unseen: recent unseen share; popularity: last JS divergence), ``window`` (events the statistic
    covers) and ``detections`` (total so far)."""

    detector: str
    statistic: float
    window: int
    detections: int


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise StreamError(f"drift direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
