from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from models.data import DEFAULT_DATA_DIR
from stream.errors import SettingsError
from stream.settings import Settings, TrainerSettings, WorkerSettings, env_name, settings_fields
from stream.settings.core import DEFAULT_MODEL_DIR

SASL = {
    "HAILSTREAM_SECURITY_PROTOCOL": "sasl_plaintext",
    "HAILSTREAM_SASL_MECHANISM": "scram-sha-256",
    "HAILSTREAM_SASL_USERNAME": "alice",
    "HAILSTREAM_SASL_PASSWORD": "s3cr3t-pw",
}


def test_defaults_match_the_shared_interface() -> None:
    s = Settings.from_env({})
    assert s.interactions_topic == "hailstream.interactions"
    assert s.predictions_topic == "hailstream.predictions"
    assert s.dead_letter_topic == "hailstream.dead-letter"
    assert s.model_updates_topic == "hailstream.model-updates"
    assert (s.partitions, s.top_k, s.max_seq_len, s.worker.batch_size) == (4, 10, 50, 256)
    assert s.worker.batch_timeout == 0.01 and s.max_message_bytes == 65536
    assert (s.worker.web_bind, s.worker.web_port, s.metrics_bind, s.worker.metrics_port) == ("127.0.0.1", 6066, "127.0.0.1", 9464)
    assert s.trainer == TrainerSettings() and s.trainer.metrics_port == 9465 and s.worker == WorkerSettings()
    assert s.data_dir == DEFAULT_DATA_DIR and s.model_dir == DEFAULT_MODEL_DIR and s.model_dir.is_absolute()  # one home, whatever the folder
    assert s.security_protocol == "PLAINTEXT" and s.log_level == "INFO"


def test_every_field_reads_its_env_var_with_type_conversion() -> None:
    env = {
        "HAILSTREAM_BOOTSTRAP_SERVERS": "k1:9092,k2:9093",
        "HAILSTREAM_PARTITIONS": "8",
        "HAILSTREAM_BATCH_TIMEOUT": "0.25",
        "HAILSTREAM_MODEL_DIR": "/tmp/models",
        "HAILSTREAM_SSL_CAFILE": "/etc/ca.pem",
        "HAILSTREAM_LOG_LEVEL": "debug",
        "HAILSTREAM_APP_ID": "demo",
    }
    s = Settings.from_env(env)
    assert s.bootstrap_list == ["k1:9092", "k2:9093"]
    assert s.partitions == 8 and isinstance(s.partitions, int)
    assert s.worker.batch_timeout == 0.25
    assert s.model_dir == Path("/tmp/models") and s.ssl_cafile == Path("/etc/ca.pem")
    assert s.log_level == "DEBUG" and s.app_id == "demo"


def test_env_names_cover_all_fields() -> None:
    fields = settings_fields()
    for name in Settings.model_fields:
        if name not in ("worker", "trainer"):
            assert fields[name] == (None, name, Settings.model_fields[name]) and env_name(name) == "HAILSTREAM_" + name.upper()
    for name in WorkerSettings.model_fields:
        assert fields[name][:2] == ("worker", name) and env_name(name) == "HAILSTREAM_" + name.upper()
    for name in TrainerSettings.model_fields:
        assert fields["trainer_" + name][:2] == ("trainer", name)
        assert env_name("trainer_" + name) == "HAILSTREAM_TRAINER_" + name.upper()


