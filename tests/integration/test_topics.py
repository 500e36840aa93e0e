"""Topic creation and checks against the embedded broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stream.errors import SettingsError
from stream.kafka.topics import (
    admin_client,
    changelog_topic,
    delete_topics,
    ensure_topics,
    partition_counts,
    run_topics,
)
from stream.settings import Settings

pytestmark = pytest.mark.integration


def test_fresh_settings_topics_have_the_planned_partitions(fresh_settings: Settings) -> None:
    s = fresh_settings
    with admin_client(s) as admin:
        counts = partition_counts(admin, s.topics)
    assert counts == {
        s.interactions_topic: s.partitions,
        s.predictions_topic: s.partitions,
        s.dead_letter_topic: 1,
        s.model_updates_topic: 1,
    }


def test_ensure_is_idempotent_and_extra_topics(fresh_settings: Settings) -> None:
    extra = {f"{fresh_settings.app_id}-table-changelog": fresh_settings.partitions}
    first = ensure_topics(fresh_settings, extra=extra)
    assert ensure_topics(fresh_settings, extra=extra) == first
    assert first[f"{fresh_settings.app_id}-table-changelog"] == fresh_settings.partitions
    delete_topics(fresh_settings, names=extra)


def test_partition_mismatch_says_what_to_do(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(partitions=2)
    with pytest.raises(SettingsError, match="HAILSTREAM_PARTITIONS=2"):
        ensure_topics(s.replace(partitions=3))


def test_delete_topics(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(create=False)
    ensure_topics(s)
    assert sorted(delete_topics(s)) == sorted(s.topics)
    with admin_client(s) as admin:
        assert partition_counts(admin, s.topics) == {}
    assert delete_topics(s) == []


def test_run_topics_creates_then_deletes(
    settings_factory: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    s = settings_factory(create=False)
    assert run_topics(s) == {s.interactions_topic: 4, s.predictions_topic: 4, s.dead_letter_topic: 1,
                             s.model_updates_topic: 1, changelog_topic(s): 4}
    assert f"{s.dead_letter_topic}: 1 partition\n" in capsys.readouterr().out
    assert run_topics(s, delete=True) == {}
    assert f"{changelog_topic(s)}" in capsys.readouterr().out  # deleted with the rest
    with admin_client(s) as admin:
        assert partition_counts(admin, [*s.topics, changelog_topic(s)]) == {}
