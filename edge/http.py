"""HTTP endpoint for health checks and Prometheus metrics (aiohttp, in its own thread and event loop).

Routes:

- ``GET /healthz``: liveness, always 200 ``{"status": "ok", "uptime": s}`` while the process serves.
- ``GET /readyz``: readiness from the ``ready`` callback (models loaded, sources producing ...):
  200 ``{"ready": true, "reasons": []}`` or 503 ``{"ready": false, "reasons": ["cam1: reconnecting"]}``.
- ``GET /metrics``: Prometheus text format from a :class:`Metrics` (its own ``CollectorRegistry``,
  never prometheus_client's global one, so that several runtimes or tests in one process do not clash).
- ``GET /media/...``: the event snapshots and clips (edge/media.py), when ``media_dir`` is given.

It listens on loopback by default, like the ZeroMQ sockets. With ``token`` every path except
``/healthz`` needs ``Authorization: Bearer <token>`` (compared in constant time); a non-loopback
bind without a token refuses to start. A browser may give the token as the ``cezsar_token`` cookie
or once as ``?token=`` (the web console, edge/console, then sets the cookie). The aiohttp ``app``
is public so that more routes (a web console, a websocket) can be added before
:meth:`HttpServer.start`; ``loop`` is the server's event loop for handing work to it from other
threads (``asyncio.run_coroutine_threadsafe``).

:class:`Metrics` is what the runtime calls; every method is thread-safe and cheap (a counter
increment), so reader threads and the main loop may call it directly.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8080
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ReadyCheck = Callable[[], "tuple[bool, Sequence[str]]"]
SinkStats = Callable[[], Mapping[str, Any]]


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ModuleNotFoundError:
        raise CezsarError("HTTP metrics need prometheus-client: pip install 'cezsar[http]'") from None
    return prometheus_client


class Metrics:
    """The runtime's Prometheus metrics, in their own registry (``registry``).

    ============================================  ======================================================
    metric                                        what
    ============================================  ======================================================
    ``cezsar_frames_in_total{stream}``            frames decoded (:meth:`frame_in`)
    ``cezsar_frames_dropped_total{stream}``       frames dropped before inference (:meth:`frame_dropped`)
    ``cezsar_frames_encoded_total{stream}``       frames through the frame encoder (:meth:`frame_encoded`)
    ``cezsar_window_latency_seconds{stream}``     histogram, capture -> publish per window
                                                  (:meth:`window_latency`); ``_count`` = windows
    ``cezsar_events_total{stream,action}``        events started (:meth:`event`)
    ``cezsar_sink_messages_total{sink,outcome}``  per output: ``sent``, ``dropped``, ``unsent``, read
                                                  from the sink at each scrape (:meth:`watch_sink`)
    ``cezsar_sink_connected{sink}``               1/0 for sinks that report ``connected``
    ``cezsar_actions``                            active actions (:meth:`set_actions`)
    ``cezsar_runtime_info{backend,precision,..}``  always 1; the labels say what runs (:meth:`set_info`)
    ``process_*``                                 CPU, memory, open files of this process (Linux)
    ============================================  ======================================================
    """

    def __init__(self, registry: Any = None, process: bool = True) -> None:
        pc = _prometheus()
        self.registry = registry if registry is not None else pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self._frames_in = pc.Counter("cezsar_frames_in", "Frames decoded per stream.", ["stream"], registry=r)
        self._frames_dropped = pc.Counter(
            "cezsar_frames_dropped", "Frames dropped before inference per stream.", ["stream"], registry=r
        )
        self._frames_encoded = pc.Counter(
            "cezsar_frames_encoded", "Frames through the frame encoder per stream.", ["stream"], registry=r
        )
        self._latency = pc.Histogram(
            "cezsar_window_latency_seconds",
            "Capture to publish latency of each scored window.",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._events = pc.Counter(
            "cezsar_events", "Events started per stream and action.", ["stream", "action"], registry=r
        )
        self._actions = pc.Gauge("cezsar_actions", "Active actions.", registry=r)
        self._info = pc.Info("cezsar_runtime", "What the runtime runs (labels).", registry=r)
        self._sinks: dict[str, SinkStats] = {}
        self._sinks_lock = threading.Lock()
        r.register(_SinkCollector(self))
        if process:
            pc.ProcessCollector(registry=r)

    def frame_in(self, stream: str, n: int = 1) -> None:
        self._frames_in.labels(stream).inc(n)

    def frame_dropped(self, stream: str, n: int = 1) -> None:
        self._frames_dropped.labels(stream).inc(n)

    def frame_encoded(self, stream: str, n: int = 1) -> None:
        self._frames_encoded.labels(stream).inc(n)

    def window_latency(self, seconds: float, stream: str = "") -> None:
        self._latency.labels(stream).observe(max(0.0, float(seconds)))

    def event(self, stream: str, action: str) -> None:
        """One event started (call on ``phase == "start"``)."""
        self._events.labels(stream, action).inc()

    def set_actions(self, count: int) -> None:
        self._actions.set(count)

    def set_info(self, backend: str, precision: str, **labels: str) -> None:
        """E.g. ``set_info("onnxruntime-cpu", "fp32", version="0.1.0")``; replaces earlier labels."""
        self._info.info(
            {"backend": str(backend), "precision": str(precision), **{k: str(v) for k, v in labels.items()}}
        )

    def watch_sink(self, name: str, stats: SinkStats) -> None:
        """Export an output's own cumulative counters at each scrape. ``stats()`` returns a mapping with
        any of ``sent``, ``dropped``, ``unsent`` (monotonic counts) and ``connected`` (bool); e.g.
        ``metrics.watch_sink("mqtt", sink.stats)`` or ``watch_sink("zmq", lambda: {"sent": p.sent, ...})``."""
        with self._sinks_lock:
            self._sinks[name] = stats

    def unwatch_sink(self, name: str) -> None:
        with self._sinks_lock:
            self._sinks.pop(name, None)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        pc = _prometheus()
        return pc.generate_latest(self.registry), pc.CONTENT_TYPE_LATEST


class _SinkCollector:
    """Reads every watched sink's counters at scrape time (so the counts are the sinks' own)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        messages = CounterMetricFamily(
            "cezsar_sink_messages",
            "Messages per output: sent, dropped (queue full), unsent (peer down).",
            labels=["sink", "outcome"],
        )
        connected = GaugeMetricFamily("cezsar_sink_connected", "1 while the output is connected.", labels=["sink"])
        with self.metrics._sinks_lock:
            sinks = list(self.metrics._sinks.items())
        for name, stats in sinks:
            try:
                s = stats()
            except Exception as e:  # a broken sink must not break the scrape
                log.debug("metrics: sink %s stats failed: %s", name, e)
                continue
            for outcome in ("sent", "dropped", "unsent"):
                if isinstance(s.get(outcome), int | float):
                    messages.add_metric([name, outcome], float(s[outcome]))
            if isinstance(s.get("connected"), bool):
                connected.add_metric([name], 1.0 if s["connected"] else 0.0)
        yield messages
        yield connected


