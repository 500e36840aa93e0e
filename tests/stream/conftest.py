"""Stream tests run tiny models: torch uses one thread in each test (more only add contention on a
shared 2-core machine), restored afterwards; no test module sets it at import."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
