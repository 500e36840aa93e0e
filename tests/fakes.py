"""Stand-ins shared by the tests (the lifecycle tests, the sink tests)."""

from __future__ import annotations

from typing import Any

import torch

from models.hail import HAIL


def scrambling_fine_tune(model: HAIL, *args: object, **kw: object) -> dict[str, float]:
    """A ``models.trainer.fine_tune`` replacement that makes the candidate worse on purpose: it
    shuffles every peer's item table (seeded), and reports a plausible loss."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for peer in model.networks:
            w = peer.item_emb.weight
            w[1:] = w[1:][torch.randperm(w.shape[0] - 1, generator=gen)]
    return {"steps": 1.0, "loss": 9.0, "first_loss": 9.0, "last_loss": 9.0, "seconds": 0.0}


class ListSink:
    """A list-backed :class:`stream.worker.sink.Sink`: states in ``states``, sent messages in
    ``sent`` and every call, in order, in ``calls`` (``("send", topic)``, ``("state", user)``,
    ``("settle",)``); :meth:`settle` has nothing to wait for."""

    def __init__(self) -> None:
        self.states: dict[str, Any] = {}
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.calls: list[tuple[str, ...]] = []

    def get_state(self, user: str) -> Any:
        return self.states.get(user)

    def put_state(self, user: str, partition: int, value: Any) -> None:
        self.states[user] = value
        self.calls.append(("state", user))

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))
        self.calls.append(("send", topic))

    async def settle(self) -> None:
        self.calls.append(("settle",))
