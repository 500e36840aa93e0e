"""The one settings object of hailstream, read once at start-up (DESIGN §6).

Every field can be set by an environment variable ``HAILSTREAM_<FIELD>`` (upper case) and by a
keyword override (the CLI passes its flags that way); overrides win over the environment, the
environment wins over the defaults. Values from the environment are converted to the field's type,
and a bad value raises :class:`~stream.errors.SettingsError` naming the variable and the type it
expects.

>>> s = Settings.from_env({"HAILSTREAM_PARTITIONS": "8"}, top_k=5)
>>> s.partitions, s.top_k, s.interactions_topic
(8, 5, 'hailstream.interactions')
>>> Settings.from_env({"HAILSTREAM_PARTITIONS": "many"})
Traceback (most recent call last):
...
stream.errors.SettingsError: HAILSTREAM_PARTITIONS='many' is not a valid integer (setting partitions)

Security settings pass through to every client: :meth:`Settings.kafka_python_kwargs` for
kafka-python (admin, producer, consumer), :meth:`Settings.aiokafka_kwargs` for aiokafka and
:meth:`Settings.faust_broker_credentials` / :meth:`Settings.faust_broker_urls` for Faust. The SASL
password never appears in ``repr`` or :meth:`Settings.redacted`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import ssl
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.data import DEFAULT_DATA_DIR
from stream.errors import SettingsError

ENV_PREFIX = "HAILSTREAM_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_HIDDEN = "***"


def env_name(field_name: str) -> str:
    """The environment variable of a setting.

    >>> env_name("bootstrap_servers")
    'HAILSTREAM_BOOTSTRAP_SERVERS'
    """
    return ENV_PREFIX + field_name.upper()


@dataclass(frozen=True, repr=False)
class Settings:
    """Every knob of a hailstream process. Frozen: derive variants with :meth:`replace`."""

    bootstrap_servers: str = "127.0.0.1:9092"
    interactions_topic: str = "hailstream.interactions"
    predictions_topic: str = "hailstream.predictions"
    dead_letter_topic: str = "hailstream.dead-letter"
    model_updates_topic: str = "hailstream.model-updates"
    partitions: int = 4
    app_id: str = "hailstream"
    top_k: int = 10
    max_seq_len: int = 50
    batch_size: int = 256
    batch_timeout: float = 0.05
    max_message_bytes: int = 65536
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 9464
    trainer_metrics_port: int = 9465
    model_dir: Path = Path("./hailstream-models")
    data_dir: Path = DEFAULT_DATA_DIR
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, compare=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    log_level: str = "INFO"
    #: the worker's post-swap guard (stream.guard): scored events per window (0 = off), the fewest
    #: before a rollback, how much worse the new version may be, and the confidence
    guard_events: int = 1000
    guard_min_events: int = 200
    guard_tolerance: float = 0.0
    guard_confidence: float = 0.95
    #: drift detectors (stream.drift): ADWIN's delta (smaller = fewer, later detections; tune per
    #: data set), the smallest accuracy drop reported (relative to the level before), and the input popularity
    #: signal's minimum effect (relative excess over its calibrated threshold) and persistence
    #: (checks in a row over it)
    adwin_delta: float = 0.002
    drift_min_drop: float = 0.125
    drift_min_effect: float = 0.05
    drift_persistence: int = 3

    def __post_init__(self) -> None:
        # Normalise case-insensitive enumerations once, so every consumer sees one spelling.
        object.__setattr__(self, "security_protocol", str(self.security_protocol).upper())
        object.__setattr__(self, "log_level", str(self.log_level).upper())
        if self.sasl_mechanism is not None:
            object.__setattr__(self, "sasl_mechanism", str(self.sasl_mechanism).upper())
        _validate(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``HAILSTREAM_<FIELD>`` from ``env`` (default: ``os.environ``), then
        ``overrides``. An override of ``None`` means "not given" (an unset CLI flag) and is skipped.
        Empty environment values are treated as unset."""
        env = os.environ if env is None else env
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name in known:
            raw = env.get(env_name(name))
            if raw is not None and raw.strip() != "":
                values[name] = _convert(raw.strip(), hints[name], env_name(name), name)
        for name, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, str):
                value = _convert(value, hints[name], f"--{name.replace('_', '-')}", name)
            values[name] = value
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict[str, Any]:
        """All settings as JSON-friendly values, the password masked: safe to log or print."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "sasl_password" and v is not None:
                v = _HIDDEN
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out

    def to_env(self) -> dict[str, str]:
        """``HAILSTREAM_*`` variables that give a child process exactly these settings (the password
        included: pass them only to our own processes, never log them)."""
        return {env_name(f.name): str(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({body})"

    @property
    def bootstrap_list(self) -> list[str]:
        """``bootstrap_servers`` split on commas: ``"a:1, b:2"`` -> ``["a:1", "b:2"]``."""
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    @property
    def topics(self) -> tuple[str, str, str, str]:
        """(interactions, predictions, dead-letter, model-updates) topic names."""
        return (self.interactions_topic, self.predictions_topic, self.dead_letter_topic, self.model_updates_topic)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Connection and security keyword arguments for kafka-python's ``KafkaAdminClient``,
        ``KafkaProducer`` and ``KafkaConsumer``.

        >>> Settings(bootstrap_servers="h1:9092,h2:9092").kafka_python_kwargs()
        {'bootstrap_servers': ['h1:9092', 'h2:9092'], 'security_protocol': 'PLAINTEXT'}
        """
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_list, "security_protocol": self.security_protocol}
        if self.uses_sasl:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        if self.uses_ssl:
            if self.ssl_cafile is not None:
                kw["ssl_cafile"] = str(self.ssl_cafile)
            if self.ssl_certfile is not None:
                kw["ssl_certfile"] = str(self.ssl_certfile)
            if self.ssl_keyfile is not None:
                kw["ssl_keyfile"] = str(self.ssl_keyfile)
        return kw

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context built from ``ssl_cafile``/``ssl_certfile``/``ssl_keyfile`` (system
        CAs when no CA file is set), or ``None`` when the protocol does not use TLS."""
        if not self.uses_ssl:
            return None
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile is not None:
                ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        except (OSError, ssl.SSLError) as e:
            raise SettingsError(
                f"cannot build the TLS context from HAILSTREAM_SSL_CAFILE/CERTFILE/KEYFILE: {e}; "
                "check that the files exist and are PEM encoded"
            ) from e
        return ctx

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Connection and security keyword arguments for aiokafka's producer and consumer (which
        take an ``ssl_context`` rather than file names)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_list, "security_protocol": self.security_protocol}
        if self.uses_sasl:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        if self.uses_ssl:
            kw["ssl_context"] = self.ssl_context()
        return kw

    def faust_broker_urls(self) -> list[str]:
        """The ``broker`` setting of a Faust app: one ``kafka://host:port`` URL per server.

        >>> Settings(bootstrap_servers="h1:9092,h2:9093").faust_broker_urls()
        ['kafka://h1:9092', 'kafka://h2:9093']
        """
        return [s if "://" in s else f"kafka://{s}" for s in self.bootstrap_list]

    def faust_broker_credentials(self) -> Any:
        """The ``broker_credentials`` setting of a Faust app: ``None`` for PLAINTEXT, else a
        ``faust.SSLCredentials`` or ``faust.SASLCredentials`` (imported lazily, so reading
        settings never pays for importing Faust)."""
        if self.security_protocol == "PLAINTEXT":
            return None
        from faust.auth import SASLCredentials, SSLCredentials

        ctx = self.ssl_context()
        if not self.uses_sasl:
            return SSLCredentials(ctx)
        return SASLCredentials(
            username=self.sasl_username, password=self.sasl_password, ssl_context=ctx, mechanism=self.sasl_mechanism
        )

    def configure_logging(self) -> None:
        """Root logging at ``log_level`` with a timestamped format (idempotent)."""
        logging.basicConfig(
            level=getattr(logging, self.log_level),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def _type_label(tp: Any) -> str:
    base = _base_type(tp)
    return {int: "integer", float: "number", bool: "boolean", Path: "path", str: "string"}.get(base, str(base))


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _convert(raw: str, tp: Any, source: str, name: str) -> Any:
    base = _base_type(tp)
    try:
        if base is bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if base is int:
            return int(raw, 10)
        if base is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if base is Path:
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise SettingsError(f"{source}={raw!r} is not a valid {_type_label(tp)} (setting {name})") from None


def _fail(name: str, message: str) -> SettingsError:
    return SettingsError(f"{env_name(name)} ({name}) {message}")


def _validate(s: Settings) -> None:
    if not s.bootstrap_list:
        raise _fail("bootstrap_servers", "is empty; set it to host:port[,host:port...] of the Kafka brokers")
    for name in ("partitions", "top_k", "max_seq_len", "batch_size", "max_message_bytes"):
        if int(getattr(s, name)) < 1:
            raise _fail(name, f"must be >= 1, got {getattr(s, name)!r}")
    if not (math.isfinite(s.batch_timeout) and s.batch_timeout >= 0):
        raise _fail("batch_timeout", f"must be a finite number of seconds >= 0, got {s.batch_timeout!r}")
    for name in ("web_port", "metrics_port", "trainer_metrics_port"):
        if not 0 <= int(getattr(s, name)) <= 65535:
            raise _fail(name, f"must be a TCP port 0..65535, got {getattr(s, name)!r}")
    for name in s.topics + (s.app_id,):
        if not name or any(c.isspace() for c in name):
            raise SettingsError(f"topic / app id {name!r} must be non-empty without spaces; check HAILSTREAM_*_TOPIC")
    if s.guard_events < 0 or s.guard_min_events < 1 or s.guard_tolerance < 0:
        raise SettingsError("HAILSTREAM_GUARD_EVENTS must be >= 0 (0 = no post-swap guard), HAILSTREAM_GUARD_MIN_EVENTS "
                            ">= 1 and HAILSTREAM_GUARD_TOLERANCE >= 0")
    if not 0.5 <= s.guard_confidence < 1:
        raise _fail("guard_confidence", f"must be in [0.5, 1), got {s.guard_confidence!r}")
    if not 0 < s.adwin_delta < 1:
        raise _fail("adwin_delta", f"must be in (0, 1), got {s.adwin_delta!r}")
    if not 0 <= s.drift_min_drop < 1 or s.drift_min_effect < 0 or s.drift_persistence < 1:
        raise SettingsError("HAILSTREAM_DRIFT_MIN_DROP must be in [0, 1), HAILSTREAM_DRIFT_MIN_EFFECT >= 0 and "
                            "HAILSTREAM_DRIFT_PERSISTENCE >= 1")
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
    if s.ssl_keyfile is not None and s.ssl_certfile is None:
        raise SettingsError("HAILSTREAM_SSL_KEYFILE is set without HAILSTREAM_SSL_CERTFILE; set both or neither")
