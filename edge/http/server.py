"""The HTTP server: listens in a background thread, checks the token, serves its routers' routes.

It listens on loopback by default, like the ZeroMQ sockets. With ``token`` every path except
``/healthz`` needs ``Authorization: Bearer <token>`` (compared in constant time); a non-loopback bind
without a token refuses to start. A browser may give the token as the ``cezsar_token`` cookie or once
as ``?token=`` (the web console, edge/console, then sets the cookie). Routes come from routers added
with :meth:`HttpServer.add_router` before :meth:`HttpServer.start`; ``loop`` is the server's event loop
for handing work to it from other threads (``asyncio.run_coroutine_threadsafe``).

Before any route, edge/http/guard.py's rules apply: the Host header, the origin and a custom header
on browser writes, JSON-only writes, security headers on every answer, a cap on open connections, a
timeout for a request head, and rate-limited logging of what peers can cause. A handler that fails
answers 500 with one line; the traceback goes to the log (rate-limited), never to the client.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cezsar import extras
from cezsar.errors import CezsarError
from edge.http.guard import (
    SECURITY_HEADERS,
    ConnectionGuard,
    RequestRules,
    default_max_connections,
    rate_limit_loggers,
)

extras.requires("aiohttp", extra="http")  # imported where the server starts (web())

log = logging.getLogger("edge.http")
MAX_BODY = 256 * 1024  # bytes of a request body; routes read less (edge/http/sources.py: 64 KiB)
# the listen backlog, which is also how many connections asyncio accepts per loop round: a refused or
# evicted socket is closed one round later, so this bounds the descriptors a flood holds in between
ACCEPT_BATCH = 16


async def _security_headers(request: Any, response: Any) -> None:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)


class Router(Protocol):
    """One domain's routes: ``attach`` adds them to the aiohttp application (once, before start)."""

    def attach(self, app: Any) -> None: ...


def is_loopback_host(host: str) -> bool:
    h = host.strip().strip("[]")
    if h in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def web() -> Any:
    """aiohttp's ``web`` module, or one line naming the extra that installs it."""
    try:
        from aiohttp import web as aiohttp_web
    except ModuleNotFoundError:
        raise CezsarError("the HTTP server needs aiohttp: pip install 'cezsar[http]'") from None
    return aiohttp_web


def json_response(obj: Any, status: int = 200) -> Any:
    return web().Response(
        text=json.dumps(obj, separators=(",", ":")) + "\n", status=status, content_type="application/json"
    )


class HttpServer:
    """Listens on ``bind:port`` in a background thread. ``port=0`` picks a free port (``port`` then holds
    the real one after :meth:`start`)."""

    def __init__(
        self,
        bind: str,
        port: int,
        *,
        token: str | None = None,
        public_url: str | None = None,
        allowed_hosts: tuple[str, ...] = (),
        max_connections: int | None = None,
        header_timeout: float = 10.0,
        idle_timeout: float = 15.0,
    ) -> None:
        w = web()
        where = f"http {bind}:{port}"
        if not 0 <= int(port) < 65536:
            raise CezsarError(f"{where}: port must be 0-65535")
        if token is not None and not token.strip():
            raise CezsarError(f"{where}: the token is empty")
        if not is_loopback_host(bind) and token is None:
            raise CezsarError(
                f"{where}: listening beyond this machine needs a token (outputs.http.token / --http-token); "
                "bind 127.0.0.1 for local use"
            )
        self.bind, self.port, self.token = bind, int(port), token
        self.rules = RequestRules(public_url, allowed_hosts)
        self.max_connections = max_connections or default_max_connections()
        self.header_timeout, self.idle_timeout = header_timeout, idle_timeout
        self.guard: ConnectionGuard | None = None
        self._server: asyncio.AbstractServer | None = None
        rate_limit_loggers()
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.paths: list[str] = []  # what the routers serve, for the start line
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._runner: Any = None
        self.app = w.Application(middlewares=[self._guard, self._auth], client_max_size=MAX_BODY)
        self.app.on_response_prepare.append(_security_headers)

    def add_router(self, router: Router, *paths: str) -> HttpServer:
        """Serve one more domain's routes (``paths``: what to name in the start line)."""
        if self._thread is not None:
            raise CezsarError("http: routers are added before the server starts")
        router.attach(self.app)
        self.paths.extend(paths)
        return self

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> HttpServer:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise CezsarError(f"http {self.bind}:{self.port}: did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise CezsarError(f"http {self.bind}:{self.port}: cannot listen ({self._error})")
        log.info("http: listening on %s (%s)", self.url, " ".join(self.paths))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._start_site())
        except Exception as e:
            self._error = e
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _start_site(self) -> None:
        w = web()
        self._runner = w.AppRunner(self.app, access_log=None, keepalive_timeout=self.idle_timeout)
        await self._runner.setup()
        self.guard = ConnectionGuard(self._runner.server, self.max_connections, self.header_timeout)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard, self.bind, self.port, reuse_address=True, backlog=ACCEPT_BATCH
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ the token

    @property
    def _guard(self) -> Any:
        @web().middleware
        async def guard(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            problem = self.rules.problem(request.method, request.headers, request.scheme)
            if problem is not None:
                return json_response({"ok": False, "error": problem[1]}, problem[0])
            try:
                return await handler(request)
            except web().HTTPException:
                raise
            except CezsarError as e:
                return json_response({"ok": False, "error": e.message}, 400)
            except Exception:  # noqa: BLE001 - one line to the client, the traceback to the log
                log.exception("http: %s %s failed", request.method, request.path)
                return json_response({"ok": False, "error": "internal error (see the runtime's log)"}, 500)

        return guard

    @property
    def _auth(self) -> Any:
        @web().middleware
        async def auth(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            if self.token is not None and request.path != "/healthz":
                if not self._token_ok(request):
                    resp = json_response({"error": "missing or wrong bearer token"}, 401)
                    resp.headers["WWW-Authenticate"] = 'Bearer realm="cezsar"'
                    return resp
            return await handler(request)

        return auth

    def _token_ok(self, request: Any) -> bool:
        """``Authorization: Bearer <token>``; for a browser (the web console: EventSource and <img>
        cannot send headers) also the ``cezsar_token`` cookie or a ``?token=`` query. Constant time."""
        assert self.token is not None
        want = self.token.encode()
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        candidates = [value.strip()] if scheme.lower() == "bearer" else []
        candidates += [request.cookies.get("cezsar_token", ""), request.query.get("token", "")]
        return any(c and hmac.compare_digest(c.encode(), want) for c in candidates)
