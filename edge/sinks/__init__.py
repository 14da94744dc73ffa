"""Output sinks: where the runtime's messages go.

A sink takes the messages exactly as the runtime publishes them: ``publish(topic, payload)`` with
the topic (``event.<stream>``, ``scores.<stream>``, ``status``) and the payload dict of an
:class:`edge.messages.Message` (built by edge/messages.py, the one message builder), returns ``True``
when it accepted the message, never blocks the caller for long, and ``close()`` ends it (the runtime
closes its sinks after the final status). A sink picks the topics it wants and ignores the others.

Sinks of the runtime: the ZeroMQ PUB socket (:class:`edge.publisher.Publisher`) and the events log
(:class:`edge.sinks.events_log.EventsLog`). A new output (:class:`edge.sinks.mqtt.MqttSink`, ...) is one more class
with these two methods, added with ``Runtime.add_sink``; the Recognizer never sees sinks.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    def publish(self, topic: str, payload: dict[str, Any]) -> bool: ...

    def close(self) -> None: ...


class Sinks:
    """Fan-out: every message to every sink, in the order they were added. A sink that raises is
    counted (``failures``, per sink) and logged (1st, 2nd, 4th, ... time); the others and the caller
    go on. Is itself a Sink."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.failures: dict[str, int] = {}

    def add(self, sink: Sink) -> None:
        if not isinstance(sink, Sink):
            raise TypeError(f"{type(sink).__name__} is not a sink (needs publish(topic, payload) and close())")
        self.sinks.append(sink)

    def _failed(self, sink: Sink, what: str, e: Exception) -> None:
        name = type(sink).__name__
        n = self.failures[name] = self.failures.get(name, 0) + 1
        if n & (n - 1) == 0:
            log.warning("sink %s: %s failed (%s: %s) [%d so far]", name, what, type(e).__name__, str(e)[:200], n)

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        """True when at least one sink accepted the message."""
        accepted = False
        for sink in self.sinks:
            try:
                accepted = sink.publish(topic, payload) or accepted
            except Exception as e:  # noqa: BLE001 - one broken output must not stop the others
                self._failed(sink, f"publish {topic}", e)
        return accepted

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - close the others anyway
                self._failed(sink, "close", e)
