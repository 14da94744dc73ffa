"""The runtime's HTTP side (``outputs.http``): the server, its routers and the metrics they serve.

build_server(settings, host, outputs, stack) -> Server | None
    HttpServer (edge/http/server.py) with, one router per domain:
      HealthRoutes  /healthz /readyz /metrics     MediaRoutes   /media (with outputs.media)
      SourceRoutes  /sources                      Console       /console/ (outputs.http.console)
      HistoryRoutes /api/search /api/history      (with a history: edge/http/history.py)
    MetricsFeed: the counters the main loop feeds into edge.http.Metrics
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from edge.http import HttpServer, Metrics
from edge.http.health import HealthRoutes
from edge.http.media import MediaRoutes
from edge.http.sources import SourceRoutes
from edge.runtime.host import RuntimeHost
from edge.runtime.outputs import Outputs
from edge.runtime.streams import StreamManager
from edge.settings import RuntimeSettings


@dataclass
class MetricsFeed:
    """Frames in and dropped per stream (read from the sources' own counters), frames encoded, the
    number of actions; the outputs' counters are read by the metrics at each scrape."""

    metrics: Metrics
    _counted: dict[str, tuple[int, int]] = field(default_factory=dict)  # stream -> (frames, dropped) so far

    def start(self, loaded: Any, model_hash: str, outputs: Outputs) -> None:
        backend = loaded.backend
        self.metrics.set_info(backend.describe(), backend.precision, model=model_hash[:12])
        for name, stats in _watchable(outputs):
            self.metrics.watch_sink(name, stats)

    def encoded(self, frames: list[Any]) -> None:
        per: dict[str, int] = {}
        for f in frames:
            per[f.stream] = per.get(f.stream, 0) + 1
        for name, n in per.items():
            self.metrics.frame_encoded(name, n)

    def count(self, streams: StreamManager, actions: int) -> None:
        for s in streams.sources:
            if s.name not in self._counted:
                self.metrics.add_stream(s.name)
            frames, dropped = s.stats.frames, s.queue.dropped
            f0, d0 = self._counted.get(s.name, (0, 0))
            if frames > f0:
                self.metrics.frame_in(s.name, frames - f0)
            if dropped > d0:
                self.metrics.frame_dropped(s.name, dropped - d0)
            self._counted[s.name] = (frames, dropped)
        self.metrics.set_actions(actions)


def _watchable(outputs: Outputs) -> list[tuple[str, Any]]:
    out = [(s.name, s.stats) for s in outputs.sinks.sinks if hasattr(s, "stats") and hasattr(s, "name")]
    if outputs.media is not None:
        out.append(("media", outputs.media.stats))
    return out


@dataclass
class Server:
    http: HttpServer
    feed: MetricsFeed

    public_url: str | None = None

    def start(self, outputs: Outputs) -> None:
        """Listen (the port is known from here on); media URLs then point at /media of the public URL
        (outputs.http.public_url), else of the address it listens on."""
        self.http.start()
        if outputs.media is not None:
            outputs.media.base_url = f"{(self.public_url or self.http.url).rstrip('/')}/media"


def build_server(settings: RuntimeSettings, host: RuntimeHost, outputs: Outputs, stack: ExitStack) -> Server | None:
    o = settings.outputs.http
    if o is None:
        return None
    http = HttpServer(
        o.bind,
        o.port,
        token=o.secret(),
        public_url=o.public_url,
        allowed_hosts=tuple(o.allowed_hosts),
        max_connections=o.max_connections,
        header_timeout=o.header_timeout,
        idle_timeout=o.idle_timeout,
    )
    metrics = Metrics()
    outputs.metrics = metrics
    http.add_router(
        HealthRoutes(host.ready, metrics, host.streams_health), "/healthz", "/readyz", "/health/streams", "/metrics"
    )
    metrics.watch_streams(host.streams_health)
    http.add_router(SourceRoutes(host), "/sources")
    if outputs.media is not None:
        http.add_router(MediaRoutes(outputs.media.dir), "/media")
    if outputs.history is not None:
        from edge.http.history import HistoryRoutes

        http.add_router(HistoryRoutes(host), "/api/search", "/api/history")
    if o.console:
        from edge.console import Console

        console = Console(host, http)
        http.add_router(console, "/console/")
        outputs.add_sink(console)
        outputs.taps.append(console.tap)
        console.start()
    stack.callback(http.stop)  # started by Runtime.start(): routers can be added until then
    return Server(http, MetricsFeed(metrics), o.public_url)
