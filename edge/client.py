"""Python client for a running ``cezsar run``: a Subscriber for the PUB socket and a ControlClient.

    from edge.client import Subscriber, ControlClient
    from edge.endpoints import DEFAULT_CONTROL, DEFAULT_PUB   # tcp://127.0.0.1:5556 and :5557

    with Subscriber(DEFAULT_PUB, topics=["event."]) as sub:
        for msg in sub:                      # Message(topic, data)
            print(msg.topic, msg.data["action"], msg.data["phase"])

    ctl = ControlClient(DEFAULT_CONTROL)
    ctl.add({"name": "wave", "descriptions": ["a hand waving"]})
    ctl.update("wave", threshold=0.2)
    ctl.remove("wave")

With CURVE (``cezsar run --curve-secret ... --curve-clients ...``) pass
``curve=CurveClient.load("client.key_secret", "server.key")`` (edge.security) to both.

Topics are prefixes (ZeroMQ SUB semantics): ``event.`` = every event, ``event.cam1 `` (trailing space)
= only stream cam1, ``scores.``, ``status``; no topics = everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import zmq

from cezsar.errors import CezsarError
from edge import messages
from edge.endpoints import DEFAULT_CONTROL, DEFAULT_PUB
from edge.security import CurveClient


@dataclass
class Message:
    topic: str
    data: dict[str, Any]

    @property
    def type(self) -> str | None:
        t = self.data.get("type")
        return t if isinstance(t, str) else None


class Subscriber:
    def __init__(
        self,
        endpoint: str = DEFAULT_PUB,
        topics: Sequence[str] = (),
        conflate: bool = False,
        context: zmq.Context | None = None,
        rcvhwm: int = 100000,
        curve: CurveClient | None = None,
    ) -> None:
        """``rcvhwm``: messages queued here before ZeroMQ drops (a slow reader then sees gaps in
        ``topic_seq``, counted in ``gaps``)."""
        self.context = context or zmq.Context.instance()
        sock = self.context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(sock)
        if conflate:
            sock.setsockopt(zmq.CONFLATE, 1)  # keep only the newest message (works: messages are one frame)
        else:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        for t in topics or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as e:
            sock.close(0)
            raise CezsarError(f"{endpoint}: cannot connect ({e})") from None
        self.endpoint = endpoint
        self.socket = sock
        self.invalid = 0  # frames that were not "topic json"
        self.gaps = messages.GapCounter()  # messages of the subscribed topics that never arrived

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds (None: wait forever)."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        while True:
            if not self.socket.poll(ms, zmq.POLLIN):
                return None
            frame = self.socket.recv()
            try:
                topic, data = messages.decode(frame)
            except ValueError:
                self.invalid += 1
                continue
            self.gaps.see(topic, data)
            return Message(topic, data)

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.recv(None)
            if msg is not None:
                yield msg

    def close(self) -> None:
        self.socket.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class ControlError(CezsarError):
    """The runtime answered a control request with an error."""


class ControlClient:
    def __init__(
        self,
        endpoint: str = DEFAULT_CONTROL,
        timeout: float = 5.0,
        context: zmq.Context | None = None,
        curve: CurveClient | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self.socket: zmq.Socket | None = None

    def _sock(self) -> zmq.Socket:
        if self.socket is None:
            s = self.context.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                self.curve.apply(s)
            try:
                s.connect(self.endpoint)
            except zmq.ZMQError as e:
                s.close(0)
                raise CezsarError(f"{self.endpoint}: cannot connect ({e})") from None
            self.socket = s
        return self.socket

    def request_raw(self, payload: bytes) -> dict[str, Any]:
        """Send bytes as-is, return the reply dict (for testing malformed requests)."""
        sock = self._sock()
        sock.send(payload)
        if not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
            # a REQ socket that lost its reply cannot send again: start a fresh one next time
            sock.close(0)
            self.socket = None
            raise CezsarError(f"{self.endpoint}: no reply within {self.timeout:g} s (is `cezsar run` running?)")
        raw = sock.recv()
        try:
            reply = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CezsarError(f"{self.endpoint}: reply is not JSON") from None
        if not isinstance(reply, dict):
            raise CezsarError(f"{self.endpoint}: reply is not a JSON object")
        return reply

    def request(self, req: dict[str, Any], check: bool = True) -> dict[str, Any]:
        reply = self.request_raw(json.dumps(req).encode("utf-8"))
        if check and not reply.get("ok"):
            raise ControlError(str(reply.get("error", "request failed")))
        return reply

    def ping(self) -> dict[str, Any]:
        return self.request({"op": "ping"})

    def list(self) -> dict[str, Any]:
        return self.request({"op": "list"})

    def status(self) -> dict[str, Any] | None:
        return self.request({"op": "status"}).get("status")

    def add(self, action: dict[str, Any]) -> dict[str, Any]:
        return self.request({"op": "add", "action": action})

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.request({"op": "update", "name": name, "fields": fields})

    def remove(self, name: str) -> dict[str, Any]:
        return self.request({"op": "remove", "name": name})

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
