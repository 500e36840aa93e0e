"""One decision rule for "is version A better than version B on the same events?", used twice:
by the trainer's validation gate (candidate vs live on the held-out slice) and by the worker's
post-swap guard (new vs previous version on the events after a swap).

Both versions are scored on the *same* events, so the comparison is paired: per event the
difference ``d_i = metric_A(i) - metric_B(i)`` (e.g. NDCG@10 of each version's top-k for that
event). :func:`lower_bound` is the one-sided lower confidence bound of the mean difference
(normal approximation, ``mean - z * sd / sqrt(n)``). :func:`compare` says yes only when

- at least ``min_events`` events were scored (a tiny slice proves nothing), and
- the lower bound exceeds ``-tolerance``: with ``tolerance=0`` A must be *better* than B with the
  given confidence (a tie, or a difference within the noise, is a no); with ``tolerance > 0`` A
  may be worse by up to ``tolerance`` (absolute units of the metric) and still pass.

With ``confidence=0.95`` and two equally good versions, :func:`compare` says yes in at most ~5%
of the slices (the false-promotion rate of the gate), whatever the slice size.

>>> tie = compare(np.zeros(500), np.zeros(500))
>>> tie.ok, tie.reason
(False, 'not better: mean difference +0.0000, lower bound +0.0000 <= -0.0000')
>>> rng = np.random.default_rng(0)
>>> live = rng.uniform(0, 1, 400) < 0.30                     # 30% hits
>>> better = live | (rng.uniform(0, 1, 400) < 0.15)          # the same hits, and more
>>> compare(better.astype(float), live.astype(float)).ok
True
>>> compare(better[:50].astype(float), live[:50].astype(float), min_events=200).reason
'too few scored events: 50 < 200'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from stream.errors import StreamError


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: ``ok`` (A passes), ``reason`` (why, in words), ``n``
    (events scored), ``mean_a``/``mean_b`` (each version's mean metric), ``diff`` (mean of A - B)
    and ``lower`` (its one-sided lower confidence bound; -inf below ``min_events``)."""

    ok: bool
    reason: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    lower: float

    def to_dict(self) -> dict[str, float | int | bool | str]:
        return dict(self.__dict__)


def z_value(confidence: float) -> float:
    """The one-sided normal quantile for ``confidence`` (0.95 -> 1.645).

    >>> round(z_value(0.95), 3), round(z_value(0.5), 3)
    (1.645, 0.0)
    """
    if not 0.5 <= confidence < 1:
        raise StreamError(f"confidence must be in [0.5, 1), not {confidence!r}")
    return NormalDist().inv_cdf(confidence)


def lower_bound(diff: np.ndarray, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of the mean of ``diff`` [n] (paired differences).

    >>> round(lower_bound(np.array([0.1, 0.3, 0.2, 0.2]), 0.95), 4)   # mean 0.2, sd 0.0816, n 4
    0.1328
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return -math.inf
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return float(d.mean()) - z_value(confidence) * sd / math.sqrt(d.size)


def compare(
    a: np.ndarray,
    b: np.ndarray,
    *,
    min_events: int = 200,
    tolerance: float = 0.0,
    confidence: float = 0.95,
) -> Comparison:
    """Whether A passes against B on paired per-event metric values ``a``, ``b`` [n]; see the
    module docstring."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise StreamError(f"paired scores need two 1-d arrays of one length, not {a.shape} and {b.shape}")
    if tolerance < 0:
        raise StreamError(f"tolerance must be >= 0 (how much worse A may be), not {tolerance!r}")
    n = int(a.size)
    mean_a = float(a.mean()) if n else 0.0
    mean_b = float(b.mean()) if n else 0.0
    if n < max(1, min_events):
        return Comparison(False, f"too few scored events: {n} < {max(1, min_events)}", n, mean_a, mean_b,
                          mean_a - mean_b, -math.inf)
    diff = a - b
    low = lower_bound(diff, confidence)
    ok = low > -tolerance
    verdict = "passes" if ok else "not better"
    reason = f"{verdict}: mean difference {diff.mean():+.4f}, lower bound {low:+.4f} {'>' if ok else '<='} {-tolerance:+.4f}"
    return Comparison(ok, reason, n, mean_a, mean_b, float(diff.mean()), low)
