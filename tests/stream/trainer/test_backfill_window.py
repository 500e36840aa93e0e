"""The trainer's consumer (:meth:`stream.trainer.runtime.TrainerRuntime._consume`) with backfill
events: they fill the window like the warm-up, without counting towards a fine-tune."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream.records import Interaction
from stream.settings import Settings
from stream.trainer.runtime import TrainerRuntime


class _Learner:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []

    def learn_one(self, user: str, item: str, ts: float = 0.0, count: bool = True) -> Any:
        self.seen.append((user, item, count))


def test_backfill_events_enter_the_window_uncounted() -> None:
    learner = _Learner()
    rt = TrainerRuntime(Settings(), learner)  # type: ignore[arg-type]
    values = [Interaction("u", "a", 1.0, backfill=True).to_json(), Interaction("u", "b", 2.0).to_json(), b"{bad"]
    rt._consume([SimpleNamespace(value=v, offset=i) for i, v in enumerate(values)], "tp")
    assert learner.seen == [("u", "a", False), ("u", "b", True)]
    assert (rt.warm_events, rt.events, rt.invalid) == (1, 1, 1)
