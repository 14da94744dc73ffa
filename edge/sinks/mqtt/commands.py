"""MQTT commands: switch a camera's detection or an action off and on.

==========================================  ============  ==========================================
topic                                       payload       effect (edge.host.SinkHost)
==========================================  ============  ==========================================
``<prefix>/<stream>/enabled/set``           ``ON``/``OFF``  the stream's frames are recognised or not
                                                          (its reader keeps running)
``<prefix>/actions/<key>/enabled/set``      ``ON``/``OFF``  the action is scored and decided, or not,
                                                          on every stream
==========================================  ============  ==========================================

The new state is published on the topic without ``/set`` (retained), which Home Assistant's switches
read. Anything else (an unknown stream or action key, another payload) is refused with one log line
and counted; nothing else on the broker can reach the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from cezsar.errors import CezsarError
from edge.host import SinkHost
from edge.sinks.mqtt.discovery import Catalog
from edge.sinks.mqtt.naming import Topics

PAYLOADS = {b"ON": True, b"OFF": False}


@dataclass(frozen=True)
class Applied:
    kind: str  # "stream" or "action"
    name: str  # the stream or action name
    on: bool


def apply(topics: Topics, catalog: Catalog, host: SinkHost, topic: str, payload: bytes) -> Applied:
    """Carry out one command; raises CezsarError (one line) when it is refused."""
    parsed = topics.parse_command(topic)
    if parsed is None:
        raise CezsarError(f"mqtt command {topic}: not a command topic")
    on = PAYLOADS.get(payload.strip().upper())
    if on is None:
        raise CezsarError(f"mqtt command {topic}: payload {payload[:40]!r} (expected ON or OFF)")
    kind, name = parsed
    if kind == "stream":
        if name not in catalog.streams:
            raise CezsarError(f"mqtt command {topic}: no stream {name!r}")
        host.set_stream_enabled(name, on)
        return Applied("stream", name, on)
    action = catalog.action_of(name)
    if action is None:
        raise CezsarError(f"mqtt command {topic}: no action with key {name!r}")
    host.set_action_enabled(action, on)
    return Applied("action", action, on)
