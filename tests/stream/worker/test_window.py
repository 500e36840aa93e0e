"""The worker's strided window (stream.worker.window.extend) is the offline one (models.padding.window_start),
so bench/window_stride.py measures the accuracy the worker serves."""

from __future__ import annotations

import pytest

from models.errors import ModelsError
from models.padding import window_start
from stream.worker.window import extend


@pytest.mark.parametrize("max_len", [1, 4, 7])
@pytest.mark.parametrize("extra", [0, 3, 20])  # the stored sequence keeps max_len + extra items
def test_extend_serves_the_window_that_window_start_cuts_offline(max_len: int, extra: int) -> None:
    keep = max_len + extra
    for stride in range(max_len + 1):
        state, history = None, []
        for n in range(3 * keep + 5):
            item = f"i{n}"
            history.append(item)
            items, w = extend(state, item, keep=keep, max_len=max_len, stride=stride)
            state = {"items": items, "w": w}
            served = items[w:][-max_len:]  # stride 0: w is 0 and the caller cuts the last max_len
            offline = history[window_start(len(history), max_len, stride):]
            assert served == offline, (stride, n)
            assert items == history[-keep:]


def test_a_stride_longer_than_the_window_is_refused_offline() -> None:
    with pytest.raises(ModelsError, match="stride must be in 0..max_len"):
        window_start(10, max_len=4, stride=5)
