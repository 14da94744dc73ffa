"""An HTTP server on a free loopback port with the runtime's health, metrics and media routers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from edge.http import HttpServer, Metrics
from edge.http.health import HealthRoutes
from edge.http.media import MediaRoutes


def serve(
    *,
    ready: Callable[[], tuple[bool, Sequence[str]]] | None = None,
    metrics: Metrics | None = None,
    token: str | None = None,
    media_dir: Path | None = None,
    bind: str = "127.0.0.1",
    port: int = 0,
) -> HttpServer:
    """Not started: use it as a context manager (``with serve(...) as srv``)."""
    srv = HttpServer(bind, port, token=token)
    srv.add_router(HealthRoutes(ready, metrics), "/healthz", "/readyz", "/metrics")
    if media_dir is not None:
        srv.add_router(MediaRoutes(media_dir), "/media")
    return srv
