"""``GET /users/<user_id>/recommendations``: a user's latest top-k, from the worker that owns the
user's partition (``hailstream worker --web``, Faust's web server on ``web_bind:web_port``).

What it serves is the prediction **last published** for the user (the same items, scores, model
version and ``produced_at`` as the user's newest record on the predictions topic), read from the
user's table state (``pred`` and ``last``, :mod:`stream.worker.batch`); it is never recomputed on
request, so the answer is what a consumer of the predictions topic saw, and it survives restarts
and rebalances with the changelogged table. A state written before ``last`` existed answers its
items with ``scores``, ``model_version`` and ``produced_at`` null.

Any worker answers: a request for a user another worker owns is forwarded to that worker (Faust's
table metadata says which worker holds which changelog partition; the partition is the Kafka
default partitioner's, murmur2 of the user id, as for the interactions topic) and its answer
passed back. 404 (JSON) for a user without a state or without a prediction yet; 503 while the
partition has no known owner (a rebalance) or the owner cannot be reached.

>>> recommendations_body("u", {"items": ["a"], "pred": ["b", "a"], "last": {"event_id": "e1",
...     "scores": [-0.1, -0.2], "model_version": "v2", "produced_at": 5.0}})
{'user_id': 'u', 'items': ['b', 'a'], 'scores': [-0.1, -0.2], 'model_version': 'v2', 'produced_at': 5.0, 'event_id': 'e1'}
>>> recommendations_body("u", {"items": ["a"], "pred": None}) is None
True
>>> [user_partition(f"u{i}", 4) for i in range(5)], user_partition("u1", 1)
([2, 0, 2, 2, 2], 0)
"""

from __future__ import annotations

import logging
from typing import Any

from stream.kafka.topics import changelog_topic
from stream.settings import Settings
from stream.worker.batch import UserState

log = logging.getLogger(__name__)

ROUTE = "/users/{user_id}/recommendations"
#: Set on a forwarded request: the receiver answers from its own table, never forwards again.
FORWARDED = "X-Hailstream-Forwarded"
#: On every answer from a table: the web URL of the worker that owns the user (and answered).
SERVED_BY = "X-Hailstream-Served-By"


def recommendations_body(user: str, state: UserState | None) -> dict[str, Any] | None:
    """The JSON answer for ``user`` with table value ``state``; None when there is nothing to
    serve (an unknown user, or no prediction after the user's last event)."""
    if not isinstance(state, dict) or not state.get("pred"):
        return None
    last = state.get("last")
    if not isinstance(last, dict):
        last = {}
    return {
        "user_id": user,
        "items": list(state["pred"]),
        "scores": last.get("scores"),
        "model_version": last.get("model_version"),
        "produced_at": last.get("produced_at"),
        "event_id": last.get("event_id"),
    }


def user_partition(user: str, partitions: int) -> int:
    """The partition of key ``user`` under Kafka's default partitioner (murmur2, positive, modulo
    the partition count): where the user's events, state and changelog records are."""
    from kafka.partitioner.default import murmur2

    return (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


def _ident(url: Any) -> tuple[str, int]:
    from yarl import URL

    u = URL(str(url))
    return (u.host or "", int(u.port or 80))


def owner_url(app: Any, table: Any, topic: str, partition: int) -> str | None:
    """The web URL of the worker holding ``partition`` of ``table``'s changelog ``topic`` (None:
    not known)."""
    try:
        hosts = app.router.table_metadata(table.name)
    except Exception:  # no assignment yet
        return None
    for url, topics in hosts.items():
        if partition in topics.get(topic, ()):
            return str(url)
    return None


def install_recommendations_view(app: Any, table: Any, settings: Settings) -> None:
    """Add ``GET /users/<user_id>/recommendations`` to the Faust ``app`` serving ``table``."""
    topic = changelog_topic(settings)

    @app.page(ROUTE, name="user-recommendations")
    async def user_recommendations(view: Any, request: Any, user_id: str) -> Any:
        if not request.headers.get(FORWARDED):
            owner = owner_url(app, table, topic, user_partition(user_id, settings.partitions))
            if owner is None:
                return view.error(503, "no worker owns this user's partition yet (a rebalance?); retry",
                                  user_id=user_id)
            if _ident(owner) != _ident(app.conf.canonical_url):
                return await _forward(app, view, request, owner)
        served_by = {SERVED_BY: str(app.conf.canonical_url)}
        body = recommendations_body(user_id, table.data.get(user_id))
        if body is None:
            return view.json({"error": "unknown user, or no prediction for this user yet", "user_id": user_id},
                             status=404, headers=served_by)
        return view.json(body, headers=served_by)


async def _forward(app: Any, view: Any, request: Any, owner: str) -> Any:
    from yarl import URL

    target = URL(owner).with_path(request.rel_url.path).with_query(request.rel_url.query)
    try:
        async with app.http_client.get(target, headers={FORWARDED: "1"}) as response:
            text = await response.text()
            headers = {SERVED_BY: response.headers[SERVED_BY]} if SERVED_BY in response.headers else None
            return view.text(text, content_type=response.content_type, status=response.status, headers=headers)
    except Exception as e:
        log.warning("cannot forward %s to %s: %s", request.rel_url, owner, e)
        return view.error(503, f"the worker owning this user ({owner}) cannot be reached; retry")
