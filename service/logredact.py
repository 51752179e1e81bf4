"""No API key ever reaches a log: a filter on the log handlers that redacts bearer tokens, in whatever form
a library writes them (``Authorization: Bearer <key>``, the ``bearer.<key>`` subprotocol, raw header
tuples at debug level), and every configured key wherever it appears."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

BEARER = re.compile(r"(?i)\b(bearer[ .])[^\s\"',;)\]]+")
REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    def __init__(self, keys: Iterable[str] = ()) -> None:
        super().__init__()
        self.keys = sorted(set(keys), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = BEARER.sub(rf"\1{REDACTED}", message)
        for key in self.keys:
            redacted = redacted.replace(key, REDACTED)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:  # a traceback could quote a header too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text = BEARER.sub(rf"\1{REDACTED}", record.exc_text)
            for key in self.keys:
                text = text.replace(key, REDACTED)
            record.exc_text = text
        return True


def install(keys: Iterable[str]) -> None:
    """On every handler of the root logger (every library's records end there: see ``tbptt serve``)."""
    redact = RedactSecrets(keys)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
