"""The pure parts of ``GET /users/<id>/recommendations`` (:mod:`stream.worker.web`); the served
endpoint with two workers is tests/integration/test_web.py."""

from __future__ import annotations

from stream.worker.web import recommendations_body, user_partition


def test_the_body_is_the_last_published_prediction() -> None:
    state = {"items": ["a", "b"], "pred": ["b", "a"], "off": [0, 7],
             "last": {"event_id": "e7", "scores": [-0.5, -1.0], "model_version": "v3", "produced_at": 12.5}}
    assert recommendations_body("u", state) == {"user_id": "u", "items": ["b", "a"], "scores": [-0.5, -1.0],
                                                "model_version": "v3", "produced_at": 12.5, "event_id": "e7"}


def test_states_written_before_last_existed_still_answer() -> None:
    body = recommendations_body("u", {"items": ["a"], "pred": ["a"], "off": [0, 1]})
    assert body is not None and body["items"] == ["a"]
    assert (body["scores"], body["model_version"], body["produced_at"], body["event_id"]) == (None, None, None, None)


def test_nothing_to_serve_is_none() -> None:
    assert recommendations_body("u", None) is None
    assert recommendations_body("u", {"items": ["a"], "pred": None}) is None  # the last event failed
    assert recommendations_body("u", {"items": ["a"]}) is None


def test_the_partition_is_the_kafka_default_partitioners() -> None:
    # What the interactions topic's producers (kafka-python, aiokafka, the Java client) choose for key = user id.
    from aiokafka.partitioner import DefaultPartitioner

    choose = DefaultPartitioner()
    for n in (1, 4, 12):
        for user in ("470", "u1", "ü-user", "x" * 100):
            assert user_partition(user, n) == choose(user.encode(), list(range(n)), list(range(n)))
