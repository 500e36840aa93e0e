"""Interaction data sets: the bundled ones and the formats users bring.

Every loader returns :class:`Interactions`, events in timestamp order with ties kept in source order
(DESIGN §4). Ids are strings, exactly as they will travel on the wire.

- ``foursquare-nyc``: ``<data_dir>/foursquare_nyc/checkins.csv.gz`` (with lat/lon and blocks T0..T5)
- ``amazon-beauty``: ``<data_dir>/amazon_beauty/Beauty_{item,time}_org_rank.txt``
- a generic CSV/TSV with a header naming user, item and timestamp columns
- a RecBole atomic ``.inter`` file (``user_id:token  item_id:token  timestamp:float``)

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "x.csv")
>>> _ = open(p, "w").write("user,item,timestamp\\nu1,a,2\\nu2,b,1\\nu1,c,2\\n")
>>> ev = load_dataset(p)
>>> ev.users.tolist(), ev.items.tolist(), ev.ts.tolist()
(['u2', 'u1', 'u1'], ['b', 'a', 'c'], [1.0, 2.0, 2.0])
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import DataError

BUNDLED = {"foursquare-nyc", "amazon-beauty"}
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

_USER_COLS = ("user_id", "user", "userid", "user_idx", "uid")
_ITEM_COLS = ("item_id", "item", "itemid", "poi_idx", "poi", "poi_id", "venue_id", "iid")
_TS_COLS = ("timestamp", "ts", "time", "unix_s", "unix_time", "datetime")


@dataclass(frozen=True)
class Interactions:
    """Events sorted by time (stable: ties keep source order). All arrays have length N.

    ``users``/``items`` are str object arrays; ``ts`` float64 unix seconds; ``lat``/``lon`` float64
    or None; ``block`` str array (e.g. "T0".."T5") or None.
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    block: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray | slice) -> Interactions:
        """A subset (rows in the given order), e.g. ``ev.take(ev.block == "T0")``."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Interactions(
            self.name, self.users[index], self.items[index], self.ts[index],
            pick(self.lat), pick(self.lon), pick(self.block),
        )

    def head(self, n: int) -> Interactions:
        """The first ``n`` events in time order."""
        return self.take(slice(0, n))

    @property
    def n_users(self) -> int:
        return len(set(self.users.tolist()))

    @property
    def n_items(self) -> int:
        return len(set(self.items.tolist()))


def _sorted(name: str, users: list[str], items: list[str], ts: list[float], **extra: list | None) -> Interactions:
    if not users:
        raise DataError(f"data set {name!r} has no interactions")
    t = np.asarray(ts, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    cols = {k: None if v is None else np.asarray(v)[order] for k, v in extra.items()}
    return Interactions(
        name,
        np.asarray(users, dtype=object)[order],
        np.asarray(items, dtype=object)[order],
        t[order],
        **cols,
    )


def _require(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path} not found. {hint}")
    return path


def load_foursquare_nyc(data_dir: Path = DEFAULT_DATA_DIR) -> Interactions:
    """Foursquare NYC check-ins with coordinates and chronological blocks."""
    path = _require(
        Path(data_dir) / "foursquare_nyc" / "checkins.csv.gz",
        "Pass --data-dir pointing at the folder that holds foursquare_nyc/ (the repository's ../shared/data).",
    )
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    lat: list[float] = []
    lon: list[float] = []
    block: list[str] = []
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                users.append(row["user_idx"])
                items.append(row["poi_idx"])
                ts.append(float(row["unix_s"]))
                lat.append(float(row["lat"]))
                lon.append(float(row["lon"]))
                block.append(row["block"])
        except (KeyError, ValueError, TypeError) as e:
            raise DataError(f"{path}: malformed row {reader.line_num}: {e!r}") from e
    return _sorted("foursquare-nyc", users, items, ts, lat=lat, lon=lon, block=block)


def load_amazon_beauty(data_dir: Path = DEFAULT_DATA_DIR) -> Interactions:
    """Amazon Beauty 5-core: one line per user, items and times aligned position by position."""
    hint = "Pass --data-dir pointing at the folder that holds amazon_beauty/ (the repository's ../shared/data)."
    base = Path(data_dir) / "amazon_beauty"
    item_path = _require(base / "Beauty_item_org_rank.txt", hint)
    time_path = _require(base / "Beauty_time_org_rank.txt", hint)
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    with open(item_path) as fi, open(time_path) as ft:
        for lineno, (li, lt) in enumerate(zip(fi, ft, strict=True), start=1):
            pi, pt = li.split(), lt.split()
            if not pi:
                continue
            if pi[0] != pt[0] or len(pi) != len(pt):
                raise DataError(f"{item_path}:{lineno}: item and time lines do not align (user {pi[0]!r})")
            try:
                times = [float(x) for x in pt[1:]]
            except ValueError as e:
                raise DataError(f"{time_path}:{lineno}: non-numeric timestamp: {e}") from e
            users.extend([pi[0]] * (len(pi) - 1))
            items.extend(pi[1:])
            ts.extend(times)
    return _sorted("amazon-beauty", users, items, ts)


def _pick(header: list[str], names: tuple[str, ...], what: str, path: Path) -> int:
    lowered = [h.strip().lower().split(":")[0] for h in header]
    for n in names:
        if n in lowered:
            return lowered.index(n)
    raise DataError(
        f"{path}: no {what} column in header {header!r}; name it one of {', '.join(names)}"
    )


def load_table(path: Path | str) -> Interactions:
    """A CSV/TSV (optionally .gz) with a header, or a RecBole ``.inter`` file (tab-separated,
    ``name:type`` headers). Needs user, item and timestamp columns; lat/lon are kept if present."""
    path = Path(path)
    _require(path, "Check the path, or use --dataset foursquare-nyc / amazon-beauty.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        text = f.read()
    first = text.split("\n", 1)[0]
    delim = "\t" if "\t" in first or path.suffix == ".inter" else ","
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path} is empty; expected a header row with user, item and timestamp columns") from None
    ui = _pick(header, _USER_COLS, "user", path)
    ii = _pick(header, _ITEM_COLS, "item", path)
    ti = _pick(header, _TS_COLS, "timestamp", path)
    lowered = [h.strip().lower().split(":")[0] for h in header]
    lai = lowered.index("lat") if "lat" in lowered else None
    loi = lowered.index("lon") if "lon" in lowered else None
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    lat: list[float] = []
    lon: list[float] = []
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            users.append(row[ui].strip())
            items.append(row[ii].strip())
            ts.append(float(row[ti]))
            if lai is not None and loi is not None:
                lat.append(float(row[lai]))
                lon.append(float(row[loi]))
        except (IndexError, ValueError) as e:
            raise DataError(f"{path}:{lineno}: malformed row {row!r}: {e}") from e
    has_geo = lai is not None and loi is not None
    return _sorted(path.name, users, items, ts, lat=lat if has_geo else None, lon=lon if has_geo else None)


def load_dataset(spec: str | Path, data_dir: Path | str | None = None) -> Interactions:
    """Load a bundled data set by name (``foursquare-nyc``, ``amazon-beauty``) or a file by path."""
    base = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if spec == "foursquare-nyc":
        return load_foursquare_nyc(base)
    if spec == "amazon-beauty":
        return load_amazon_beauty(base)
    path = Path(spec)
    if not path.exists():
        if path.suffix or len(path.parts) > 1:
            raise DataError(f"file not found: {str(spec)!r} (a data set file: CSV/TSV with a user,item,timestamp "
                            "header, or a RecBole .inter file)")
        raise DataError(
            f"unknown data set {str(spec)!r}: use foursquare-nyc, amazon-beauty, or the path of a "
            "CSV/TSV (user,item,timestamp header) or RecBole .inter file"
        )
    return load_table(path)
