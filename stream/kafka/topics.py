"""Create (and, for tests, delete) the hailstream topics.

Topics are created explicitly because a broker's auto-created topics get whatever partition count
the broker chooses, and Faust tables need ``topic_partitions`` equal to the source topic's count.
Interactions and predictions get ``settings.partitions``; dead-letter and model-updates get one
partition (low volume, and one partition keeps version announcements totally ordered). Every topic
created here gets ``settings.replication_factor`` replicas (``HAILSTREAM_REPLICATION_FACTOR``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from stream.errors import BrokerError, SettingsError
from stream.settings import Settings

_TIMEOUT_MS = 10_000
#: The worker's per-user table (Faust); its changelog topic is :func:`changelog_topic`.
TABLE_NAME = "user-state"


def changelog_topic(settings: Settings) -> str:
    """Name of the user-state table's changelog topic (Faust's ``<app_id>-<table>-changelog``).

    >>> changelog_topic(Settings(app_id="hs"))
    'hs-user-state-changelog'
    """
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def topic_plan(settings: Settings, extra: Mapping[str, int] | None = None) -> dict[str, int]:
    """Topic name -> partition count that :func:`ensure_topics` creates.

    >>> topic_plan(Settings(partitions=8))
    {'hailstream.interactions': 8, 'hailstream.predictions': 8, 'hailstream.dead-letter': 1, 'hailstream.model-updates': 1}
    """
    plan = {
        settings.interactions_topic: settings.partitions,
        settings.predictions_topic: settings.partitions,
        settings.dead_letter_topic: 1,
        settings.model_updates_topic: 1,
    }
    plan.update(extra or {})
    return plan


def _new_topic(settings: Settings, name: str, partitions: int) -> dict[str, Any]:
    """kafka-python's options for a new topic: the changelog is compacted, as Faust would make it
    (a user's latest state is all a recovery needs; without compaction a real cluster keeps every
    value until retention deletes states still in use).

    >>> _new_topic(Settings(app_id="hs"), "hs-user-state-changelog", 4)["configs"]
    {'cleanup.policy': 'compact'}
    """
    out: dict[str, Any] = {"num_partitions": partitions, "replication_factor": settings.replication_factor}
    if name == changelog_topic(settings):
        out["configs"] = {"cleanup.policy": "compact"}
    return out


@contextlib.contextmanager
def admin_client(settings: Settings) -> Iterator[Any]:
    """A kafka-python ``KafkaAdminClient`` with the settings' security, closed on exit; an
    unreachable broker raises :class:`BrokerError` with what to do."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            request_timeout_ms=_TIMEOUT_MS, bootstrap_timeout_ms=_TIMEOUT_MS, **settings.kafka_python_kwargs()
        )
    except Exception as e:
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: is it running? set HAILSTREAM_BOOTSTRAP_SERVERS "
            f"({type(e).__name__}: {e})"
        ) from e
    try:
        yield admin
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def topic_epoch(settings: Settings, topic: str | None = None) -> str | None:
    """What identifies this incarnation of ``topic`` (default: the interactions topic): the
    broker's cluster id and the topic's id (a UUID the broker gives each created topic), or None
    when the broker does not say (then the worker compares offsets only). A new broker or a
    recreated topic has another epoch: stored positions of the old one no longer mean anything."""
    name = topic or settings.interactions_topic
    try:
        with admin_client(settings) as admin:
            cluster = admin.describe_cluster().get("cluster_id")
            described = admin.describe_topics([name])
    except Exception:  # an unreachable broker: the caller keeps the epoch it has
        return None
    topic_id = next((d.get("topic_id") for d in described if d.get("name") == name and not d.get("error_code")), None)
    if not topic_id or str(topic_id).strip("0-") == "":  # the all-zero id: no topic ids on this broker
        return None
    return f"{cluster}/{topic_id}"


def partition_counts(admin: Any, names: Iterable[str]) -> dict[str, int]:
    """Existing topics among ``names`` -> their partition count (missing topics are left out)."""
    names = list(names)
    if not names:
        return {}
    out: dict[str, int] = {}
    for t in admin.describe_topics(names):
        if t.get("error_code", 0) == 0 and t.get("partitions"):
            out[t["name"]] = len(t["partitions"])
    return out


