"""The model's window of a user's stored sequence: the last ``max_len`` items, or a strided window.

With ``stride`` 0 the model reads the last ``max_len`` items, so once a user has that many every
event slides the window and a cached encoder state (:mod:`models.incremental`) is re-encoded.
With ``stride`` N > 0 (``HAILSTREAM_WINDOW_STRIDE``) the window starts at a multiple of N and moves
only when it would exceed ``max_len``: it holds ``max_len - N + 1`` to ``max_len`` items and
extends the previous one by an item N - 1 events in N (:func:`models.padding.window_start`, the
same window offline). The start is kept in the user's state (``"w"``, an index into the stored
items); a state written without one starts at the last ``max_len`` items.

>>> state, seen = None, []
>>> for item in "abcdefg":
...     items, w = extend(state, item, keep=6, max_len=4, stride=2)
...     state = {"items": items, "w": w}
...     seen.append("".join(items[w:]))
>>> " ".join(seen)
'a ab abc abcd cde cdef efg'
"""

from __future__ import annotations

from typing import Any


def extend(state: dict[str, Any] | None, item: str, keep: int, max_len: int, stride: int) -> tuple[list[str], int]:
    """``(items, w)`` after ``item`` joins the state's sequence: the last ``keep`` items (what the
    table stores) and where the model's window starts in them (0 when ``stride`` is 0: the
    caller then cuts the last ``max_len``)."""
    items = list(state["items"]) if state else []
    start = _start(state, items, max_len) if stride else 0
    items.append(item)
    if stride:
        while len(items) - start > max_len:
            start += min(stride, max_len)
    if len(items) > keep:
        start = max(0, start - (len(items) - keep))
        del items[: len(items) - keep]
    return items, start


def model_len(recommender: Any, default: int) -> int:
    """The live model's window (its ``max_len``), at most ``default`` (the stored sequence)."""
    live = getattr(recommender, "live", None)
    n = getattr(getattr(getattr(live, "model", None), "config", None), "max_len", None)
    return min(int(n), default) if n else default


def _start(state: dict[str, Any] | None, items: list[str], max_len: int) -> int:
    w = state.get("w") if state else None
    return max(0, len(items) - max_len) if w is None else min(int(w), len(items))