def test_every_section_setting_reads_its_env_var() -> None:
    env = {"HAILSTREAM_TRAINER_STEPS": "7", "HAILSTREAM_TRAINER_EVERY_EVENTS": "none", "HAILSTREAM_BASELINES": "off",
           "HAILSTREAM_TRAINER_METRICS_PORT": "0", "HAILSTREAM_CHECKPOINT": "/m.safetensors", "HAILSTREAM_THREADS": "2"}
    s = Settings.from_env(env)
    assert s.trainer.steps == 7 and s.trainer.every_events is None and s.trainer.metrics_port == 0
    assert s.worker.baselines is False and s.worker.checkpoint == Path("/m.safetensors") and s.worker.threads == 2
    assert s.trainer.threads == 1  # the worker's HAILSTREAM_THREADS is not the trainer's
    with pytest.raises(SettingsError, match="HAILSTREAM_TRAINER_STEPS"):
        Settings.from_env({"HAILSTREAM_TRAINER_STEPS": "many"})


def test_overrides_win_and_none_means_not_given() -> None:
    env = {"HAILSTREAM_TOP_K": "20", "HAILSTREAM_PARTITIONS": "2"}
    s = Settings.from_env(env, top_k=5, partitions=None, web_port="7000")
    assert s.top_k == 5 and s.partitions == 2 and s.worker.web_port == 7000


def test_empty_env_value_is_unset() -> None:
    assert Settings.from_env({"HAILSTREAM_PARTITIONS": "  "}).partitions == 4


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("HAILSTREAM_PARTITIONS", "four", "integer"),
        ("HAILSTREAM_PARTITIONS", "4.0", "integer"),
        ("HAILSTREAM_BATCH_TIMEOUT", "soon", "number"),
        ("HAILSTREAM_BATCH_TIMEOUT", "nan", "number"),
        ("HAILSTREAM_WEB_PORT", "http", "integer"),
    ],
)
def test_bad_env_value_names_variable_and_type(var: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({var: value})
    assert var in str(e.value) and expected in str(e.value) and repr(value) in str(e.value)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HAILSTREAM_PARTITIONS": "0"}, "HAILSTREAM_PARTITIONS"),
        ({"HAILSTREAM_TOP_K": "-1"}, "HAILSTREAM_TOP_K"),
        ({"HAILSTREAM_WEB_PORT": "70000"}, "HAILSTREAM_WEB_PORT"),
        ({"HAILSTREAM_BATCH_TIMEOUT": "-1"}, "HAILSTREAM_BATCH_TIMEOUT"),
        ({"HAILSTREAM_BASELINE_MAX_NEXT": "-1"}, "HAILSTREAM_BASELINE_MAX_NEXT"),
        ({"HAILSTREAM_BASELINE_MAX_ITEMS": "-5"}, "HAILSTREAM_BASELINE_MAX_ITEMS"),
        ({"HAILSTREAM_WINDOW_STRIDE": "-1"}, "HAILSTREAM_WINDOW_STRIDE"),
        ({"HAILSTREAM_STATE_CACHE_MB": "0"}, "HAILSTREAM_STATE_CACHE_MB"),
        ({"HAILSTREAM_SECURITY_PROTOCOL": "TLS"}, "HAILSTREAM_SECURITY_PROTOCOL"),
        ({"HAILSTREAM_LOG_LEVEL": "LOUD"}, "HAILSTREAM_LOG_LEVEL"),
        ({"HAILSTREAM_BOOTSTRAP_SERVERS": " , "}, "HAILSTREAM_BOOTSTRAP_SERVERS"),
        ({"HAILSTREAM_INTERACTIONS_TOPIC": "has space"}, "TOPIC"),
        ({"HAILSTREAM_SECURITY_PROTOCOL": "SASL_SSL"}, "HAILSTREAM_SASL_MECHANISM"),
        ({**SASL, "HAILSTREAM_SASL_PASSWORD": ""}, "HAILSTREAM_SASL_PASSWORD"),
        ({"HAILSTREAM_SSL_KEYFILE": "/k.pem"}, "HAILSTREAM_SSL_CERTFILE"),
    ],
)
def test_invalid_values_are_rejected_with_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.from_env({}, partitons=3)


