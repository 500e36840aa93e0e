"""The cross-field checks of :class:`~stream.settings.Settings` (what pydantic's per-field types cannot
say), each failing with a :class:`~stream.errors.SettingsError` that names the environment variable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream.errors import SettingsError
from stream.settings.env import env_name

if TYPE_CHECKING:
    from stream.settings.core import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _fail(name: str, message: str) -> SettingsError:
    return SettingsError(f"{env_name(name)} ({name}) {message}")


def validate(s: Settings) -> None:
    if not s.bootstrap_list:
        raise _fail("bootstrap_servers", "is empty; set it to host:port[,host:port...] of the Kafka brokers")
    for name in ("partitions", "replication_factor", "top_k", "max_seq_len", "max_message_bytes", "max_id_chars"):
        if int(getattr(s, name)) < 1:
            raise _fail(name, f"must be >= 1, got {getattr(s, name)!r}")
    for name in s.topics + (s.app_id,):
        if not name or any(c.isspace() for c in name):
            raise SettingsError(f"topic / app id {name!r} must be non-empty without spaces; check HAILSTREAM_*_TOPIC")
    if s.security_protocol not in SECURITY_PROTOCOLS:
        raise _fail("security_protocol", f"must be one of {', '.join(SECURITY_PROTOCOLS)}, got {s.security_protocol!r}")
    if s.log_level not in LOG_LEVELS:
        raise _fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    if s.uses_sasl:
        if s.sasl_mechanism not in SASL_MECHANISMS:
            raise _fail(
                "sasl_mechanism",
                f"must be one of {', '.join(SASL_MECHANISMS)} with {s.security_protocol}, got {s.sasl_mechanism!r}",
            )
        if not s.sasl_username or s.sasl_password is None:
            raise SettingsError(
                f"{s.security_protocol} needs HAILSTREAM_SASL_USERNAME and HAILSTREAM_SASL_PASSWORD to be set"
            )
    if not s.max_event_ts_ahead > 0:
        raise _fail("max_event_ts_ahead", f"must be > 0 seconds, got {s.max_event_ts_ahead!r}")
    if s.ssl_keyfile is not None and s.ssl_certfile is None:
        raise SettingsError("HAILSTREAM_SSL_KEYFILE is set without HAILSTREAM_SSL_CERTFILE; set both or neither")
