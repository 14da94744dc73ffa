"""Secrets never leave the process: camera passwords, tokens and keys are replaced by ``***`` in every
text the process shows (logs, status, HTTP answers, MQTT, events, errors).

Two layers:

- :func:`redact_url` shows a URL without its user info and with password-like query values hidden
  (``rtsp://admin:secret@cam/live?token=x`` -> ``rtsp://***@cam/live?token=***``). Code that shows a
  source uses it (``SourceSpec.shown``); only the capture opens the real URL.
- :data:`SECRETS`, a process-wide register of the secret strings themselves (:func:`secrets_of` finds
  them in a URL; settings register tokens and passwords). :func:`scrub` replaces each one in any text,
  and :func:`install_log_filter` applies it to every log record, so that a library's error message
  that quotes the URL (OpenCV, FFmpeg, paho) cannot carry the password out either.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
# query parameters whose value is a secret (matched case-insensitively against the whole name)
SECRET_PARAM = re.compile(
    r"^(pass|passwd|password|pwd|secret|token|access_token|auth|authorization|key|api_?key|sig|signature|"
    r"credential|credentials|session|sessionid|x-amz-signature|x-amz-credential)$",
    re.IGNORECASE,
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MIN_SECRET = 3  # shorter strings are not registered: replacing "ab" everywhere would garble the text


def redact_url(text: str) -> str:
    """``text`` with the user info of a URL hidden and password-like query values masked; anything
    that is not a URL comes back unchanged."""
    if not _URL.match(text.strip()):
        return text
    try:
        p = urlsplit(text.strip())
    except ValueError:
        return MASK
    shown = text.strip()
    if "@" in p.netloc:
        shown = shown.replace(p.netloc, f"{MASK}@{p.netloc.rsplit('@', 1)[1]}", 1)
    for part in p.query.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and SECRET_PARAM.match(unquote(name)):
            shown = shown.replace(part, f"{name}={MASK}", 1)
    return shown


def secrets_of(text: str) -> list[str]:
    """The secret parts of a URL: the user info (``user:password``), the password, password-like query
    values (raw and decoded). A bare user name is not registered: scrubbing ``cam`` everywhere would garble
    the text (a URL that shows it goes through :func:`redact_url`)."""
    if not _URL.match(text.strip()):
        return []
    try:
        p = urlsplit(text.strip())
    except ValueError:
        return [text.strip()]
    out: list[str] = []
    if "@" in p.netloc:
        userinfo = p.netloc.rsplit("@", 1)[0]
        raw_password = userinfo.split(":", 1)[1] if ":" in userinfo else None
        out += [userinfo, *(x for x in (raw_password, p.password) if x)]
        out += [unquote(x) for x in (raw_password, p.password) if x]
    for name, value in parse_qsl(p.query, keep_blank_values=True):
        if value and SECRET_PARAM.match(name):
            out += [value, quote(value, safe="")]
    return [s for s in dict.fromkeys(out) if len(s) >= MIN_SECRET]


class SecretRegister:
    """The process's known secrets; thread-safe; ``scrub`` replaces every one (longest first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, *secrets: str | None) -> None:
        new = [s for s in secrets if s and len(s) >= MIN_SECRET]
        if not new:
            return
        with self._lock:
            merged = set(self._secrets) | set(new)
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def add_url(self, text: str) -> None:
        self.add(*secrets_of(text))

    def scrub(self, text: str) -> str:
        for s in self._secrets:  # a tuple: read without the lock
            if s in text:
                text = text.replace(s, MASK)
        return text

    def scrub_obj(self, obj: Any) -> Any:
        """Every string inside a JSON-like object, scrubbed (a new object where anything changed)."""
        if not self._secrets:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {k: self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.scrub_obj(v) for v in obj]
        return obj


SECRETS = SecretRegister()


def scrub(text: str) -> str:
    return SECRETS.scrub(text)


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if SECRETS._secrets:
            msg = record.getMessage()
            clean = SECRETS.scrub(msg)
            if record.exc_info and record.exc_text is None:  # the traceback's text too
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = SECRETS.scrub(record.exc_text)
            if clean != msg:
                record.msg, record.args = clean, ()
        return True


_FILTER = _ScrubFilter()


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Scrub every record that reaches the handlers of ``logger`` (default: the root logger's)."""
    for h in (logger or logging.getLogger()).handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)
