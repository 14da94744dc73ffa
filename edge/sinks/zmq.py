"""ZeroMQ PUB socket for events, scores and status ("topic json" single-frame messages): the
runtime's first sink (edge/sinks: ``publish(topic, payload)``, ``close()``), from ``outputs.zmq``.

The socket never blocks the runtime: PUB drops messages for a subscriber whose queue is full
(SNDHWM), sends are non-blocking, and LINGER bounds how long closing waits for queued messages.
Binding to port ``*`` (``tcp://127.0.0.1:*``) picks a free port; ``endpoint`` then holds the real one.

Memory is bounded: each subscriber's queue holds at most SNDHWM messages (then PUB drops, per
subscriber, silently: ZeroMQ does not report those drops to the sender; ``dropped`` counts only
sends refused locally). With ``curve`` the socket is a CURVE server (edge/security.py).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import zmq

from edge import messages
from edge.endpoints import DEFAULT_HWM
from edge.security import CurveServer, bind
from edge.sinks import SinkContext, register_sink

if TYPE_CHECKING:
    from edge.settings import ZmqSettings

log = logging.getLogger(__name__)

LINGER_MS = 1000
FINAL_LINGER_MS = 500  # how long closing the PUB socket may take to hand the final messages to subscribers


@register_sink("zmq")
class Publisher:
    """The ZeroMQ PUB socket (``outputs.zmq``): every message, as ``topic json``."""

    name = "zmq"

    @classmethod
    def from_settings(cls, settings: ZmqSettings, ctx: SinkContext) -> Publisher:
        return cls(settings.pub, hwm=settings.hwm, linger_ms=FINAL_LINGER_MS, curve=ctx.curve)

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        hwm: int = DEFAULT_HWM,
        linger_ms: int = LINGER_MS,
        curve: CurveServer | None = None,
    ) -> None:
        self.context = context or zmq.Context.instance()
        sock = self.context.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, linger_ms)
        self.endpoint = bind(sock, endpoint, "--pub", curve)
        self.socket = sock
        self.hwm = hwm
        self._lock = threading.Lock()  # zmq sockets are not thread-safe
        self.sent = 0
        self.dropped = 0
        self.closed = False

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        frame = messages.encode(topic, payload)
        with self._lock:
            if self.closed:
                return False
            try:
                self.socket.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                return False
            self.sent += 1
            return True

    def stats(self) -> dict[str, int]:
        """The status's ``publisher`` part."""
        return {"sent": self.sent, "dropped": self.dropped, "hwm": self.hwm}

    def close(self, linger_ms: int | None = None) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.socket.close(linger_ms)
