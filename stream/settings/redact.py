"""Secrets never reach a log line, at any level.

kafka-python and aiokafka log their whole configuration at DEBUG (``'sasl_plain_password':
's3cret'``), and any library may print a credential in an exception. :class:`RedactSecrets` is a
:class:`logging.Filter` put on every root handler (handler filters see the records of every
logger that propagates to the root, which a filter on the root *logger* would not): it rewrites
the formatted message, masking the value of any password-like key (``sasl_plain_password``,
``password``, ``ssl_password``, ``model_updates_key``, ...) in ``'key': 'value'`` / ``key=value``
form and every known secret value wherever it appears.

>>> f = RedactSecrets(["s3cret-pw"])
>>> f.redact("{'sasl_plain_password': 's3cret-pw', 'client_id': 'x'}")
"{'sasl_plain_password': '***', 'client_id': 'x'}"
>>> f.redact("login failed for password=hunter2 (s3cret-pw)")
'login failed for password=*** (***)'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"

_KEYS = r"[A-Za-z_]*(?:password|passwd|secret|token|sasl_oauth_token_provider|model_updates_key)[A-Za-z_]*"
# 'key': 'value' / "key": "value" (a dict repr or JSON) and key=value (keyword arguments, env)
_QUOTED = re.compile(r"""(?P<k>['"]""" + _KEYS + r"""['"]\s*:\s*)(?P<q>['"])(?P<v>(?:(?!(?P=q)).)*)(?P=q)""",
                     re.IGNORECASE)
_BARE = re.compile(r"(?P<k>\b" + _KEYS + r"\s*=\s*)(?P<v>[^\s,;)'\"}]+)", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Masks password-like values and the given ``secrets`` in every record (never drops one)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = _QUOTED.sub(lambda m: m.group("k") + m.group("q") + MASK + m.group("q"), text)
        text = _BARE.sub(lambda m: m.group("k") + MASK, text)
        for s in self.secrets:
            text = text.replace(s, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's own error path
            return True
        clean = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def install_redaction(secrets: Iterable[str] = (), logger: logging.Logger | None = None) -> RedactSecrets:
    """Put one :class:`RedactSecrets` (knowing ``secrets``) on every handler of ``logger`` (the
    root by default), replacing an earlier one: idempotent."""
    target = logger if logger is not None else logging.getLogger()
    new = RedactSecrets(secrets)
    for handler in target.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            new.secrets = sorted(set(new.secrets) | set(old.secrets), key=len, reverse=True)
            handler.removeFilter(old)
        handler.addFilter(new)
    return new
