"""What keeps the HTTP server safe to leave running: who may talk to it, and how many.

Request rules (:func:`check_request`, applied by the server's middleware before any route):

- **Host.** The ``Host`` header must name this server: an IP literal, ``localhost``, this machine's
  host name, the public URL's host, or one of ``allowed_hosts``. A page on ``evil.example`` whose
  name was made to resolve to 127.0.0.1 (DNS rebinding) is refused with 421.
- **Writes from browsers.** ``POST``, ``PUT``, ``PATCH`` and ``DELETE`` that carry an ``Origin`` (every
  browser sends one on them) must come from this server's own origin (or the public URL's) and carry
  the header ``X-Cezsar-Request`` (the console sets it; a cross-site page cannot without a CORS
  preflight, which this server never grants). Clients that are not browsers (curl, scripts) send no
  ``Origin`` and are judged by the token alone.
- **JSON only.** A write with a body must be ``Content-Type: application/json``: a cross-site form or
  ``fetch(..., {mode: "no-cors"})`` can only send ``text/plain`` or form types.

Every answer carries ``X-Frame-Options: DENY``, a strict ``Content-Security-Policy``,
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.

Connection rules (:class:`ConnectionGuard`, wrapped around the server's protocol factory):

- at most ``max_connections`` at once (derived from the process's file limit when not set); at the cap a
  new connection takes the place of the oldest one that has not sent a complete request head yet (a
  flood of silent connections evicts itself, a real request still gets through), and is refused only
  when every open connection is a real one;
- a connection must send a complete request head within ``header_timeout`` seconds of connecting
  (a half-open or slowloris connection is closed), and idle keep-alive connections close after
  ``idle_timeout`` (aiohttp's keep-alive timer);
- what is refused is counted (``refused``, ``timed_out``) and logged at most once per
  :data:`LOG_EVERY` seconds (:class:`RateLimit`), never once per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("edge.http")

LOG_EVERY = 10.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-Cezsar-Request"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class RateLimit(logging.Filter):
    """Lets a record through at most once per ``every`` seconds per (logger, message template); the next
    one that passes says how many were held back."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        super().__init__()
        self.every = every
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (-1e9, 0))
            if now - last < self.every:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.every:g} s]"
        return True


_RATE = RateLimit()


def rate_limit_loggers(
    names: Iterable[str] = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access", "edge.http"),
) -> None:
    """Loggers that can be driven by remote peers (accept errors, bad requests) log at most once per
    LOG_EVERY seconds per message: a flood must not fill the disk."""
    for name in names:
        lg = logging.getLogger(name)
        if _RATE not in lg.filters:
            lg.addFilter(_RATE)


# ---------------------------------------------------------------------------------------------- requests


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class RequestRules:
    def __init__(self, public_url: str | None = None, allowed_hosts: Iterable[str] = ()) -> None:
        self.public_origin = _origin(public_url) if public_url else None
        names = {"localhost", "ip6-localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        if public_url:
            names.add((urlsplit(public_url).hostname or "").lower())
        self.hosts = names | {h.lower() for h in allowed_hosts}

    def host_ok(self, host_header: str) -> bool:
        host = _host_of(host_header)
        return bool(host) and (_is_ip(host) or host in self.hosts)

    def problem(self, method: str, headers: Any, scheme: str) -> tuple[int, str] | None:
        """(status, one line) when the request must be refused, else None."""
        host = headers.get("Host", "")
        if not self.host_ok(host):
            return 421, f"this server does not answer for host {host[:80]!r} (outputs.http.allowed_hosts)"
        if method not in WRITE_METHODS:
            return None
        origin = headers.get("Origin")
        if origin is not None:
            own = f"{scheme}://{host.lower()}"
            if origin.lower() not in {own, self.public_origin}:
                return 403, f"cross-origin write refused (origin {origin[:80]!r})"
            if headers.get(CSRF_HEADER) is None:
                return 403, f"a write from a browser needs the {CSRF_HEADER} header"
        elif headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site write refused"
        has_body = int(headers.get("Content-Length", "0") or 0) > 0 or "Transfer-Encoding" in headers
        ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if has_body and ctype != "application/json":
            return 415, f"a write must be application/json (got {ctype or 'no content type'})"
        return None


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}".lower()


# ---------------------------------------------------------------------------------------------- connections


def default_max_connections() -> int:
    """A quarter of the process's file descriptors (the rest: cameras, sockets, files), 16..1024."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 4))


class ConnectionGuard:
    """Wraps a protocol factory (aiohttp's server): caps open connections and closes those that do not
    send a request head in time. Runs on the server's event loop only."""

    def __init__(self, factory: Callable[[], Any], max_connections: int, header_timeout: float) -> None:
        self.factory, self.max_connections, self.header_timeout = factory, max_connections, header_timeout
        self.open = self.refused = self.timed_out = self.evicted = 0
        self.waiting: dict[_Guarded, None] = {}  # connections without a complete request head, oldest first

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.max_connections:
            if not self.waiting:
                self.refused += 1
                log.warning("http: %d connections open (the most allowed); refusing more", self.open)
                return _Refuse()
            oldest = next(iter(self.waiting))
            self.evicted += 1
            log.warning("http: %d connections open (the most allowed); closing the oldest silent one", self.open)
            oldest.close()
        return _Guarded(self.factory(), self)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        transport.abort()


class _Guarded(asyncio.Protocol):
    """Passes everything to aiohttp's protocol; closes the connection when no complete request head
    arrived within the guard's header timeout."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self.inner, self.guard = inner, guard
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.head = b""
        self.closing = False

    def connection_made(self, transport: Any) -> None:
        self.guard.open += 1
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(self.guard.header_timeout, self._timeout)
        self.guard.waiting[self] = None
        self.inner.connection_made(transport)

    def _timeout(self) -> None:
        self.guard.timed_out += 1
        log.warning("http: closed a connection that sent no complete request within %g s", self.guard.header_timeout)
        self.close()

    def close(self) -> None:
        """Drop the connection now (it counts as closed at once: the slot is free for the next one)."""
        if not self.closing:
            self.closing = True
            self.guard.open -= 1
        self._headed()
        self.transport.abort()

    def _headed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.head = None, b""
        self.guard.waiting.pop(self, None)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.head = (self.head + data)[-4096:]
            if b"\r\n\r\n" in self.head:
                self._headed()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.guard.open -= 1
        self._headed()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
