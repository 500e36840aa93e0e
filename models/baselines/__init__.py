"""Non-neural baselines that every results table carries (DESIGN §4), River-shaped: one module per
baseline (``base`` holds the shared :class:`Baseline`); everything is re-exported here.

Each baseline learns from ordered events with ``learn_one(user, item)``, or from a split with
``fit(split)``; scores every item for a batch (``scores``, a :class:`models.evaluate.Scorer`), and
gives a fast top-k for one user (``predict_one``, used per event by the stream worker). Items are
indices of the split's (growable) vocabulary; ``n_rows`` grows on demand as new items arrive.
Ranking is always full (every item gets a score): popularity breaks ties and fills in, and the
remaining ties go to the lower item index, as in :mod:`models.metrics`.

``predict_one`` never builds that full row for Popularity, Markov and UserFrequency: their rows
are "evidence on a few items, popularity below", so it ranks the evidence items and fills up from
an all-time popularity order that :class:`RankedItems` keeps sorted incrementally (one binary
search and one list shift per changed count). The answer equals ranking the full row
(:meth:`Baseline.predict_one_full`, tested on real events); NearestDistance still ranks a row.

- :class:`Popularity` — global counts, or counts over the most recent ``window`` events.
- :class:`Markov` — first-order item -> next-item transition counts of the same user.
- :class:`CoOccurrence` — items near the user's latest items (a few steps, both ways) in anyone's sequence.
- :class:`UserFrequency` — the user's own most frequent items, then most recent, then popular.
- :class:`NearestDistance` — POIs nearest (haversine) to the last check-in (POI data only).
- :class:`DecayedFrequency` — the user's visits weighted 0.5^(age / half-life) (DESIGN §4).

>>> m = Markov()
>>> for user, item in [("u", 1), ("u", 2), ("v", 1), ("v", 2), ("v", 3), ("u", 1)]:
...     m.learn_one(user, item)
>>> m.predict_one("u", [3, 1], k=3)   # after 1: 2 (twice); then popularity: 1 (3x) before 3 (1x)
[2, 1, 3]
>>> UserFrequency().fit_events([("u", 3), ("v", 2), ("v", 2)]).predict_one("x", [1, 3, 1, 4], k=4)
[1, 4, 3, 2]
"""

from __future__ import annotations

from models.baselines.base import Baseline, History, RankedItems, training_events
from models.baselines.cooccurrence import CoOccurrence
from models.baselines.decayed import DecayedFrequency, choose_half_life
from models.baselines.markov import Markov
from models.baselines.nearest import EARTH_RADIUS_KM, NearestDistance, haversine_km
from models.baselines.popularity import Popularity
from models.baselines.user_frequency import UserFrequency
from models.splits import SequenceSplit

__all__ = [
    "EARTH_RADIUS_KM", "Baseline", "CoOccurrence", "DecayedFrequency", "History", "Markov", "NearestDistance", "Popularity",
    "RankedItems", "UserFrequency", "choose_half_life", "default_baselines", "haversine_km", "training_events",
]


def default_baselines(split: SequenceSplit, popularity_window: int | None = None) -> dict[str, Baseline]:
    """The baselines of DESIGN §4 for this split (unfitted), by display name; NearestDistance only
    when the split has item coordinates, a windowed popularity only when ``popularity_window``."""
    out: dict[str, Baseline] = {"popularity": Popularity()}
    if popularity_window is not None:
        out[f"popularity@{popularity_window}"] = Popularity(window=popularity_window)
    out["markov"] = Markov()
    out["co-occurrence"] = CoOccurrence()
    out["user-frequency"] = UserFrequency()
    if split.item_coords is not None:
        out["nearest-distance"] = NearestDistance(split.item_coords)
    return out