def test_frozen_and_replace_revalidates() -> None:
    s = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.partitions = 3  # type: ignore[misc]
    assert s.replace(partitions=3).partitions == 3
    assert s.replace(batch_size=8, trainer_steps=2).worker.batch_size == 8 and s.replace(trainer_steps=2).trainer.steps == 2
    with pytest.raises(SettingsError):
        s.replace(partitions=0)


def test_password_never_shown() -> None:
    s = Settings.from_env(SASL)
    assert s.sasl_password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(s) and "s3cr3t-pw" not in str(s)
    assert s.redacted()["sasl_password"] == "***"
    assert "s3cr3t-pw" not in str(s.redacted())


def test_kafka_python_kwargs_pass_security_through() -> None:
    plain = Settings().kafka_python_kwargs()
    assert plain == {"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "PLAINTEXT"}
    kw = Settings.from_env({**SASL, "HAILSTREAM_SSL_CAFILE": "/ca.pem"}).kafka_python_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("alice", "s3cr3t-pw")
    assert "ssl_cafile" not in kw  # TLS files only matter with an SSL protocol
    tls = Settings(security_protocol="SSL", ssl_cafile=Path("/ca.pem"), ssl_certfile=Path("/c.pem"),
                   ssl_keyfile=Path("/k.pem")).kafka_python_kwargs()
    assert (tls["ssl_cafile"], tls["ssl_certfile"], tls["ssl_keyfile"]) == ("/ca.pem", "/c.pem", "/k.pem")


def test_kafka_python_kwargs_are_accepted_by_kafka_python() -> None:
    from kafka.admin import KafkaAdminClient
    from kafka.producer import KafkaProducer

    kw = Settings.from_env(SASL).kafka_python_kwargs()
    for cls in (KafkaAdminClient, KafkaProducer):
        assert set(kw) <= set(cls.DEFAULT_CONFIG), cls


def test_faust_credentials() -> None:
    from faust.auth import SASLCredentials, SSLCredentials

    assert Settings().faust_broker_credentials() is None
    sasl = Settings.from_env(SASL).faust_broker_credentials()
    assert isinstance(sasl, SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == ("alice", "s3cr3t-pw", "SCRAM-SHA-256")
    assert sasl.protocol.value == "SASL_PLAINTEXT"
    sasl_ssl = Settings.from_env({**SASL, "HAILSTREAM_SECURITY_PROTOCOL": "SASL_SSL"}).faust_broker_credentials()
    assert sasl_ssl.protocol.value == "SASL_SSL" and sasl_ssl.ssl_context is not None
    assert isinstance(Settings(security_protocol="SSL").faust_broker_credentials(), SSLCredentials)
    assert Settings(bootstrap_servers="a:1, b:2").faust_broker_urls() == ["kafka://a:1", "kafka://b:2"]


def test_aiokafka_kwargs_build_an_ssl_context() -> None:
    import ssl

    assert "ssl_context" not in Settings().aiokafka_kwargs()
    kw = Settings(security_protocol="SSL").aiokafka_kwargs()
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    with pytest.raises(SettingsError, match="SSL_CAFILE"):
        Settings(security_protocol="SSL", ssl_cafile=Path("/nonexistent/ca.pem")).aiokafka_kwargs()


def test_to_env_round_trips_for_child_processes():
    s = Settings.from_env(env={}, bootstrap_servers="h:1", partitions=3, sasl_password="pw",
                          security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")
    env = s.to_env()
    assert env["HAILSTREAM_PARTITIONS"] == "3" and "HAILSTREAM_SSL_CAFILE" not in env
    back = Settings.from_env(env=env)
    assert back == s and back.sasl_password == "pw"


def test_replication_factor_is_a_setting_of_at_least_one() -> None:
    assert Settings().replication_factor == 1
    assert Settings.from_env({"HAILSTREAM_REPLICATION_FACTOR": "3"}).replication_factor == 3
    with pytest.raises(SettingsError, match="HAILSTREAM_REPLICATION_FACTOR"):
        Settings(replication_factor=0)
