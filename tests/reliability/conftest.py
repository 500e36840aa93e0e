"""The reliability suite (issue 12): one test module per promise (nothing lost after a broker or
topic reset, validation at the edge, trusted announcements only, no secret in any log, bounded
memory, checkpoints checked before allocation, bounded shutdown). Every test is marked
``reliability``; the ones that need a broker share the integration suite's fixtures."""

from tests.integration.conftest import broker, settings_factory  # noqa: F401 - pytest fixtures
