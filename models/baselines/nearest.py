"""POIs nearest (haversine) to the user's last check-in."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from models.baselines.base import Baseline, History
from models.errors import ModelsError
from models.splits import SequenceSplit

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) from one point to many (degrees); NaN where coordinates are NaN.

    >>> round(float(haversine_km(40.7128, -74.0060, np.array([40.7306]), np.array([-73.9352]))[0]), 2)
    6.29
    """
    p1, l1 = np.radians(lat), np.radians(lon)
    p2, l2 = np.radians(lats), np.radians(lons)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


class NearestDistance(Baseline):
    """POIs nearest to the user's last check-in (haversine; the POI itself first). Equal distances
    go to the more popular POI; POIs without coordinates come last, by popularity. With no last
    check-in (or one without coordinates) it falls back to popularity.

    ``item_coords`` is ``[rows, 2]`` (lat, lon in degrees, NaN = unknown), e.g.
    ``split.item_coords``; items learned later get coordinates from ``learn_one(..., lat, lon)``.
    """

    name = "nearest-distance"

    def __init__(self, item_coords: np.ndarray | None) -> None:
        if item_coords is None:
            raise ModelsError("NearestDistance needs item coordinates (POI data with lat/lon); this data set has none")
        coords = np.asarray(item_coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ModelsError(f"item_coords must be [rows, 2] (lat, lon), got shape {coords.shape}")
        self._initial_coords = coords.copy()
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._coords = self._initial_coords.copy()
        super()._grow(self._coords.shape[0])

    def _grow(self, rows: int) -> None:
        if rows > self._coords.shape[0]:
            self._coords = np.concatenate([self._coords, np.full((rows - self._coords.shape[0], 2), np.nan)])
        super()._grow(rows)

    def _on_fit(self, split: SequenceSplit) -> None:
        if split.item_coords is not None:
            theirs = np.asarray(split.item_coords, dtype=np.float64)
            self._grow(theirs.shape[0])
            known = ~np.isnan(theirs[:, 0])
            mine = self._coords[: theirs.shape[0]]
            fill = known & np.isnan(mine[:, 0])
            mine[fill] = theirs[fill]

    def _learn(self, user: Hashable, item: int, lat: float | None, lon: float | None) -> None:
        if lat is not None and lon is not None and np.isnan(self._coords[item, 0]):
            self._coords[item] = (lat, lon)

    def forget_item(self, item: int) -> None:
        item = int(item)
        if 1 <= item < self._coords.shape[0]:
            self._coords[item] = np.nan  # the next item on this index brings its own coordinates
        super().forget_item(item)

    def _score_rows(self, users: Sequence[Hashable], histories: Sequence[History | None]) -> np.ndarray:
        n = self.n_rows
        pop = self._pop_frac()
        rows = np.tile(pop, (len(users), 1))
        for r, (user, hist) in enumerate(zip(users, histories, strict=True)):
            last = self._last_item(user, hist)
            if last is None or np.isnan(self._coords[last, 0]):
                continue
            dist = haversine_km(self._coords[last, 0], self._coords[last, 1], self._coords[:, 0], self._coords[:, 1])
            dist = np.where(np.isnan(dist), np.inf, dist)
            # Rank by (distance, -popularity, index) and turn the rank into a score, so that the
            # evaluator's index tie-break never has to decide between equidistant POIs.
            order = np.lexsort((np.arange(n), -pop, dist))
            rows[r, order] = np.arange(n, 0, -1, dtype=np.float64)
        return rows

    def __repr__(self) -> str:
        return f"NearestDistance({int((~np.isnan(self._coords[:, 0])).sum())} located items)"