def ensure_topics(settings: Settings, extra: Mapping[str, int] | None = None) -> dict[str, int]:
    """Create the four hailstream topics (plus ``extra``: name -> partitions, e.g. pre-created
    Faust changelog topics) where missing; return name -> partition count of all of them.

    Existing topics are fine, but an existing interactions or predictions topic (or an ``extra``
    topic) with a different partition count raises :class:`SettingsError`: the broker cannot add
    partitions, so change ``HAILSTREAM_PARTITIONS`` or use new topic names.
    """
    from kafka.errors import TopicAlreadyExistsError

    plan = topic_plan(settings, extra)
    strict = {settings.interactions_topic, settings.predictions_topic, *(extra or {})}
    with admin_client(settings) as admin:
        existing = partition_counts(admin, plan)
        missing = {name: n for name, n in plan.items() if name not in existing}
        if missing:
            try:
                result = admin.create_topics(
                    {name: _new_topic(settings, name, n) for name, n in missing.items()},
                    timeout_ms=_TIMEOUT_MS,
                    raise_errors=False,
                )
            except Exception as e:
                raise BrokerError(f"cannot create topics {sorted(missing)} on {settings.bootstrap_servers}: {e}") from e
            # "already exists" means another process created it concurrently: checked below like
            # any existing topic.
            failed = [
                f"{t['name']}: {t.get('error_message') or t['error_code']}"
                for t in result.get("topics", [])
                if t.get("error_code", 0) not in (0, TopicAlreadyExistsError.errno)
            ]
            if failed:
                raise BrokerError(f"cannot create topics on {settings.bootstrap_servers}: {'; '.join(failed)}")
            try:
                admin.wait_for_topics(list(missing), timeout_ms=_TIMEOUT_MS)
            except Exception as e:
                raise BrokerError(
                    f"topics {sorted(missing)} were not ready on {settings.bootstrap_servers} after "
                    f"{_TIMEOUT_MS / 1000:g} s: {e}"
                ) from e
        counts = partition_counts(admin, plan)
    absent = sorted(set(plan) - set(counts))
    if absent:
        raise BrokerError(f"topics {absent} could not be created on {settings.bootstrap_servers}; check broker ACLs")
    for name in sorted(strict):
        if counts[name] != plan[name]:
            raise SettingsError(
                f"topic {name!r} exists with {counts[name]} partitions but {plan[name]} are configured: "
                f"set HAILSTREAM_PARTITIONS={counts[name]}, or use a new topic name "
                "(this broker cannot add partitions to a topic)"
            )
    return counts


def ensure_worker_topics(settings: Settings) -> dict[str, int]:
    """:func:`ensure_topics` plus the user-state table's changelog (compacted, one partition per
    interactions partition): every topic a worker reads or writes."""
    return ensure_topics(settings, {changelog_topic(settings): settings.partitions})


def delete_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Delete the four hailstream topics (or ``names``); missing topics are skipped. Returns the
    names that were deleted. Used by tests: the embedded broker has no retention, so topics that
    are never deleted keep their messages in memory."""
    wanted = list(settings.topics if names is None else names)
    with admin_client(settings) as admin:
        existing = set(admin.list_topics())
        present = [n for n in wanted if n in existing]
        if present:
            try:
                admin.delete_topics(present, timeout_ms=_TIMEOUT_MS, raise_errors=False)
            except Exception as e:
                raise BrokerError(f"cannot delete topics {present} on {settings.bootstrap_servers}: {e}") from e
    return present


def run_topics(settings: Settings | None = None, delete: bool = False) -> dict[str, int]:
    """``hailstream topics [--delete]``: create the topics (or delete them) and print what exists;
    returns name -> partitions of the topics that now exist.

    The user-state table's changelog is one of them (compacted, one partition per interactions
    partition), so a cluster that does not let clients create topics can be set up by an operator
    once, with this command, before any worker starts; ``--delete`` drops it with the rest (the
    states would otherwise outlive the events they came from)."""
    settings = settings or Settings.from_env()
    if delete:
        gone = delete_topics(settings, [*settings.topics, changelog_topic(settings)])
        print(f"deleted {', '.join(gone) if gone else 'nothing (no hailstream topics)'}", flush=True)
        return {}
    counts = ensure_worker_topics(settings)
    for name, n in counts.items():
        print(f"{name}: {n} partition{'s' if n != 1 else ''}", flush=True)
    return counts
