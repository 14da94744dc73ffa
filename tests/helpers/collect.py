"""A background ZeroMQ subscriber that keeps every message with its arrival time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from edge.client import Subscriber


class Collector(threading.Thread):
    """Receives every message of a PUB endpoint in the background (times are time.time())."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(daemon=True)
        self.sub = Subscriber(endpoint, topics, **kw)
        self.msgs: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            m = self.sub.recv(0.05)
            if m is not None:
                with self.lock:
                    self.msgs.append((time.time(), m.topic, m.data))
        self.sub.close()

    def close(self) -> None:
        self.halt.set()
        self.join(2.0)

    def of(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        with self.lock:
            return [d for t, _, d in self.msgs if d.get("type") == kind and t >= since]

    def wait(
        self, kind: str, cond: Callable[[dict[str, Any]], bool], timeout: float, since: float = 0.0
    ) -> dict[str, Any]:
        """The first ``kind`` message since ``since`` for which ``cond`` holds (waits up to ``timeout``)."""
        return self.wait_timed(kind, cond, timeout, since)[1]

    def wait_timed(
        self, kind: str, cond: Callable[[dict[str, Any]], bool], timeout: float, since: float = 0.0
    ) -> tuple[float, dict[str, Any]]:
        """As :meth:`wait`, with the message's arrival time."""
        deadline = time.time() + timeout
        seen = 0
        while time.time() < deadline:
            with self.lock:
                new = self.msgs[seen:]
                seen = len(self.msgs)
            for t, _, d in new:
                if d.get("type") == kind and t >= since and cond(d):
                    return t, d
            time.sleep(0.02)
        last = self.of(kind)[-1:] if self.of(kind) else None
        raise AssertionError(f"no {kind} message matching the condition within {timeout} s (last: {last})")
