"""``/sources``: the streams of a running runtime (behind the token).

- ``GET /sources``: every stream with its state;
- ``POST /sources`` ``{"source": "NAME=URL"}``: start one more (cameras and URLs; files only from the
  ``--runtime-files`` folder; never a GStreamer pipeline);
- ``DELETE /sources/NAME``: stop one and end its open events.

Bad input gets 400 with one line; the change itself runs between two frame batches of the main loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cezsar.errors import CezsarError
from cezsar.jsonfile import parse_request
from edge.host import SourcesHost
from edge.http.server import json_response

MAX_BODY = 16 * 1024


class SourceRoutes:
    def __init__(self, host: SourcesHost) -> None:
        self.host = host

    def attach(self, app: Any) -> None:
        app.router.add_get("/sources", self._get)
        app.router.add_post("/sources", self._post)
        app.router.add_delete("/sources/{name}", self._delete)

    async def _call(self, fn: Callable[..., dict[str, Any]], *args: Any) -> Any:
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except CezsarError as e:
            return json_response({"ok": False, "error": e.message}, 400)
        return json_response({"ok": True, **body})

    async def _get(self, request: Any) -> Any:
        return await self._call(self.host.list_sources)

    async def _post(self, request: Any) -> Any:
        try:
            data = parse_request(await request.read(), "the request", MAX_BODY, 4)
        except CezsarError as e:
            return json_response({"ok": False, "error": e.message}, 400)
        text = data.get("source") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            return json_response({"ok": False, "error": 'expected JSON {"source": "NAME=URL"}'}, 400)
        return await self._call(self.host.add_source, text.strip())

    async def _delete(self, request: Any) -> Any:
        return await self._call(self.host.remove_source, request.match_info["name"])
