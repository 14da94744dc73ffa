"""MQTT sink (paho-mqtt): the runtime's messages on an MQTT broker, with Home Assistant discovery.

It takes the messages exactly as the runtime publishes them on ZeroMQ (``publish(topic, payload)``
with topic ``event.<stream>``, ``scores.<stream>`` or ``status``; see edge/messages.py) and maps
them to MQTT topics under ``prefix`` (default ``cezsar``):

========================================  =========================================  ==========
topic                                     payload                                    retained
========================================  =========================================  ==========
``<prefix>/availability``                 ``online`` / ``offline`` (last will)       yes
``<prefix>/events``                       every event message (the ZeroMQ JSON)      no
``<prefix>/<stream>/<action>``            ``ON`` from ``start`` until ``end``, then   yes
                                          ``OFF``
``<prefix>/<stream>/<action>/attributes`` the action's last event message            yes
``<prefix>/<stream>/scores``              every scores message                       no
``<prefix>/status``                       every status message                       yes
========================================  =========================================  ==========

``<action>`` is the action name as one topic level (:func:`slug`: ``moving left`` ->
``moving_left``). The JSON bodies are byte for byte those of the ZeroMQ messages (the same builder,
:func:`edge.messages.encode`).

Home Assistant discovery (``discovery=True``): per stream x action a ``binary_sensor`` (the ON/OFF
topic) and a score ``sensor`` (the action's smoothed score from the scores topic), configs under
``<discovery_prefix>/binary_sensor/<node>/<stream>_<action>/config`` and
``<discovery_prefix>/sensor/<node>/<stream>_<action>_score/config``, retained, with the
availability topic and one device per node. :meth:`MqttSink.set_catalog` publishes configs for new
pairs and an empty retained payload (HA's "remove") for pairs that went away. Until
``set_catalog`` is called, the set is taken from each ``status`` message (its ``streams`` and
``actions.names``), so that a runtime that only calls ``publish`` still gets live discovery.

Never blocks, never raises for a broker that is down: :meth:`publish` only puts the message on a
bounded queue (full: counted in ``dropped``); one worker thread maps and hands messages to paho,
whose own network thread (``loop_start``) connects, reconnects with exponential backoff
(``min_backoff`` doubling to ``max_backoff``) and sends. While disconnected a message is counted in
``unsent`` and discarded (no unbounded backlog); on every (re)connection the sink publishes
``online``, every discovery config and the last ON/OFF state of every pair again, so a restarted
broker without persistence ends up with the right retained state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cezsar.errors import CezsarError
from edge import messages
from edge.sinks import SinkContext, register_sink

if TYPE_CHECKING:
    from edge.settings import MqttSettings, MqttTls

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
_STOP = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def slug(name: str) -> str:
    """A name as one MQTT topic level and a Home Assistant object id: ``[a-z0-9_-]+``.

    Lower-cased, every run of other characters becomes ``_``; a name with nothing usable left
    becomes ``a`` + the first 8 hex digits of its SHA-1.
    """
    s = _UNSAFE.sub("_", name.strip()).strip("_").lower()
    return s or "a" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]


def _check_level(value: str, what: str) -> str:
    if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
        raise CezsarError(f"mqtt {what} {value!r}: must be non-empty, without + # or a leading/trailing /")
    return value


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cezsar")
    except Exception:  # not installed (running from a checkout)
        return "dev"


@register_sink("mqtt")
class MqttSink:
    """See the module docstring. Counters (read them any time): ``sent`` (MQTT messages handed to a
    connected client), ``unsent`` (MQTT messages discarded because the broker was unreachable),
    ``dropped`` (runtime messages refused because the queue was full), ``connects``, ``connected``."""

    name = "mqtt"

    @classmethod
    def from_settings(cls, settings: MqttSettings, ctx: SinkContext) -> MqttSink:
        return cls(settings, scores=settings.scores and ctx.scores)

    def __init__(
        self,
        settings: MqttSettings,
        *,
        scores: bool | None = None,
        keepalive: int = 30,
        queue_size: int = QUEUE_SIZE,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """``settings``: the ``outputs.mqtt`` section; ``scores`` overrides its ``scores`` (the runtime
        passes ``outputs.scores and mqtt.scores``); the rest are transport tunables."""
        try:
            import paho.mqtt.client as mqtt
        except ModuleNotFoundError:
            raise CezsarError("MQTT output needs paho-mqtt: pip install 'cezsar[mqtt]'") from None
        self._mqtt = mqtt
        o = self.settings = settings
        self.host, self.port = o.host, int(o.port)
        self.prefix = _check_level(o.prefix.rstrip("/") if o.prefix != "/" else o.prefix, "prefix")
        self.discovery_prefix = _check_level(o.discovery_prefix, "discovery prefix")
        self.node_id = slug(o.node_id or socket.gethostname())
        self.discovery, self.qos = o.discovery, o.qos
        self.scores = o.scores if scores is None else scores
        self.availability_topic = f"{self.prefix}/availability"

        self.sent = 0
        self.unsent = 0
        self.dropped = 0
        self.connects = 0
        self.last_error: str | None = None
        self.closed = False

        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._dirty = threading.Event()  # discovery/state to (re)publish
        self._full_sync = False  # a new connection: everything again
        self._pairs: dict[tuple[str, str], str] = {}  # (stream, action) -> slug
        self._announced: set[tuple[str, str]] = set()  # configs sent on this connection
        self._to_clear: set[str] = set()  # retained topics to empty (removed pairs)
        self._states: dict[tuple[str, str], str] = {}  # last ON/OFF per pair
        self._explicit_actions = False
        self._outage_logged = False

        cid = o.client_id or f"cezsar-{self.node_id}-{os.getpid()}-{os.urandom(3).hex()}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        if o.username is not None:
            client.username_pw_set(o.username, o.secret())
        if o.tls is not None:
            self._apply_tls(client, o.tls)
        client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(0.01, min_backoff), max_delay=max(min_backoff, max_backoff))  # type: ignore[arg-type]
        client.max_queued_messages_set(max(1, queue_size))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        try:
            client.connect_async(self.host, self.port, keepalive=keepalive)
        except (OSError, ValueError) as e:
            raise CezsarError(f"mqtt {self.host}:{self.port}: {e}") from None
        client.loop_start()
        self._worker = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ caller side (never blocks)

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected())

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        """Queue one runtime message (never waits). False when closed, or when the queue is full
        (then ``dropped`` + 1)."""
        if self.closed:
            return False
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def set_catalog(self, streams: Iterable[str], actions: Iterable[str] | Mapping[str, Iterable[str]]) -> None:
        """The current streams and actions: ``actions`` is one list for every stream, or a mapping
        stream -> its actions. Discovery configs of new pairs are published, those of pairs gone are
        removed (empty retained payloads). Calling it turns off taking the set from status messages."""
        self._explicit_actions = True
        self._set_pairs(streams, actions)

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "sent": self.sent,
            "unsent": self.unsent,
            "dropped": self.dropped,
            "connects": self.connects,
            "queued": self._queue.qsize(),
            "error": self.last_error,
        }

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (when connected), publish ``offline``, disconnect. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._worker.join(timeout)
        if self.connected:
            info = self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
            self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ topics and payloads

    def state_topic(self, stream: str, action: str) -> str:
        return f"{self.prefix}/{stream}/{self._slug(stream, action)}"

    def discovery_topics(self, stream: str, action: str) -> tuple[str, str]:
        """(binary_sensor config topic, score sensor config topic)."""
        oid = f"{stream}_{self._slug(stream, action)}"
        return (
            f"{self.discovery_prefix}/binary_sensor/{self.node_id}/{oid}/config",
            f"{self.discovery_prefix}/sensor/{self.node_id}/{oid}_score/config",
        )

    def _slug(self, stream: str, action: str) -> str:
        with self._lock:
            s = self._pairs.get((stream, action))
        return s or slug(action)

    def _device(self) -> dict[str, Any]:
        return {
            "identifiers": [f"cezsar_{self.node_id}"],
            "name": f"cezsar {self.node_id}",
            "manufacturer": "cezsar",
            "model": "cezsar edge runtime",
            "sw_version": _version(),
        }

    def discovery_configs(self, stream: str, action: str) -> list[tuple[str, dict[str, Any]]]:
        """The Home Assistant discovery (topic, config) pairs of one stream x action."""
        s = self._slug(stream, action)
        b_topic, s_topic = self.discovery_topics(stream, action)
        common = {
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": self._device(),
        }
        binary = {
            "name": f"{stream} {action}",
            "unique_id": f"cezsar_{self.node_id}_{stream}_{s}",
            "state_topic": f"{self.prefix}/{stream}/{s}",
            "json_attributes_topic": f"{self.prefix}/{stream}/{s}/attributes",
            "payload_on": "ON",
            "payload_off": "OFF",
            **common,
        }
        score = {
            "name": f"{stream} {action} score",
            "unique_id": f"cezsar_{self.node_id}_{stream}_{s}_score",
            "state_topic": f"{self.prefix}/{stream}/scores",
            "value_template": "{{ value_json.smoothed[" + json.dumps(action) + "] }}",
            "state_class": "measurement",
            "suggested_display_precision": 3,
            **common,
        }
        return [(b_topic, binary), (s_topic, score)]

    def _retained_topics(self, stream: str, s: str) -> set[str]:
        """Every retained topic of one stream x action slug (emptied when the pair goes away)."""
        oid = f"{stream}_{s}"
        return {
            f"{self.discovery_prefix}/binary_sensor/{self.node_id}/{oid}/config",
            f"{self.discovery_prefix}/sensor/{self.node_id}/{oid}_score/config",
            f"{self.prefix}/{stream}/{s}",
            f"{self.prefix}/{stream}/{s}/attributes",
        }

    def _set_pairs(self, streams: Iterable[str], actions: Iterable[str] | Mapping[str, Iterable[str]]) -> None:
        streams = [str(s) for s in streams]
        if isinstance(actions, Mapping):
            wanted = [(s, str(a)) for s in streams for a in actions.get(s, ())]
        else:
            names = [str(a) for a in actions]
            wanted = [(s, a) for s in streams for a in names]
        new: dict[tuple[str, str], str] = {}
        used: dict[str, set[str]] = {}
        for stream, action in wanted:
            s = slug(action)
            if s in used.setdefault(stream, set()):  # two names, one slug: make it unique
                s = f"{s}_{hashlib.sha1(action.encode('utf-8')).hexdigest()[:6]}"
            used[stream].add(s)
            new[(stream, action)] = s
        with self._lock:
            if new == self._pairs:
                return
            for pair, s in self._pairs.items():
                if new.get(pair) != s:
                    self._to_clear.update(self._retained_topics(pair[0], s))
                    self._announced.discard(pair)
                    self._states.pop(pair, None)
            for pair, s in new.items():
                self._to_clear.difference_update(self._retained_topics(pair[0], s))
            self._pairs = new
        self._dirty.set()

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            if self._dirty.is_set():
                self._sync()
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _STOP:
                if self._dirty.is_set():
                    self._sync()
                return
            topic, payload = item
            try:
                self._handle(topic, payload)
            except Exception as e:  # a malformed message must not end the sink
                log.warning("mqtt: cannot publish %s message: %s", topic, e)

    def _send(self, topic: str, data: str | bytes, qos: int, retain: bool) -> bool:
        if not self.connected:
            self.unsent += 1
            return False
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            self.sent += 1
            return True
        self.unsent += 1
        return False

    def _handle(self, topic: str, payload: dict[str, Any]) -> None:
        kind, _, stream = topic.partition(".")
        body = messages.encode(topic, payload).partition(b" ")[2]  # the ZeroMQ JSON, byte for byte
        if kind == messages.TOPIC_EVENT:
            self._send(f"{self.prefix}/events", body, self.qos, False)
            stream = str(payload.get("stream") or stream)
            action = payload.get("action")
            if stream and isinstance(action, str):
                state = "OFF" if payload.get("phase") == "end" else "ON"
                with self._lock:
                    self._states[(stream, action)] = state
                base = self.state_topic(stream, action)
                self._send(base, state, self.qos, True)
                self._send(f"{base}/attributes", body, self.qos, True)
        elif kind == messages.TOPIC_SCORES:
            if self.scores and stream:
                self._send(f"{self.prefix}/{stream}/scores", body, 0, False)
        elif kind == messages.TOPIC_STATUS:
            self._send(f"{self.prefix}/status", body, self.qos, True)
            if not self._explicit_actions:
                streams = payload.get("streams")
                names = (payload.get("actions") or {}).get("names")
                if isinstance(streams, dict) and isinstance(names, list):
                    self._set_pairs(streams.keys(), names)
        else:
            self._send(f"{self.prefix}/{topic.replace('.', '/')}", body, self.qos, False)

    def _sync(self) -> None:
        """Publish availability, discovery configs, states and removals that this connection lacks."""
        if not self.connected:
            return  # the next connection sets _dirty again
        self._dirty.clear()
        with self._lock:
            full, self._full_sync = self._full_sync, False
            if full:
                self._announced.clear()
            pairs = dict(self._pairs)
            to_clear = set(self._to_clear)
            todo = [p for p in pairs if p not in self._announced]
            states = dict(self._states)
        ok = True
        if full:
            ok &= self._send(self.availability_topic, "online", 1, True)
        for topic in sorted(to_clear):
            if self._send(topic, b"", 1, True):
                with self._lock:
                    self._to_clear.discard(topic)
            else:
                ok = False
        for pair in todo:
            stream, action = pair
            if self.discovery:
                for topic, config in self.discovery_configs(stream, action):
                    ok &= self._send(topic, json.dumps(config, separators=(",", ":")), 1, True)
            ok &= self._send(self.state_topic(stream, action), states.get(pair, "OFF"), 1, True)
            if ok:
                with self._lock:
                    if self._pairs.get(pair) == pairs[pair]:
                        self._announced.add(pair)
        if not ok:
            self._dirty.set()

    # ------------------------------------------------------------------ paho callbacks (its thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"broker refused the connection: {reason}"
            log.warning("mqtt %s:%d: %s", self.host, self.port, self.last_error)
            return
        self.connects += 1
        self.last_error = None
        self._outage_logged = False
        log.info("mqtt: connected to %s:%d%s", self.host, self.port, " (again)" if self.connects > 1 else "")
        with self._lock:
            self._full_sync = True
        self._dirty.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self.closed:
            return
        self.last_error = f"disconnected ({reason})"
        log.warning(
            "mqtt %s:%d: %s; reconnecting with backoff, counting what cannot be sent",
            self.host,
            self.port,
            self.last_error,
        )
        self._outage_logged = True

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self.last_error = "cannot connect"
        if not self._outage_logged:
            log.warning("mqtt %s:%d: cannot connect; retrying with backoff", self.host, self.port)
            self._outage_logged = True

    @staticmethod
    def _apply_tls(client: Any, tls: MqttTls) -> None:
        for what, p in (("CA", tls.ca), ("certificate", tls.cert), ("key", tls.key)):
            if p is not None and not p.is_file():
                raise CezsarError(f"mqtt TLS {what} {p}: no such file")
        try:
            client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError, ValueError) as e:
            raise CezsarError(f"mqtt TLS: {e}") from None
        if tls.insecure:
            client.tls_insecure_set(True)
