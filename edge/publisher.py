"""ZeroMQ PUB socket for events, scores and status ("topic json" single-frame messages).

The socket never blocks the runtime: PUB drops messages for a subscriber whose queue is full
(SNDHWM), sends are non-blocking, and LINGER bounds how long closing waits for queued messages.
Binding to port ``*`` (``tcp://127.0.0.1:*``) picks a free port; ``endpoint`` then holds the real one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

from cezsar.errors import CezsarError
from edge import messages

log = logging.getLogger(__name__)

SNDHWM = 10000
LINGER_MS = 1000


def bind(sock: zmq.Socket, endpoint: str, what: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise CezsarError(f"{what} {endpoint}: cannot bind ({e})") from None
    last = sock.getsockopt(zmq.LAST_ENDPOINT)
    return last.decode() if isinstance(last, bytes) else str(last)


class Publisher:
    def __init__(
        self, endpoint: str, context: zmq.Context | None = None, hwm: int = SNDHWM, linger_ms: int = LINGER_MS
    ) -> None:
        self.context = context or zmq.Context.instance()
        sock = self.context.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.LINGER, linger_ms)
        self.endpoint = bind(sock, endpoint, "--pub")
        self.socket = sock
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

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.socket.close()
