"""ZeroMQ PUB socket for events, scores and status ("topic json" single-frame messages): the
runtime's first sink (edge/sinks: ``publish(topic, payload)``, ``close()``).

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
from typing import Any

import zmq

from cezsar.errors import CezsarError
from edge import messages
from edge.security import ZAP_DOMAIN, CurveServer, is_loopback

log = logging.getLogger(__name__)

SNDHWM = 1000  # messages queued per subscriber (4 streams at 8 msg/s: 2 minutes)
LINGER_MS = 1000


def bind(sock: zmq.Socket, endpoint: str, what: str, curve: CurveServer | None = None) -> str:
    """Bind (as a CURVE server when ``curve``); warn when a non-loopback address has no authentication.

    Without CURVE the socket still gets a ZAP domain: libzmq then refuses ZMTP/1.0 peers, and any
    non-ZeroMQ client (an HTTP request, a port scan) looks like one. Accepted, such bytes can leave a
    half-received message in a REP socket, which then answers nobody again (libzmq 4.3)."""
    if curve is not None:
        curve.apply(sock)
    else:
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    if curve is None and not is_loopback(endpoint):
        log.warning(
            "%s %s: listening beyond this machine WITHOUT authentication or encryption; anyone who can reach it "
            "can %s (use --curve-secret/--curve-clients, see docs/reliability.md)",
            what,
            endpoint,
            "read every message" if what == "--pub" else "change the actions",
        )
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise CezsarError(f"{what} {endpoint}: cannot bind ({e})") from None
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)


class Publisher:
    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        hwm: int = SNDHWM,
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
