"""The one settings object of hailstream (DESIGN §6), read once at start-up: :class:`Settings`, with
the shared settings (Kafka, topics, security, model and data directories, logging) at the top and
one section per process, ``settings.worker`` and ``settings.trainer``
(:mod:`stream.settings.sections`).

Every setting has a flat name, which is its keyword override, its environment variable
``HAILSTREAM_<NAME>`` and its flag ``--<name>`` (:mod:`stream.settings.env`): shared and worker
settings by their own name (``HAILSTREAM_PARTITIONS``, ``HAILSTREAM_BATCH_SIZE``), trainer settings
with ``trainer_`` in front (``HAILSTREAM_TRAINER_STEPS``, ``--steps`` on ``hailstream trainer``).
:meth:`Settings.from_env` reads the environment (pydantic-settings source) and applies overrides;
overrides win over the environment, the environment over the defaults; a bare ``Settings(...)`` is
the defaults and its arguments only. A bad value raises :class:`~stream.errors.SettingsError`
naming the variable or flag and the type it expects.

>>> s = Settings.from_env({"HAILSTREAM_PARTITIONS": "8", "HAILSTREAM_TRAINER_STEPS": "3"}, top_k=5)
>>> s.partitions, s.top_k, s.interactions_topic, s.trainer.steps, s.worker.batch_size
(8, 5, 'hailstream.interactions', 3, 256)
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

import contextlib
import contextvars
import logging
import os
import ssl
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from models.data import DEFAULT_DATA_DIR
from stream.errors import SettingsError
from stream.settings.checks import LOG_LEVELS, SASL_MECHANISMS, SECURITY_PROTOCOLS, validate
from stream.settings.env import convert, env_name, flat_fields, type_label
from stream.settings.sections import SECTION_PREFIX, TrainerSettings, WorkerSettings

_HIDDEN = "***"
#: Settings whose values are never printed (:meth:`Settings.redacted`, :mod:`stream.settings.redact`).
SECRET_FIELDS = ("sasl_password", "model_updates_key")
_SECTIONS: dict[str, type[BaseModel]] = {"worker": WorkerSettings, "trainer": TrainerSettings}
#: The environment :meth:`Settings.from_env` is reading (None: a bare ``Settings(...)`` reads none).
_ENV: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("hailstream_env", default=None)


class _EnvSource(PydanticBaseSettingsSource):
    """The ``HAILSTREAM_*`` variables of the environment being read, as flat typed values."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        env = _ENV.get()
        if env is None:
            return {}
        out: dict[str, Any] = {}
        for flat, (_, _, info) in settings_fields().items():
            raw = env.get(env_name(flat))
            if raw is not None and raw.strip() != "":
                out[flat] = convert(raw, info.annotation, env_name(flat), flat)
        return out


#: The project folder (beside ../shared/data): the same model home whichever folder a command runs in.
PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = PROJECT_DIR / "hailstream-models"


