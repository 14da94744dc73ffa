"""Where a history lives: one SQLite file (the default) or a PostgreSQL database shared by several boxes.

    history_url("/var/cezsar/history.sqlite")     -> sqlite file
    history_url("/var/cezsar/")                    -> /var/cezsar/history.sqlite (a folder: the file in it)
    history_url("postgresql://cezsar:pw@db/site")  -> PostgreSQL (psycopg 3)

:meth:`HistoryURL.redacted` is the only form that is ever logged, shown in the status or sent over HTTP:
the password of a PostgreSQL URL never leaves the process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cezsar.errors import CezsarError
from cezsar.redact import SECRETS

FILE_NAME = "history.sqlite"
_PG = re.compile(r"^postgres(?:ql)?(?:\+psycopg)?://", re.IGNORECASE)


@dataclass(frozen=True)
class HistoryURL:
    kind: str  # "sqlite" | "postgresql"
    path: Path | None  # the SQLite file
    url: str  # the SQLAlchemy URL (with the password, for the engine only)
    shown: str  # the same without the password

    def redacted(self) -> str:
        return self.shown

    def __repr__(self) -> str:  # never the password, even in a traceback's locals
        return f"HistoryURL({self.shown!r})"

    __str__ = redacted


def redact(text: str) -> str:
    """Any ``scheme://user:password@host`` in ``text`` with the password replaced by ``***``."""
    return re.sub(r"(://[^/\s:@]*):[^@\s/]*@", r"\1:***@", text)


def history_url(value: str | Path, password: str | None = None) -> HistoryURL:
    """``value`` (a file, a folder or a postgresql:// URL) -> HistoryURL; ``password``: the PostgreSQL
    password from elsewhere (an environment variable), when the URL has none."""
    text = str(value).strip()
    if not text:
        raise CezsarError("history: empty location (give a file, a folder or a postgresql:// URL)")
    if _PG.match(text):
        parts = urlsplit(text)
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise CezsarError(f"history {redact(text)}: no host in the PostgreSQL URL")
        user = parts.username or ""
        pw = parts.password if parts.password is not None else password
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        auth = quote(user, safe="") + (":" + quote(pw, safe="") if pw else "") + ("@" if user or pw else "")
        shown_auth = quote(user, safe="") + (":***" if pw else "") + ("@" if user or pw else "")
        SECRETS.add(pw)  # scrubbed from every log line, whatever library quotes it (cezsar/redact.py)
        rest = (parts.path, parts.query, "")
        url = urlunsplit(("postgresql+psycopg", auth + host + port, *rest))
        shown = urlunsplit(("postgresql", shown_auth + host + port, *rest))
        return HistoryURL("postgresql", None, url, shown)
    if "://" in text:
        raise CezsarError(f"history {redact(text)}: expected a file, a folder or a postgresql:// URL")
    p = Path(os.path.expanduser(text))
    if p.is_dir() or text.endswith(("/", os.sep)):
        p = p / FILE_NAME
    p = p.absolute()
    return HistoryURL("sqlite", p, f"sqlite:///{p}", str(p))
