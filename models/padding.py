"""The model input: histories cut to their last ``max_len`` items and left-padded with 0.

Left padding keeps the latest item at the last position, where every encoder reads its prediction.

>>> import numpy as np
>>> left_pad([np.array([1, 2, 3]), np.array([4])], 2).tolist()
[[2, 3], [0, 4]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def left_pad(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """The last ``max_len`` items of each history, left-padded with 0: LongTensor ``[B, max_len]``."""
    out = torch.zeros((len(histories), max_len), dtype=torch.long)
    for row, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-max_len:] if max_len > 0 else np.empty(0, np.int64)
        if tail.size:
            out[row, max_len - tail.size :] = torch.from_numpy(tail)
    return out
