"""Item 4: no secret in any log line, at any level, kafka-python's and aiokafka's config dumps included."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from stream.kafka.broker import free_port
from stream.settings.redact import RedactSecrets, install_redaction

pytestmark = pytest.mark.reliability
SECRET = "s3cret-pw-9f2c"


def test_a_debug_worker_setup_with_sasl_never_prints_the_password() -> None:
    # A real SASL configuration, kafka-python and aiokafka clients built and started against a port
    # with nobody behind it, everything at DEBUG: their config dumps and connection errors go through
    # the root handlers that configure_logging filters.
    port = free_port()
    code = textwrap.dedent(f"""
        import asyncio, contextlib
        from stream.settings import Settings
        s = Settings.from_env({{"HAILSTREAM_LOG_LEVEL": "DEBUG", "HAILSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                "HAILSTREAM_SASL_MECHANISM": "PLAIN", "HAILSTREAM_SASL_USERNAME": "u",
                                "HAILSTREAM_SASL_PASSWORD": "{SECRET}",
                                "HAILSTREAM_BOOTSTRAP_SERVERS": "127.0.0.1:{port}"}})
        s.configure_logging()
        import logging
        logging.getLogger("probe").debug("settings %s", s.kafka_python_kwargs())
        from stream.kafka.clients import make_producer, consumer_kwargs
        with contextlib.suppress(Exception):
            make_producer(s, request_timeout_ms=1500, max_block_ms=1500)
        import aiokafka
        async def main():
            kw = consumer_kwargs(s)
            c = aiokafka.AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers, request_timeout_ms=1500,
                                          **{{k: v for k, v in kw.items() if k.startswith(("sasl", "security"))}})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.start(), 3)
            with contextlib.suppress(Exception):
                await c.stop()
        asyncio.run(main())
        print("DONE")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "DONE" in out.stdout, text[-3000:]
    assert "DEBUG" in text and "sasl_plain_password" in text  # the dump happened (and was masked)
    assert SECRET not in text


def test_the_filter_masks_known_values_anywhere_and_password_keys(caplog: pytest.LogCaptureFixture) -> None:
    f = RedactSecrets([SECRET])
    assert SECRET not in f.redact(f"{{'sasl_plain_password': '{SECRET}'}} then {SECRET} in a URL")
    assert f.redact('"ssl_password": "x1", password=x2 token=x3') == '"ssl_password": "***", password=*** token=***'
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_redaction([SECRET])
        install_redaction([SECRET])  # idempotent
        assert sum(isinstance(x, RedactSecrets) for x in handler.filters) == 1
    finally:
        root.removeHandler(handler)
