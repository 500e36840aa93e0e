"""Data drift on the input item stream (:class:`InputDrift`): the unseen-item share and the item
popularity compared with a reference window (:func:`js_divergence`), before any accuracy is lost.
Deterministic (no randomness, so no seed); :class:`stream.observe.drift.DriftMonitor` feeds it."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np

from stream.errors import StreamError
from stream.observe.detection import HISTORY, Detection, DriftState

INPUT_SIGNALS = ("unseen", "popularity")


def js_divergence(p: Mapping[Any, float], q: Mapping[Any, float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two count or probability maps.

    >>> js_divergence({"a": 1}, {"a": 5})
    0.0
    >>> js_divergence({"a": 1}, {"b": 1})
    1.0
    >>> round(js_divergence({"a": 1, "b": 1}, {"a": 1}), 4)
    0.3113
    """
    keys = list(set(p) | set(q))
    a = np.fromiter((p.get(k, 0.0) for k in keys), dtype=np.float64, count=len(keys))
    b = np.fromiter((q.get(k, 0.0) for k in keys), dtype=np.float64, count=len(keys))
    sa, sb = a.sum(), b.sum()
    if sa <= 0 or sb <= 0:
        raise StreamError("js_divergence needs two non-empty distributions")
    a, b = a / sa, b / sb
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    # Clamp float residue so that identical distributions read exactly 0.
    return min(1.0, max(0.0, 0.5 * kl(a) + 0.5 * kl(b)))


