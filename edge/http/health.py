"""Health and metrics routes: ``/healthz``, ``/readyz``, ``/health/streams`` and ``/metrics``.

- ``GET /healthz``: liveness, always 200 ``{"status": "ok", "uptime": s}`` while the process serves.
- ``GET /readyz``: readiness of the process from the ``ready`` callback (models loaded, started, main
  loop running): 200 ``{"ready": true, "reasons": []}`` or 503 with the reasons. Cameras do not count:
  a dead camera is not fixed by restarting the container.
- ``GET /health/streams``: every stream's health (edge/health.py): ``{"streams": {name: {"state",
  "reason", "since", "last_frame_age"}}, "live": n, "total": n}``; 200, or with ``?strict=1`` 503 when
  any stream is not live (a check that should fail on a dead camera).
- ``GET /metrics``: Prometheus text format from a :class:`edge.http.metrics.Metrics`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from edge.health import UP
from edge.http.metrics import Metrics
from edge.http.server import json_response, web

ReadyCheck = Callable[[], "tuple[bool, Sequence[str]]"]
StreamsHealth = Callable[[], "dict[str, dict[str, Any]]"]


class HealthRoutes:
    def __init__(
        self, ready: ReadyCheck | None = None, metrics: Metrics | None = None, streams: StreamsHealth | None = None
    ) -> None:
        self.ready, self.metrics, self.streams = ready, metrics, streams
        self.started_at = time.time()

    def attach(self, app: Any) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/health/streams", self._streams)
        app.router.add_get("/metrics", self._metrics)

    async def _streams(self, request: Any) -> Any:
        health = {} if self.streams is None else await asyncio.get_running_loop().run_in_executor(None, self.streams)
        live = sum(1 for h in health.values() if h["state"] == UP)
        strict = request.query.get("strict", "") not in ("", "0", "false")
        code = 503 if strict and live < len(health) else 200
        return json_response({"streams": health, "live": live, "total": len(health)}, code)

    async def _healthz(self, request: Any) -> Any:
        return json_response({"status": "ok", "uptime": round(time.time() - self.started_at, 3)})

    async def _readyz(self, request: Any) -> Any:
        if self.ready is None:
            return json_response({"ready": True, "reasons": []})
        loop = asyncio.get_running_loop()
        try:
            ok, reasons = await loop.run_in_executor(None, self.ready)
        except Exception as e:  # a failing check means "not ready", with the reason
            ok, reasons = False, [f"readiness check failed: {e}"]
        return json_response({"ready": bool(ok), "reasons": [str(r) for r in reasons]}, 200 if ok else 503)

    async def _metrics(self, request: Any) -> Any:
        if self.metrics is None:
            return json_response({"error": "no metrics"}, 404)
        loop = asyncio.get_running_loop()
        body, ctype = await loop.run_in_executor(None, self.metrics.render)
        resp = web().Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp
