"""The trainer's window: size/span eviction, per-user context, held-out slice, reservoir."""

from __future__ import annotations

import pytest

from stream.errors import StreamError
from stream.trainer.window import TrainingWindow


def test_size_bound_and_context() -> None:
    w = TrainingWindow(size=4, max_len=3)
    for n in range(10):
        w.add("u", f"i{n}")
    assert len(w) == 4 and w.added == 10
    # context keeps the last max_len items that left the window
    assert w.sequences() == [["i3", "i4", "i5", "i6", "i7", "i8", "i9"]]


def test_span_bound() -> None:
    w = TrainingWindow(size=100, span=10.0)
    for t in range(30):
        w.add("u", f"i{t}", ts=float(t))
    assert len(w) == 11  # ts 19..29
    assert w.newest_ts == 29.0


def test_holdout_histories_are_test_then_learn() -> None:
    w = TrainingWindow(size=10, max_len=3)
    events = [("u", "a"), ("v", "x"), ("u", "b"), ("u", "c"), ("v", "y"), ("u", "d")]
    for user, item in events:
        w.add(user, item)
    assert w.holdout(3) == [(["a", "b"], "c"), (["x"], "y"), (["a", "b", "c"], "d")]
    assert w.sequences(exclude_newest=3) == [["a", "b"], ["x"]]
    assert w.holdout(100)[0] == ([], "a")


def test_reservoir_is_bounded_and_seeded() -> None:
    def fill(seed: int) -> list[list[str]]:
        w = TrainingWindow(size=5, max_len=2, reservoir=8, seed=seed)
        for n in range(500):
            w.add(f"u{n % 7}", f"i{n}")
        return w.reservoir_rows()

    rows = fill(0)
    assert len(rows) == 8 and all(2 <= len(r) <= 3 for r in rows)
    assert rows == fill(0) and rows != fill(1)


def test_users_are_bounded() -> None:
    w = TrainingWindow(size=3, max_users=10)
    for n in range(100):
        w.add(f"u{n}", "a")
    assert w.users == 10


def test_bad_settings() -> None:
    with pytest.raises(StreamError):
        TrainingWindow(size=0)
    with pytest.raises(StreamError):
        TrainingWindow(span=0.0)


def test_the_held_out_slice_does_not_depend_on_the_partition_interleaving() -> None:
    # Two users on two partitions; a trainer may read them in any interleaving (each user's own
    # order is kept). The held-out slice is the newest by event time either way.
    u = [("u", f"a{n}", float(2 * n)) for n in range(10)]
    v = [("v", f"b{n}", float(2 * n + 1)) for n in range(10)]
    slices = []
    for order in (u + v, v + u, [e for pair in zip(u, v, strict=True) for e in pair]):
        w = TrainingWindow(size=100, max_len=20)
        for user, item, ts in order:
            w.add(user, item, ts)
        slices.append((sorted(w.holdout(4), key=lambda p: p[1]), sorted(map(tuple, w.sequences(exclude_newest=4)))))
    assert slices[0] == slices[1] == slices[2]
    held = {item for _, item in slices[0][0]}
    assert held == {"a8", "b8", "a9", "b9"}
    assert all(not (set(seq) & held) for seq in slices[0][1])