class InputDrift:
    """Data drift on the input item stream, compared with a reference window.

    The first ``reference`` events form the reference; after that, every ``check_every`` events the
    last ``window`` events are compared with it on two signals (``signals`` picks them):

    - ``unseen``: the share of events whose item the live model does not know (``known=False``)
      rose by more than ``unseen_threshold`` (absolute) over the reference share.
    - ``popularity``: the Jensen-Shannon divergence between the recent and reference item counts
      exceeds the threshold. Two finite samples of the *same* distribution already differ (much so
      with thousands of items), so unless ``js_threshold`` is given the threshold is calibrated on
      the reference itself: the divergence between its two halves (samples half as large, so a
      conservative noise level) plus ``js_margin``.

    Two guards against crying wolf on a stationary stream (the whole Foursquare NYC stream
    replayed in order raised one popularity "drift" at 0.7207 against a threshold of 0.7139): a
    popularity detection needs the divergence to exceed the threshold by at least
    ``min_effect`` (relative: 0.05 = 5% above it), and either signal must stay over its
    threshold for ``persistence`` checks in a row (a passing spike does not count; a real shift
    stays). Each signal counts its own streak.

    After a detection the reference is rebuilt from the events that follow, so one shift fires
    once per signal and the new regime becomes normal.

    >>> d = InputDrift(reference=100, window=100, check_every=10, persistence=1)
    >>> stream = [(f"a{i % 10}", True) for i in range(300)] + [(f"b{i % 10}", False) for i in range(100)]
    >>> found = [x for x in (d.update(item, known) for item, known in stream) if x]
    >>> [(x.detector, x.at_event) for x in found]
    [('input_unseen', 320)]
    >>> p = InputDrift(reference=100, window=100, check_every=10, signals=["popularity"], min_effect=0.0)
    >>> [str(x) for x in (p.update(item, known) for item, known in stream) if x]   # 3 checks in a row
    ['drift detected by input_popularity at event 340: 0.2365 (baseline 0.1000)']
    """

    def __init__(
        self,
        reference: int = 2000,
        window: int = 2000,
        check_every: int = 100,
        unseen_threshold: float = 0.1,
        js_threshold: float | None = None,
        js_margin: float = 0.1,
        signals: Iterable[str] = INPUT_SIGNALS,
        name: str = "input",
        min_effect: float = 0.05,
        persistence: int = 3,
    ) -> None:
        self.signals = tuple(signals)
        bad = [s for s in self.signals if s not in INPUT_SIGNALS]
        if bad or not self.signals:
            raise StreamError(f"input drift signals must be a non-empty subset of {INPUT_SIGNALS}, not {self.signals}")
        if reference < 2 or window < 1 or check_every < 1:
            raise StreamError(
                f"input drift needs reference >= 2, window >= 1, check_every >= 1 events; "
                f"got reference={reference}, window={window}, check_every={check_every}"
            )
        if not 0 < unseen_threshold <= 1:
            raise StreamError(f"unseen_threshold is an absolute share in (0, 1], not {unseen_threshold!r}")
        if js_threshold is not None and not 0 < js_threshold <= 1:
            raise StreamError(f"js_threshold is a divergence in (0, 1], not {js_threshold!r}")
        if min_effect < 0 or persistence < 1:
            raise StreamError(f"min_effect must be >= 0 and persistence >= 1, not {min_effect!r}, {persistence!r}")
        self.min_effect = float(min_effect)
        self.persistence = int(persistence)
        self.reference_size = int(reference)
        self.window = int(window)
        self.check_every = int(check_every)
        self.unseen_threshold = float(unseen_threshold)
        self.js_threshold = js_threshold
        self.js_margin = float(js_margin)
        self.name = name
        self._n = 0
        self._detections = {s: 0 for s in INPUT_SIGNALS}
        self._history: deque[Detection] = deque(maxlen=HISTORY)
        self._last_js = 0.0
        self._threshold = 1.0
        self._start_reference()

    def _start_reference(self) -> None:
        self._ref_items: list[Hashable] = []
        self._ref_unseen = 0
        self._ref_counts: Counter[Hashable] | None = None
        self._recent: deque[tuple[Hashable, bool]] = deque()
        self._recent_counts: Counter[Hashable] = Counter()
        self._recent_unseen = 0
        self._since_check = 0
        self._streak = {sig: 0 for sig in INPUT_SIGNALS}  # checks in a row over the threshold

    @property
    def ready(self) -> bool:
        """Whether the reference window is complete (no detection before that)."""
        return self._ref_counts is not None

    def update(self, item: Hashable, known: bool) -> Detection | None:
        """Feed one event: its item id and whether the live model knows that item. Returns the
        first :class:`Detection` of this check (unseen share first), or None."""
        self._n += 1
        if self._ref_counts is None:
            self._ref_items.append(item)
            self._ref_unseen += not known
            if len(self._ref_items) == self.reference_size:
                self._freeze_reference()
            return None
        self._recent.append((item, known))
        self._recent_counts[item] += 1
        self._recent_unseen += not known
        if len(self._recent) > self.window:
            old, old_known = self._recent.popleft()
            self._recent_counts[old] -= 1
            if not self._recent_counts[old]:
                del self._recent_counts[old]
            self._recent_unseen -= not old_known
        self._since_check += 1
        if len(self._recent) < self.window or self._since_check < self.check_every:
            return None
        self._since_check = 0
        return self._check()

    def _freeze_reference(self) -> None:
        items = self._ref_items
        self._ref_counts = Counter(items)
        half = len(items) // 2
        if self.js_threshold is not None:
            self._threshold = self.js_threshold
        else:
            noise = js_divergence(Counter(items[:half]), Counter(items[half:]))
            self._threshold = min(1.0, noise + self.js_margin)
        self._ref_items = []

    @property
    def reference_unseen_share(self) -> float:
        n = self.reference_size if self.ready else len(self._ref_items)
        return self._ref_unseen / n if n else 0.0

    @property
    def unseen_share(self) -> float:
        """Share of unknown items in the recent window (the reference while it fills)."""
        return self._recent_unseen / len(self._recent) if self._recent else self.reference_unseen_share

    @property
    def popularity_divergence(self) -> float:
        """JS divergence of the last check (0 before the first)."""
        return self._last_js

    @property
    def popularity_threshold(self) -> float:
        """The JS divergence above which popularity drift is reported (1.0 until calibrated)."""
        return self._threshold

    def _over(self, signal: str, over: bool) -> bool:
        self._streak[signal] = self._streak[signal] + 1 if over else 0
        return self._streak[signal] >= self.persistence

    def _check(self) -> Detection | None:
        found: Detection | None = None
        if "unseen" in self.signals:
            share, ref = self.unseen_share, self.reference_unseen_share
            if self._over("unseen", share - ref > self.unseen_threshold):
                found = Detection(f"{self.name}_unseen", self._n, share, ref)
        if "popularity" in self.signals:
            assert self._ref_counts is not None
            self._last_js = js_divergence(self._recent_counts, self._ref_counts)
            over = self._last_js > self._threshold * (1 + self.min_effect)
            if self._over("popularity", over) and found is None:
                found = Detection(f"{self.name}_popularity", self._n, self._last_js, self._threshold)
        if found is None:
            return None
        self._detections[found.detector.rsplit("_", 1)[1]] += 1
        self._history.append(found)
        self._start_reference()
        return found

    @property
    def n(self) -> int:
        return self._n

    @property
    def n_detections(self) -> int:
        return sum(self._detections.values())

    @property
    def detections(self) -> list[Detection]:
        """The most recent detections (up to 256), oldest first."""
        return list(self._history)

    def states(self) -> list[DriftState]:
        """One state per enabled signal (detector names ``<name>_unseen``, ``<name>_popularity``)."""
        out = []
        if "unseen" in self.signals:
            out.append(DriftState(f"{self.name}_unseen", self.unseen_share, len(self._recent), self._detections["unseen"]))
        if "popularity" in self.signals:
            out.append(
                DriftState(f"{self.name}_popularity", self._last_js, len(self._recent), self._detections["popularity"])
            )
        return out

    def __repr__(self) -> str:
        return (
            f"InputDrift(n={self._n}, ready={self.ready}, unseen={self.unseen_share:.3f}, "
            f"js={self._last_js:.3f}/{self._threshold:.3f}, detections={self.n_detections})"
        )
