"""The control socket: list, add, update and remove actions while the runtime runs.

A REP socket (default edge.endpoints.DEFAULT_CONTROL) served by its own thread. Requests are JSON
objects:

    {"op": "list"}
    {"op": "add", "action": {"name": "wave", "descriptions": ["a hand waving"], "threshold": 0.1}}
    {"op": "update", "name": "wave", "fields": {"threshold": 0.2}}      # null resets a field
    {"op": "remove", "name": "wave"}
    {"op": "status"}
    {"op": "ping"}
    {"op": "sources"}                                                   # the running streams
    {"op": "add_source", "source": "door=rtsp://cam2/stream"}           # start one more stream
    {"op": "remove_source", "name": "door"}                             # stop one (its events end)

An optional "id" is echoed. Replies (built by edge.messages): {"schema", "ok": true, "op", ...} or
{"schema", "ok": false, "error": "one line"}. Requests over 64 KiB get an error reply; over 1 MiB the
connection is dropped by ZeroMQ (MAXMSGSIZE). Changes go through ActionStore.modify: validated like the file, activated
(text embeddings computed) before the reply, then written back to the actions file atomically.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from cezsar.errors import CezsarError
from cezsar.jsonfile import parse_request
from edge import messages
from edge.actions import ActionStore, parse_action_obj
from edge.security import CurveServer, bind

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
HARD_MAX_BYTES = 1024 * 1024
OPS = ("list", "add", "update", "remove", "status", "ping", "sources", "add_source", "remove_source")
MAX_DEPTH = 8  # nesting of JSON objects/arrays in a request (the deepest valid one has 4)
# the control socket never reads or writes a file the client names: only the runtime's own actions file
PATH_KEYS = ("path", "file", "filename", "actions_file", "dir", "directory", "deploy", "output", "events_log")


def _named_paths(obj: Any) -> list[str]:
    """Keys anywhere in the request that name a file or folder."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() in PATH_KEYS:
                found.append(k)
            found += _named_paths(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _named_paths(v)
    return found


def describe_set(store: ActionStore) -> dict[str, Any]:
    return messages.action_set(store.current, store.version, str(store.path), store.error)


class ControlHandler:
    """Request dict -> reply dict. No sockets here (the server below owns them)."""

    def __init__(
        self, store: ActionStore, status: Callable[[], dict[str, Any]] | None = None, sources: Any = None
    ) -> None:
        """``sources``: the runtime (``list_sources``, ``add_source``, ``remove_source``); None: those ops fail."""
        self.store = store
        self.status = status
        self.sources = sources

    def handle_bytes(self, raw: bytes) -> dict[str, Any]:
        try:
            req = parse_request(raw, "request", MAX_REQUEST_BYTES, MAX_DEPTH)
        except CezsarError as e:
            return messages.reply_error(e.message)
        if not isinstance(req, dict):
            return messages.reply_error("request must be a JSON object with an 'op'")
        paths = _named_paths(req)
        if paths:
            op = req.get("op")
            return messages.reply_error(
                f"control requests cannot name files or folders (field(s) {', '.join(sorted(set(paths)))}); "
                "the runtime only uses its own --actions file",
                op if isinstance(op, str) else None,
            )
        return self.handle(req)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op, rid = req.get("op"), req.get("id")
        if rid is not None and not isinstance(rid, str | int):
            return messages.reply_error("'id' must be a string or an integer", op)
        if op not in OPS:
            return messages.reply_error(
                f"unknown op {op!r} (one of: {', '.join(OPS)})", op if isinstance(op, str) else None, rid
            )
        allowed = {"op", "id"} | {
            "add": {"action"},
            "update": {"name", "fields"},
            "remove": {"name"},
            "add_source": {"source"},
            "remove_source": {"name"},
        }.get(op, set())
        extra = sorted(set(req) - allowed)
        if extra:
            return messages.reply_error(f"{op}: unknown field(s) {', '.join(extra)}", op, rid)
        try:
            reply = self._do(op, req)
        except CezsarError as e:
            return messages.reply_error(e.message, op, rid)
        except Exception as e:  # noqa: BLE001 - a bad request must never kill the control thread
            log.exception("control request %s", op)
            return messages.reply_error(f"{op}: internal error ({type(e).__name__}: {e})", op, rid)
        return messages.reply_ok(op, reply, rid)

    def _name(self, req: dict[str, Any]) -> str:
        name = req.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CezsarError(f"{req.get('op')}: 'name' must be a non-empty string")
        return name.strip()

    def _do(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op == "ping":
            return {}
        if op == "status":
            return {"status": self.status() if self.status else None}
        if op == "list":
            return describe_set(self.store)
        if op in ("sources", "add_source", "remove_source"):
            if self.sources is None:
                raise CezsarError(f"{op}: this runtime cannot change its sources")
            if op == "add_source":
                text = req.get("source")
                if not isinstance(text, str) or not text.strip():
                    raise CezsarError("add_source: 'source' must be a non-empty string (NAME=URL)")
                return {**self.sources.add_source(text.strip()), **self.sources.list_sources()}
            if op == "remove_source":
                return {**self.sources.remove_source(self._name(req)), **self.sources.list_sources()}
            return dict(self.sources.list_sources())
        if op == "add":
            if "action" not in req:
                raise CezsarError("add: missing 'action' (an object with name and descriptions)")
            action = parse_action_obj(req["action"], "add", "action")
            self.store.add(action)
            return {"name": action.name, **describe_set(self.store)}
        if op == "update":
            name = self._name(req)
            fields = req.get("fields")
            if not isinstance(fields, dict) or not fields:
                raise CezsarError("update: 'fields' must be a non-empty object")
            self.store.update(name, fields, source="update")
            return {"name": fields.get("name", name), **describe_set(self.store)}
        name = self._name(req)  # remove
        self.store.remove(name)
        return {"name": name, **describe_set(self.store)}


class ControlServer:
    def __init__(
        self,
        endpoint: str,
        handler: ControlHandler,
        context: zmq.Context | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        self.context = context or zmq.Context.instance()
        sock = self.context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_BYTES)
        self.endpoint = bind(sock, endpoint, "--control", curve)
        self.socket = sock
        self.handler = handler
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is None:  # never started: the thread would have closed the socket
            self.socket.close(0)
        elif self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not dict(poller.poll(100)):
                    continue
                parts = self.socket.recv_multipart()  # all parts: REP must read the whole message
                try:
                    if len(parts) != 1:
                        reply = messages.reply_error(f"request must be one frame, got {len(parts)}")
                    else:
                        reply = self.handler.handle_bytes(parts[0])
                except Exception as e:  # noqa: BLE001 - no request may kill the control thread
                    log.exception("control request")
                    reply = messages.reply_error(f"internal error ({type(e).__name__})")
                self.requests += 1
                if not reply.get("ok"):
                    log.warning("control: %s", str(reply.get("error"))[:300])
                # REP never blocks on send: a reply to a client that went away is dropped by ZeroMQ
                self.socket.send(messages.encode_reply(reply))
        except zmq.ZMQError as e:
            if not self._stop.is_set():
                log.error("control socket failed: %s", e)
        finally:
            self.socket.close(0)