class Settings(BaseSettings):
    """Every knob of a hailstream process. Frozen: derive variants with :meth:`replace`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port...]")
    interactions_topic: str = Field("hailstream.interactions", description="input topic")
    predictions_topic: str = Field("hailstream.predictions", description="output topic")
    dead_letter_topic: str = Field("hailstream.dead-letter", description="bad input messages, with a reason")
    model_updates_topic: str = Field("hailstream.model-updates", description="version announcements and signals")
    partitions: int = Field(4, description="partitions of the interactions/predictions topics")
    replication_factor: int = Field(
        1, description="replication factor of the topics hailstream creates (and of Faust's changelog); "
        "3 on a production cluster")
    app_id: str = Field("hailstream", description="Faust app id and consumer-group prefix")
    top_k: int = Field(10, description="items per prediction")
    max_seq_len: int = Field(50, description="items kept per user sequence")
    max_message_bytes: int = Field(65536, description="larger input messages are dead letters")
    max_id_chars: int = Field(256, description="longer user/item/event ids are dead letters (bad_value)")
    min_event_ts: float = Field(0.0, description="events with ts (unix seconds) before this are dead letters")
    max_event_ts_ahead: float = Field(
        86400.0 * 366, description="events with ts more than this many seconds after now are dead letters"
    )
    model_updates_key: str | None = Field(
        None, repr=False, description="HMAC-SHA256 key signing model announcements (never printed); "
        "when set (or model_updates_key_file), workers refuse unsigned or wrongly signed ones"
    )
    model_updates_key_file: Path | None = Field(None, description="file holding the model_updates_key")
    metrics_bind: str = Field("127.0.0.1", description="address of the /metrics servers")
    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="the one home of models: the versioned model store, "
                            "the demo's cached model (demo/); demo runs go to hailstream-runs/ beside it")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="folder holding foursquare_nyc/ and amazon_beauty/")
    security_protocol: str = Field("PLAINTEXT", description=" | ".join(SECURITY_PROTOCOLS))
    sasl_mechanism: str | None = Field(None, description=" | ".join(SASL_MECHANISMS))
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: str | None = Field(None, repr=False, description="SASL password (never printed)")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) for TLS")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mTLS")
    ssl_keyfile: Path | None = Field(None, description="client key (PEM) for mTLS")
    log_level: str = Field("INFO", description=" | ".join(LOG_LEVELS))
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings(), description="hailstream worker")
    trainer: TrainerSettings = Field(default_factory=lambda: TrainerSettings(), description="hailstream trainer")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise _settings_error(e) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        """Flat names (``batch_size``, ``trainer_steps``) into their sections."""
        if not isinstance(data, dict):
            return data
        fields = settings_fields()
        unknown = sorted(k for k in data if k not in fields and k not in _SECTIONS)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        out: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for key, value in data.items():
            if key in _SECTIONS:
                base = value.model_dump() if hasattr(value, "model_dump") else dict(value)
                nested[key] = {**base, **nested[key]}
                continue
            section, name, _ = fields[key]
            if section is None:
                out[key] = value
            else:
                nested[section][name] = value
        for name, values in nested.items():
            if values or name in data:
                out[name] = _SECTIONS[name](**values)
        return out

    @field_validator("security_protocol", "log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        # Case-insensitive enumerations, normalised once so that every consumer sees one spelling.
        return str(v).upper()

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _upper_optional(cls, v: Any) -> Any:
        return None if v is None else str(v).upper()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        validate(self)
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``HAILSTREAM_<NAME>`` from ``env`` (default: ``os.environ``), then
        ``overrides`` by flat name. An override of ``None`` means "not given" (an unset CLI flag) and
        is skipped; a text override is converted like a flag. Empty environment values are unset."""
        fields = settings_fields()
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, str):
                value = convert(value, fields[name][2].annotation, f"--{name.replace('_', '-')}", name)
            values[name] = value
        token = _ENV.set(os.environ if env is None else env)
        try:
            return cls(**values)
        finally:
            _ENV.reset(token)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        out: dict[str, Any] = {}
        for name, (section, field, _) in settings_fields().items():
            out[name] = getattr(getattr(self, section) if section else self, field)
        return out

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings (flat names) changed, validated again."""
        return type(self)(**{**self.flat(), **changes})

    def redacted(self) -> dict[str, Any]:
        """All settings as JSON-friendly values (sections nested), the password masked: safe to log."""
        def plain(v: Any) -> Any:
            return str(v) if isinstance(v, Path) else v

        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            v = getattr(self, name)
            if name in _SECTIONS:
                out[name] = {k: plain(x) for k, x in v.model_dump().items()}
            else:
                out[name] = _HIDDEN if name in SECRET_FIELDS and v is not None else plain(v)
        return out

    def to_env(self) -> dict[str, str]:
        """``HAILSTREAM_*`` variables that give a child process exactly these settings (the password
        included: pass them only to our own processes, never log them)."""
        from stream.settings.env import to_text

        return {env_name(k): to_text(v) for k, v in self.flat().items() if v is not None}

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({body})"

    __str__ = __repr__

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

    def _connection_kwargs(self) -> dict[str, Any]:
        # What kafka-python and aiokafka name alike: servers, protocol and SASL credentials.
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_list, "security_protocol": self.security_protocol}
        if self.uses_sasl:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        return kw

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Connection and security keyword arguments for kafka-python's ``KafkaAdminClient``,
        ``KafkaProducer`` and ``KafkaConsumer``.

        >>> Settings(bootstrap_servers="h1:9092,h2:9092").kafka_python_kwargs()
        {'bootstrap_servers': ['h1:9092', 'h2:9092'], 'security_protocol': 'PLAINTEXT'}
        """
        kw = self._connection_kwargs()
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
        kw = self._connection_kwargs()
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

    def signing_key(self) -> bytes | None:
        """The model announcements' HMAC key: ``model_updates_key``, else the content of
        ``model_updates_key_file`` (surrounding whitespace stripped), else None (unsigned)."""
        if self.model_updates_key:
            return self.model_updates_key.encode()
        if self.model_updates_key_file is not None:
            try:
                key = self.model_updates_key_file.read_bytes().strip()
            except OSError as e:
                raise SettingsError(f"cannot read HAILSTREAM_MODEL_UPDATES_KEY_FILE: {e.strerror}") from None
            if not key:
                raise SettingsError("HAILSTREAM_MODEL_UPDATES_KEY_FILE is empty")
            return key
        return None

    def secrets(self) -> list[str]:
        """The secret values these settings hold (what log redaction must never let through)."""
        out = [str(getattr(self, name)) for name in SECRET_FIELDS if getattr(self, name)]
        if self.model_updates_key_file is not None:
            with contextlib.suppress(SettingsError):
                key = self.signing_key()
                if key:
                    out.append(key.decode(errors="replace"))
        return out

    def configure_logging(self) -> None:
        """Root logging at ``log_level`` with a timestamped format (idempotent), every root handler
        filtered by :class:`stream.settings.redact.RedactSecrets` (kafka-python and aiokafka dump
        their configuration, SASL password included, at DEBUG)."""
        from stream.settings.redact import install_redaction

        logging.basicConfig(
            level=getattr(logging, self.log_level),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        install_redaction(self.secrets())


@cache
def settings_fields() -> dict[str, tuple[str | None, str, FieldInfo]]:
    """Flat name -> (section or None, field name, field) of every setting."""
    return flat_fields(Settings, {name: (model, SECTION_PREFIX[name]) for name, model in _SECTIONS.items()})


def _settings_error(e: ValidationError) -> SettingsError:
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"]]
    flat = (SECTION_PREFIX.get(loc[0], "") + loc[1]) if len(loc) > 1 and loc[0] in _SECTIONS else loc[0]
    info = settings_fields().get(flat)
    label = type_label(info[2].annotation) if info else "value"
    return SettingsError(f"{env_name(flat)}={err.get('input')!r} is not a valid {label} (setting {flat}): {err['msg']}")
