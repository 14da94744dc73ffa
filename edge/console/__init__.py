"""The live web console (issue 15): watch every stream with its scores and events, and edit the
action descriptions while the runtime runs. Plain HTML/JS/CSS (``static/``, package data), no build.

:class:`Console` sees the runtime through a small typed interface (edge/host.py's ``ConsoleHost``:
the action store, the stream names, the text tower, the newest windows, the scorer), never the
runtime object. The runtime's server builder (edge/runtime/server.py) makes one when ``--http`` is on
and the console is not switched off. The console is three things at once:

- a router: its routes are added to the HTTP server (``HttpServer.add_router``) under ``/console``;
- a sink: it sees the scores, event and status payloads that edge/messages.py builds for every
  other sink, and forwards them to the browsers over Server-Sent Events;
- a frame tap: it only keeps a reference to the newest decoded frame of each stream; one encoder
  thread downscales and JPEG-encodes it at the frame-rate cap, and only while a browser is watching
  that stream (MJPEG, ``multipart/x-mixed-replace``).

Routes (all behind the HTTP server's token, when it has one):

======================================  ==========================================================
``GET  /console/``                      the page (``?token=T`` once: sets an HttpOnly cookie)
``GET  /console/api/stream``            SSE: ``hello`` (history), then ``msg`` (every published
                                        message) and ``actions`` (the action set, on every change)
``GET  /console/api/video/{stream}``    MJPEG of one stream, downscaled, at most ``fps`` frames/s
``GET  /console/api/actions``           the action set (as the control socket's ``list``)
``POST /console/api/actions``           a control request (``add``/``update``/``remove``): handled by
                                        edge.control.ControlHandler, i.e. the same ActionStore,
                                        validation, one-line errors and atomic write-back
``POST /console/api/try``               ``{"text": ...}`` -> its score on each stream's latest window
======================================  ==========================================================
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.jsonfile import parse_request
from cezsar.zeroshot import class_prototype
from edge import messages
from edge.actions import Action, ActionSet, parse_action_obj
from edge.control import ControlHandler, describe_set
from edge.host import ConsoleHost
from edge.http import HttpServer
from edge.scorer import Scorer

log = logging.getLogger(__name__)

COOKIE = "cezsar_token"
DEFAULT_FPS = 5.0  # live-view frame-rate cap per stream
DEFAULT_WIDTH = 480  # live-view width in pixels (downscaled, never upscaled)
JPEG_QUALITY = 70
HISTORY_SECONDS = 300.0  # scores kept for a browser that connects later
MAX_EVENTS = 200
TRY_CACHE = 32  # "try" sentences whose text embedding is kept
STATIC = ("index.html", "console.js", "console.css")
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _static(name: str) -> bytes:
    return resources.files("edge.console").joinpath("static", name).read_bytes()


class Console:
    """The console's state: a sink, a frame tap and an encoder thread; ``routes`` serve it."""

    name = "console"

    def __init__(
        self, host: ConsoleHost, http: HttpServer, fps: float = DEFAULT_FPS, width: int = DEFAULT_WIDTH
    ) -> None:
        if not fps > 0:
            raise CezsarError(f"console fps {fps}: must be > 0")
        self.host = host
        self.fps, self.width = float(fps), int(width)
        self.http = http
        self.handler = ControlHandler(host.store, None)
        self._frames: dict[str, tuple[int, float, Any]] = {}  # stream -> (seq, t, bgr): the newest frame
        self._seq = 0
        self._jpeg: dict[str, tuple[int, bytes]] = {}  # stream -> (frame seq, jpeg)
        self._watchers: dict[str, int] = {}  # stream -> browsers pulling its MJPEG
        self._waiters: dict[str, asyncio.Event] = {}  # stream -> set when a new jpeg is there (loop side)
        self._clients: set[asyncio.Queue[tuple[str, str] | None]] = set()  # SSE clients (loop side)
        self._lock = threading.Lock()
        self._history: dict[str, deque[dict[str, Any]]] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._status: dict[str, Any] | None = None
        self._try: dict[str, np.ndarray] = {}
        self._outbox: deque[dict[str, Any]] = deque(maxlen=1000)  # messages on their way to the loop
        self._scheduled = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._encoder = threading.Thread(target=self._encode_loop, name="console-encoder", daemon=True)
        self.jpegs_encoded = 0
        self.messages_seen = 0

    # -- runtime side (main loop thread): both must stay cheap ------------------------------------
    def tap(self, stream: str, t: float, bgr: Any) -> None:
        """Frame tap: keep a reference to the newest frame; nothing is copied or encoded here."""
        self._seq += 1
        self._frames[stream] = (self._seq, t, bgr)
        if self._watchers.get(stream):
            self._wake.set()

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        """Sink: record (history for late browsers) and hand the message to the browsers' loop."""
        self.messages_seen += 1
        kind = payload.get("type")
        with self._lock:
            if kind == "scores":
                point = {
                    "time": payload.get("time"),
                    "center": payload.get("window", {}).get("center"),
                    "scores": payload.get("scores"),
                    "smoothed": payload.get("smoothed"),
                    "background": payload.get("background"),
                }
                h = self._history.setdefault(str(payload.get("stream")), deque())
                h.append(point)
                horizon = time.time() - HISTORY_SECONDS
                while h and (h[0]["time"] or 0) < horizon:
                    h.popleft()
            elif kind == "event":
                self._events.append(payload)
            elif kind == "status":
                self._status = payload
        if self._clients and self.http.loop is not None:
            self._outbox.append({"topic": topic, **payload})
            if not self._scheduled:  # one wake-up of the server's loop per burst, not per message
                self._scheduled = True
                self.http.loop.call_soon_threadsafe(self._drain)
        return True

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._encoder.is_alive():
            self._encoder.join(2.0)
        loop = self.http.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._fanout_end)
            except RuntimeError:  # the loop is already gone
                pass

    # -- encoder thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self._encoder.start()

    def _encode_loop(self) -> None:
        import cv2

        period = 1.0 / self.fps
        done: dict[str, int] = {}
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            t0 = time.monotonic()
            for stream, n in list(self._watchers.items()):
                item = self._frames.get(stream)
                if not n or item is None or done.get(stream) == item[0]:
                    continue
                seq, _, bgr = item
                try:
                    h, w = bgr.shape[:2]
                    if w > self.width:
                        size = (self.width, max(1, round(h * self.width / w)))
                        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                except Exception as e:  # noqa: BLE001 - a bad frame must not stop the view
                    log.debug("console: encoding %s failed: %s", stream, e)
                    continue
                if not ok:
                    continue
                done[stream] = seq
                self._jpeg[stream] = (seq, buf.tobytes())
                self.jpegs_encoded += 1
                loop = self.http.loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._frame_ready, stream)
            # the cap: at most one encode per stream per period, however fast frames come
            rest = period - (time.monotonic() - t0)
            if rest > 0 and self._stop.wait(rest):
                return
            if any(self._watchers.values()):
                self._wake.set()

    # -- loop side ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        self._scheduled = False
        while self._outbox:
            self._fanout("msg", self._outbox.popleft())

    def _fanout(self, kind: str, obj: dict[str, Any]) -> None:
        data = messages.to_json(obj)
        for q in list(self._clients):
            if q.qsize() > 500:  # a stalled browser misses messages, never holds memory
                continue
            q.put_nowait((kind, data))

    def _fanout_end(self) -> None:
        for q in list(self._clients):
            q.put_nowait(None)

    def _frame_ready(self, stream: str) -> None:
        ev = self._waiters.pop(stream, None)
        if ev is not None:
            ev.set()

    def actions_state(self) -> dict[str, Any]:
        store = self.host.store
        aset: ActionSet = store.current
        out = describe_set(store)
        out["explicit"] = [a.explicit() for a in aset.actions]
        out["error_line"] = store.error_line
        out["streams"] = self.host.stream_names()
        return out

    def hello(self) -> dict[str, Any]:
        with self._lock:
            history = {s: list(h) for s, h in self._history.items()}
            events = list(self._events)
            status = self._status
        return {
            "streams": self.host.stream_names(),
            "zones": self.host.zones(),
            "history": history,
            "events": events,
            "status": status,
            "actions": self.actions_state(),
            "fps": self.fps,
            "history_seconds": HISTORY_SECONDS,
        }

    # -- "try a description" -----------------------------------------------------------------------
    def try_text(self, text: Any) -> dict[str, Any]:
        """A sentence -> its score on each stream's newest window: the text tower once per new sentence,
        the cached window embeddings (Recognizer.latest), the background of the scorer in use."""
        if not isinstance(text, str):
            raise CezsarError("try: 'text' must be a string")
        action = parse_action_obj({"name": "try", "descriptions": [text]}, "try", "try")
        sentence = action.descriptions[0]
        texts = self.host.store.current.texts_for(action)  # through the set's templates, as its actions are
        key = "\n".join(texts)
        emb = self._try.pop(key, None)
        if emb is None:
            emb = class_prototype(self.host.encode_text(texts))
            self.host.forget_text(self.host.store.current.texts())  # the action set's strings stay cached
        self._try[key] = emb  # newest last
        while len(self._try) > TRY_CACHE:
            self._try.pop(next(iter(self._try)))
        scorer: Scorer | None = self.host.scorer()
        aset = ActionSet(actions=(Action("try", (sentence,)),), background=scorer.aset.background if scorer else ())
        bg = scorer.background_emb if scorer is not None else np.zeros((0, emb.shape[0]), np.float32)
        latest = self.host.latest_windows()
        streams: dict[str, Any] = {}
        if latest:
            names = sorted(latest)
            sc = Scorer(aset, emb[None], bg).score(np.stack([latest[n].embedding for n in names]))
            for i, n in enumerate(names):
                w = latest[n]
                streams[n] = {
                    "score": round(float(sc.scores[i, 0]), 4),
                    "cosine": round(float(sc.cosine[i, 0]), 4),
                    "background": None if sc.background is None else round(float(sc.background[i]), 4),
                    "window_center": round(float(w.center), 3),
                }
        return {"ok": True, "text": sentence, "streams": streams}

    # -- routes ------------------------------------------------------------------------------------
    def attach(self, app: Any) -> None:
        """Its routes on the HTTP server (a router: edge/http)."""
        from aiohttp import web

        r = app.router
        r.add_get("/", self._root)
        r.add_get("/console", self._redirect)
        r.add_get("/console/", self._index)
        for name in STATIC[1:]:
            r.add_get(f"/console/{name}", self._file(name))
        r.add_get("/console/api/stream", self._sse)
        r.add_get("/console/api/video/{stream}", self._mjpeg)
        r.add_get("/console/api/actions", self._get_actions)
        r.add_post("/console/api/actions", self._post_actions)
        r.add_post("/console/api/try", self._post_try)
        app.on_shutdown.append(self._on_shutdown)
        self._web = web

    async def _on_shutdown(self, app: Any) -> None:
        """The server stops: end the endless responses (SSE, MJPEG) so that it need not wait for them."""
        self._stop.set()
        self._wake.set()
        self._fanout_end()
        for ev in list(self._waiters.values()):
            ev.set()

    async def _redirect(self, request: Any) -> Any:
        raise self._web.HTTPFound("/console/" + (f"?{request.query_string}" if request.query_string else ""))

    async def _index(self, request: Any) -> Any:
        token = self.http.token
        if token is not None and request.query.get("token"):
            # the middleware accepted the query token: remember it in a cookie, so the page's own requests
            # (EventSource, <img>, fetch) need not carry it, and take it out of the address bar (history,
            # bookmarks, a screen share) with a redirect to the bare page
            moved = self._web.HTTPSeeOther("/console/")
            moved.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            moved.headers["Cache-Control"] = "no-store"
            raise moved
        resp = self._web.Response(body=_static("index.html"), content_type="text/html")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def _root(self, request: Any) -> Any:
        raise self._web.HTTPFound("/console/")

    def _file(self, name: str) -> Callable[[Any], Any]:
        ctype = CONTENT_TYPES["." + name.rsplit(".", 1)[1]]

        async def serve(request: Any) -> Any:
            resp = self._web.Response(body=_static(name), content_type=ctype)
            resp.headers["Cache-Control"] = "no-store"
            return resp

        return serve

    def _json(self, obj: Any, status: int = 200) -> Any:
        return self._web.Response(text=messages.to_json(obj), status=status, content_type="application/json")

    async def _get_actions(self, request: Any) -> Any:
        return self._json(self.actions_state())

    async def _post_actions(self, request: Any) -> Any:
        raw = await request.read()
        loop = asyncio.get_running_loop()
        # the ControlHandler embeds new descriptions (text tower): off the server's loop
        reply = await loop.run_in_executor(None, self.handler.handle_bytes, raw)
        if reply.get("ok"):
            reply["state"] = self.actions_state()
        return self._json(reply, 200 if reply.get("ok") else 400)

    async def _post_try(self, request: Any) -> Any:
        try:
            body = parse_request(await request.read(), "try: the request", 16 * 1024, 4)
            if not isinstance(body, dict):
                raise CezsarError("try: the request must be a JSON object")
        except CezsarError as e:
            return self._json(messages.reply_error(e.message, "try"), 400)
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(None, self.try_text, body.get("text"))
        except CezsarError as e:
            return self._json(messages.reply_error(e.message, "try"), 400)
        return self._json(out)

    async def _sse(self, request: Any) -> Any:
        web = self._web
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._clients.add(q)
        try:
            await resp.write(f"event: hello\ndata: {messages.to_json(self.hello())}\n\n".encode())
            store = self.host.store
            seen = (store.version, store.error)
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), 0.25)
                except TimeoutError:
                    item = ("", "")
                if item is None or self._stop.is_set():
                    break
                now = (store.version, store.error)
                if now != seen:  # an edit from the file, the control socket or another browser
                    seen = now
                    await resp.write(f"event: actions\ndata: {messages.to_json(self.actions_state())}\n\n".encode())
                if item[0]:
                    await resp.write(f"event: {item[0]}\ndata: {item[1]}\n\n".encode())
                elif q.empty():
                    await resp.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(q)
        return resp

    async def _mjpeg(self, request: Any) -> Any:
        web = self._web
        stream = request.match_info["stream"]
        if stream not in self.host.stream_names():
            return self._json(messages.reply_error(f"no stream named '{stream}'"), 404)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "multipart/x-mixed-replace; boundary=frame",
                "Cache-Control": "no-store",
            }
        )
        await resp.prepare(request)
        self._watchers[stream] = self._watchers.get(stream, 0) + 1
        self._wake.set()
        sent = -1
        try:
            if self._jpeg.get(stream) is None:  # no picture yet (a camera still connecting, or down): a
                # placeholder, so the image has its first part and the page's load does not wait on it
                await resp.write(_part(_placeholder()))
            while not self._stop.is_set():
                item = self._jpeg.get(stream)
                if item is None or item[0] == sent:
                    ev = self._waiters.get(stream)
                    if ev is None:
                        ev = self._waiters[stream] = asyncio.Event()
                    try:
                        await asyncio.wait_for(ev.wait(), 1.0)
                    except TimeoutError:
                        pass
                    continue
                sent, jpeg = item
                await resp.write(_part(jpeg))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers[stream] -= 1
        return resp


def _part(jpeg: bytes) -> bytes:
    """One part of the MJPEG response."""
    return f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n"


_PLACEHOLDER: bytes | None = None


def _placeholder() -> bytes:
    """A dark grey 16:9 JPEG shown until a stream's first frame arrives (made once)."""
    global _PLACEHOLDER
    if _PLACEHOLDER is None:
        import cv2

        ok, buf = cv2.imencode(".jpg", np.full((270, 480, 3), 40, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        _PLACEHOLDER = buf.tobytes() if ok else b""
    return _PLACEHOLDER
