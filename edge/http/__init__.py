"""The runtime's HTTP server (aiohttp, in its own thread and event loop) and its routers.

:class:`HttpServer` listens, checks the token and serves what its routers add, one router per domain,
each added with :meth:`HttpServer.add_router` before the server starts:

=====================================  ==========================================================
router                                 routes
=====================================  ==========================================================
:class:`edge.http.health.HealthRoutes` ``/healthz``, ``/readyz``, ``/metrics`` (:class:`Metrics`)
:class:`edge.http.media.MediaRoutes`   ``/media/...``: the event snapshots and clips
:class:`edge.http.sources.SourceRoutes` ``/sources``: list, add and remove streams while running
``edge.console.Console``               ``/console/...``: the web console
=====================================  ==========================================================

A new domain is one module with a class that has ``attach(app)`` (:class:`Router`).
"""

from edge.http.metrics import Metrics
from edge.http.server import HttpServer, Router, is_loopback_host

__all__ = ["HttpServer", "Metrics", "Router", "is_loopback_host"]