def is_loopback_host(host: str) -> bool:
    h = host.strip().strip("[]")
    if h in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class HttpServer:
    """``/healthz``, ``/readyz``, ``/metrics`` (and ``/media``) on ``bind:port`` in a background thread.

    ``port=0`` picks a free port (``port`` then holds the real one after :meth:`start`).
    """

    def __init__(
        self,
        bind: str = DEFAULT_BIND,
        port: int = DEFAULT_PORT,
        *,
        metrics: Metrics | None = None,
        ready: ReadyCheck | None = None,
        token: str | None = None,
        media_dir: str | Path | None = None,
    ) -> None:
        try:
            from aiohttp import web
        except ModuleNotFoundError:
            raise CezsarError("the HTTP server needs aiohttp: pip install 'cezsar[http]'") from None
        self._web = web
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
        self.bind, self.port = bind, int(port)
        self.metrics, self.ready, self.token = metrics, ready, token
        self.media_dir = Path(media_dir) if media_dir is not None else None
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._runner: Any = None

        self.app = web.Application(middlewares=[self._auth])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        if self.media_dir is not None:
            self.media_dir.mkdir(parents=True, exist_ok=True)
            self.app.router.add_static("/media/", self.media_dir, follow_symlinks=False)

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
        log.info("http: listening on %s (/healthz /readyz /metrics%s)", self.url, " /media" if self.media_dir else "")
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
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _start_site(self) -> None:
        web = self._web
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])

    # ------------------------------------------------------------------ handlers

    def _json(self, obj: Any, status: int = 200) -> Any:
        return self._web.Response(
            text=json.dumps(obj, separators=(",", ":")) + "\n", status=status, content_type="application/json"
        )

    @property
    def _auth(self) -> Any:
        web = self._web

        @web.middleware
        async def auth(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            if self.token is not None and request.path != "/healthz":
                if not self._token_ok(request):
                    resp = self._json({"error": "missing or wrong bearer token"}, 401)
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

    async def _healthz(self, request: Any) -> Any:
        return self._json({"status": "ok", "uptime": round(time.time() - self.started_at, 3)})

    async def _readyz(self, request: Any) -> Any:
        if self.ready is None:
            return self._json({"ready": True, "reasons": []})
        loop = asyncio.get_running_loop()
        try:
            ok, reasons = await loop.run_in_executor(None, self.ready)
        except Exception as e:  # a failing check means "not ready", with the reason
            ok, reasons = False, [f"readiness check failed: {e}"]
        return self._json({"ready": bool(ok), "reasons": [str(r) for r in reasons]}, 200 if ok else 503)

    async def _metrics(self, request: Any) -> Any:
        if self.metrics is None:
            return self._json({"error": "no metrics"}, 404)
        loop = asyncio.get_running_loop()
        body, ctype = await loop.run_in_executor(None, self.metrics.render)
        resp = self._web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp
