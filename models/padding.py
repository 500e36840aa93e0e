"""The model input: histories cut to their last ``max_len`` items and left-padded with 0.

Left padding keeps the latest item at the last position, where every encoder reads its prediction.

>>> import numpy as np
>>> left_pad([np.array([1, 2, 3]), np.array([4])], 2).tolist()
[[2, 3], [0, 4]]

:func:`window_start` is the other way to cut a long history: a window that starts at a multiple
of ``stride`` and moves only when it would exceed ``max_len``, so it grows by one item per event
for ``stride`` events between two moves (what a cached encoder state needs; the worker's
``HAILSTREAM_WINDOW_STRIDE``).

>>> [window_start(n, max_len=4, stride=2) for n in range(1, 10)]
[0, 0, 0, 0, 2, 2, 4, 4, 6]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from models.errors import ModelsError


def left_pad(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """The last ``max_len`` items of each history, left-padded with 0: LongTensor ``[B, max_len]``."""
    out = torch.zeros((len(histories), max_len), dtype=torch.long)
    for row, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-max_len:] if max_len > 0 else np.empty(0, np.int64)
        if tail.size:
            out[row, max_len - tail.size :] = torch.from_numpy(tail)
    return out


def window_start(n: int, max_len: int, stride: int) -> int:
    """Where the model's window starts in a history of ``n`` items: 0 while ``n <= max_len``, then
    the smallest multiple of ``stride`` that leaves at most ``max_len`` items (so the window holds
    ``max_len - stride + 1`` to ``max_len`` items). ``stride`` 0 = the last ``max_len`` items."""
    if stride < 0 or stride > max_len:
        raise ModelsError(f"stride must be in 0..max_len ({max_len}), not {stride}")
    if n <= max_len:
        return 0
    if stride == 0:
        return n - max_len
    return -(-(n - max_len) // stride) * stride
