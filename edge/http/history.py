"""The history's routes (edge/history; docs/history.md), behind the HTTP server's token:

======================================  ==========================================================
``GET  /api/search?q=...``              the best moments for a sentence (``since``, ``until``,
                                        ``stream``, ``limit``)
``GET  /api/history/events``            a page of stored events, newest first (``stream``,
                                        ``action``, ``since``, ``until``, ``page``, ``per_page``)
``GET  /api/history/events/{id}``       one event, its phases and its scores around it
``GET  /api/history/thumbnails/{id}``   a stored thumbnail (JPEG)
``POST /api/history/backtest``          ``{"action": {...}, "replaces": name, "hours": N}``: that
                                        action replayed over the stored windows
``GET  /console/history.js``, ``.css``  the console's history panels (edge/console/static)
======================================  ==========================================================

Bad input: 400 with one line; a store that cannot be reached: 503 with one line (no password).
Everything runs off the server's loop (the store and the text tower block).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from cezsar.errors import CezsarError
from edge.host import HistoryHost
from edge.http.server import json_response, web

STATIC = {"history.js": "text/javascript", "history.css": "text/css"}


def _redacted(e: BaseException) -> str:
    from edge.history.store import describe_error

    return describe_error(e)


class HistoryRoutes:
    def __init__(self, host: HistoryHost) -> None:
        self.host = host

    def attach(self, app: Any) -> None:
        r = app.router
        r.add_get("/api/search", self._search)
        r.add_get("/api/history/events", self._events)
        r.add_get("/api/history/events/{id}", self._event)
        r.add_get("/api/history/thumbnails/{id}", self._thumbnail)
        r.add_post("/api/history/backtest", self._backtest)
        for name in STATIC:
            r.add_get(f"/console/{name}", self._static(name))

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, lambda: fn(*args, **kw))
        except CezsarError as e:
            status = 503 if "not reachable" in e.message else 400
            raise _Reply(json_response({"ok": False, "error": e.message}, status)) from None
        except Exception as e:  # noqa: BLE001 - the database is down or broken: one line, no traceback
            raise _Reply(json_response({"ok": False, "error": f"history: {_redacted(e)}"}, 503)) from None

    async def _search(self, request: Any) -> Any:
        q = request.query
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            return json_response({"ok": False, "error": f"search: limit {q.get('limit')!r}: expected a number"}, 400)
        try:
            out = await self._call(
                self.host.history_search,
                q.get("q", ""),
                since=q.get("since") or None,
                until=q.get("until") or None,
                stream=q.get("stream") or None,
                limit=limit,
            )
        except _Reply as r:
            return r.response
        return json_response(out)

    async def _events(self, request: Any) -> Any:
        q = request.query
        try:
            page, per_page = int(q.get("page", "1")), int(q.get("per_page", "50"))
        except ValueError:
            return json_response({"ok": False, "error": "events: page and per_page must be numbers"}, 400)
        filters = {k: q.get(k) or None for k in ("stream", "action", "since", "until")}
        try:
            out = await self._call(self.host.history_events, page=page, per_page=per_page, **filters)
        except _Reply as r:
            return r.response
        return json_response({"ok": True, **out})

    async def _event(self, request: Any) -> Any:
        try:
            out = await self._call(self.host.history_event, request.match_info["id"])
        except _Reply as r:
            return r.response
        return json_response({"ok": True, **out})

    async def _thumbnail(self, request: Any) -> Any:
        try:
            tid = int(request.match_info["id"])
        except ValueError:
            return json_response({"ok": False, "error": "thumbnail: expected a number"}, 400)
        try:
            jpeg = await self._call(self.host.history_thumbnail, tid)
        except _Reply as r:
            return r.response
        if jpeg is None:
            return json_response({"ok": False, "error": f"no thumbnail {tid}"}, 404)
        return web().Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def _backtest(self, request: Any) -> Any:
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            return json_response({"ok": False, "error": f"backtest: the request is not a JSON object ({e})"}, 400)
        args = (
            body.get("action"),
            body.get("replaces"),
            body.get("hours", 24),
            body.get("stream"),
            body.get("per_day"),
        )
        try:
            out = await self._call(self.host.history_backtest, *args)
        except _Reply as r:
            return r.response
        return json_response(out)

    def _static(self, name: str) -> Callable[[Any], Any]:
        async def serve(request: Any) -> Any:
            body = resources.files("edge.console").joinpath("static", name).read_bytes()
            return web().Response(body=body, content_type=STATIC[name], headers={"Cache-Control": "no-store"})

        return serve


class _Reply(Exception):
    """An error response, raised out of :meth:`HistoryRoutes._call`."""

    def __init__(self, response: Any) -> None:
        super().__init__("reply")
        self.response = response
