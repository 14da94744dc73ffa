"""The MQTT sink (paho-mqtt): the transport, the worker thread and the mapping of runtime messages to
topics (see the package docstring for the topics, edge/sinks/mqtt/discovery.py for the entities).

Never blocks, never raises for a broker that is down: :meth:`MqttSink.publish` only puts the message
on a bounded queue (full: counted in ``dropped``); one worker thread maps and hands messages to paho,
whose own network thread (``loop_start``) connects, reconnects with exponential backoff and sends.
While disconnected a message is counted in ``unsent`` and discarded (no unbounded backlog). Every
retained topic's content is kept (edge/sinks/mqtt/state.py), so on every (re)connection the sink
publishes ``online``, the discovery configs and the last state of everything again.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cezsar import extras
from cezsar.errors import CezsarError
from edge import messages
from edge.sinks import SinkContext, register_sink
from edge.sinks.mqtt import commands, evidence
from edge.sinks.mqtt.discovery import Features
from edge.sinks.mqtt.naming import STREAM_LEVEL, Topics, check_level, default_node_id
from edge.sinks.mqtt.state import Retained, build_catalog
from edge.worker import STOP, stop_worker

if TYPE_CHECKING:
    from edge.host import SinkHost
    from edge.settings import MqttSettings, MqttTls

extras.requires("paho", extra="mqtt")  # imported where the sink connects

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
HOST_POLL = 1.0  # seconds between two looks at the runtime's camera health and switches
SCAN_WINDOW = 1.0  # seconds after subscribing during which retained messages of an earlier run are collected
MAX_SNAPSHOT_FILE = 64 << 20  # a snapshot file larger than this is not even read


class _Command(NamedTuple):
    topic: str
    payload: bytes


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cezsar")
    except Exception:  # not installed (running from a checkout)
        return "dev"


@register_sink("mqtt")
class MqttSink:
    """Counters (read them any time): ``sent`` (MQTT messages handed to a connected client), ``unsent``
    (discarded because the broker was unreachable), ``dropped`` (runtime messages refused because the
    queue was full), ``connects``, ``connected``, ``commands`` / ``refused`` (MQTT commands carried out /
    refused), ``snapshots`` / ``snapshots_skipped``, ``cleared`` (stale retained topics emptied)."""

    name = "mqtt"

    @classmethod
    def from_settings(cls, settings: MqttSettings, ctx: SinkContext) -> MqttSink:
        return cls(
            settings,
            scores=settings.scores and ctx.scores,
            host=ctx.host,
            media_dir=ctx.media_dir,
            public_url=ctx.public_url,
        )

    def __init__(
        self,
        settings: MqttSettings,
        *,
        scores: bool | None = None,
        host: SinkHost | None = None,
        media_dir: Path | None = None,
        public_url: str | None = None,
        keepalive: int = 30,
        queue_size: int = QUEUE_SIZE,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        """``settings``: the ``outputs.mqtt`` section; ``scores`` overrides its ``scores`` (the runtime
        passes ``outputs.scores and mqtt.scores``); ``host``: the runtime (camera health, commands);
        ``media_dir``: where event snapshots are read from; the rest are transport tunables."""
        try:
            import paho.mqtt.client as mqtt
        except ModuleNotFoundError:
            raise CezsarError("MQTT output needs paho-mqtt: pip install 'cezsar[mqtt]'") from None
        self._mqtt = mqtt
        o = self.settings = settings
        self.host, self.port = o.host, int(o.port)
        self.prefix = check_level(o.prefix.rstrip("/") if o.prefix != "/" else o.prefix, "prefix")
        self.discovery_prefix = check_level(o.discovery_prefix, "discovery prefix")
        self.node_id = o.node_id or default_node_id(self.prefix)
        self.discovery, self.qos = o.discovery, o.qos
        self.scores = o.scores if scores is None else scores
        self.runtime = host
        self.media_dir = media_dir if o.snapshots else None
        self.commands_on = o.commands and host is not None
        self.topics = Topics(self.prefix, self.discovery_prefix, self.node_id)
        self.availability_topic = self.topics.availability
        features = Features(
            scores=self.scores,
            snapshots=self.media_dir is not None,
            commands=self.commands_on,
            qos=self.qos,
            version=_version(),
            public_url=public_url,
        )
        self._state = Retained(self.topics, features, discovery=self.discovery)

        self.sent = self.unsent = self.dropped = self.connects = 0
        self.commands = self.refused = self.snapshots = self.snapshots_skipped = self.cleared = 0
        self.last_error: str | None = None
        self.closed = False

        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()  # guards the hand-overs from other threads below
        self._pending_catalog: tuple[list[str], Any] | None = None
        self._explicit_catalog = False
        self._given: tuple[list[str], Any] | None = None  # the last catalog given (set_catalog or status)
        self._all_actions: tuple[str, ...] = ()  # every action of the runtime (with commands: their switches)
        self._new_connection = False
        self._found: list[str] = []  # retained topics of ours seen by the start-up scan (paho thread)
        self._scan_mid: int | None = None
        self._scan_until: float | None = None
        self._dirty = threading.Event()
        self._next_poll = 0.0
        self._score_value: dict[tuple[str, str], float] = {}  # newest, not yet published
        self._score_sent: dict[tuple[str, str], float] = {}  # monotonic time of the last one published
        self._event_pairs: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._outage_logged = False

        self._client = self._make_client(o, keepalive, queue_size, min_backoff, max_backoff)
        try:
            self._client.connect_async(self.host, self.port, keepalive=keepalive)
        except (OSError, ValueError) as e:
            raise CezsarError(f"mqtt {self.host}:{self.port}: {e}") from None
        self._client.loop_start()
        self._worker = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._worker.start()

    def _make_client(self, o: MqttSettings, keepalive: int, queue_size: int, lo: float, hi: float) -> Any:
        mqtt = self._mqtt
        cid = o.client_id or f"cezsar-{self.node_id}-{os.getpid()}-{os.urandom(3).hex()}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        if o.username is not None:
            client.username_pw_set(o.username, o.secret())
        if o.tls is not None:
            self._apply_tls(client, o.tls)
        client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(0.01, lo), max_delay=max(lo, hi))  # type: ignore[arg-type]
        client.max_queued_messages_set(max(1, queue_size))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

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
        stream -> its actions. Discovery configs of new ones are published, every retained topic of
        those gone is emptied. Calling it turns off taking the set from status messages."""
        actions = {k: list(v) for k, v in actions.items()} if isinstance(actions, Mapping) else list(actions)
        with self._lock:
            self._explicit_catalog = True
            self._pending_catalog = (list(streams), actions)
        self._dirty.set()

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "sent": self.sent,
            "unsent": self.unsent,
            "dropped": self.dropped,
            "connects": self.connects,
            "queued": self._queue.qsize(),
            "commands": self.commands,
            "refused": self.refused,
            "snapshots": self.snapshots,
            "cleared": self.cleared,
            "error": self.last_error,
        }

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (when connected), publish ``offline``, disconnect. Idempotent."""
        if self.closed:
            return
        self.closed = True
        stop_worker(self._queue, self._worker, timeout)
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

    # ------------------------------------------------------------------ topics (kept for callers)

    def state_topic(self, stream: str, action: str) -> str:
        return self.topics.action(stream, self._state.key(action))

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            try:
                self._housekeeping()
            except Exception as e:  # noqa: BLE001 - the sink goes on
                log.warning("mqtt: %s: %s", type(e).__name__, e)
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is STOP:
                self._next_poll = 0.0  # the cameras' last health (stopped, when the runtime stops them)
                self._housekeeping()
                return
            try:
                if isinstance(item, _Command):
                    self._command(item.topic, item.payload)
                else:
                    self._handle(*item)
            except Exception as e:  # noqa: BLE001 - a malformed message must not end the sink
                log.warning("mqtt: cannot publish %s message: %s", item[0], e)

    def _housekeeping(self) -> None:
        """Between two messages: a new connection, a new catalog, the runtime's camera health and
        switches, the end of the start-up scan, due scores, and publishing what changed."""
        now = time.monotonic()
        with self._lock:
            full, self._new_connection = self._new_connection, False
            pending, self._pending_catalog = self._pending_catalog, None
            found, self._found = self._found, []
        if pending is not None:
            self._catalog(*pending)
        if found:
            self._state.owned.update(found)
            self._dirty.set()
        if self.runtime is not None and now >= self._next_poll:
            self._next_poll = now + HOST_POLL
            self._poll_runtime()
        if self._scan_until is not None and now >= self._scan_until:
            self._scan_until = None
            self._client.unsubscribe(self.topics.scan_filters())
        if self._score_value:
            self._flush_scores(now)
        if full or self._dirty.is_set():
            self._sync(full)

    def _catalog(self, streams: Iterable[str] | None = None, actions: Any = None) -> None:
        """A new catalog (streams and their actions) or, without arguments, the last one again with
        the actions that apply to no stream now (they still get their switch)."""
        if streams is not None:
            self._given = (list(streams), actions)
        if self._given is not None and self._state.set_catalog(build_catalog(*self._given, self._all_actions)):
            self._dirty.set()

    def _poll_runtime(self) -> None:
        assert self.runtime is not None
        for stream, health in self.runtime.streams_health().items():
            self._health(stream, health)
        if not self.commands_on:
            return
        sw = self.runtime.switches()
        st = self._state
        for kind, have in (("streams", st.stream_on), ("actions", st.action_on)):
            new = {str(k): bool(v) for k, v in sw.get(kind, {}).items()}
            if new != have:
                have.clear()
                have.update(new)
                self._dirty.set()
        every = tuple(str(a) for a in sw.get("actions", {}))
        if every != self._all_actions:
            self._all_actions = every
            self._catalog()

    def _health(self, stream: str, health: Any) -> None:
        """A stream's health (edge/health.py) -> its availability (online while live) and health topic
        (published when its state, reason or reconnects change)."""
        if not isinstance(health, dict) or not STREAM_LEVEL.match(stream):
            return
        d = self._state.stream.setdefault(stream, {})
        avail = b"online" if health.get("state") == "live" else b"offline"
        sig = repr((health.get("state"), health.get("reason"), health.get("reconnects")))
        if d.get("availability") != avail or d.get("_sig") != sig.encode():
            d["availability"], d["_sig"] = avail, sig.encode()
            d["health"] = messages.to_json(health).encode("utf-8")
            self._dirty.set()

    def _flush_scores(self, now: float) -> None:
        """Each action's newest score on its own topic, at most once per ``score_interval``."""
        every = float(self.settings.score_interval)
        for pair, value in list(self._score_value.items()):
            if now - self._score_sent.get(pair, -1e9) >= every:
                stream, action = pair
                if self._state.has_pair(stream, action):
                    self._send(self.topics.action(stream, self._state.key(action), "score"), f"{value:.3f}", 0, False)
                self._score_sent[pair] = now
                del self._score_value[pair]

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

    def _retain(self, topic: str, data: bytes) -> None:
        """Publish a retained topic now when this connection has not got this content yet."""
        st = self._state
        if st.sent.get(topic) == data:
            return
        if self._new_connection:  # the sync of the new connection is due and sends it
            return
        if self._send(topic, data, self.qos, True):
            st.sent[topic] = data
            st.owned.add(topic)

    def _sync(self, full: bool) -> None:
        """Empty the stale retained topics, then publish every retained topic whose content this
        connection lacks (all of them after a new connection)."""
        if not self.connected:
            return  # the next connection syncs
        self._dirty.clear()
        st = self._state
        if full:
            st.sent.clear()
        want = st.want()
        ok = True
        for topic in st.stale(want):
            if self._send(topic, b"", 1, True):
                st.owned.discard(topic)
                st.sent.pop(topic, None)
                self.cleared += 1
            else:
                ok = False
        for topic, data in want.items():
            if st.sent.get(topic) != data:
                if self._send(topic, data, 1, True):
                    st.sent[topic] = data
                    st.owned.add(topic)
                else:
                    ok = False
        if not ok:
            self._dirty.set()

    # ------------------------------------------------------------------ runtime messages

    def _handle(self, topic: str, payload: dict[str, Any]) -> None:
        kind, _, stream = topic.partition(".")
        body = messages.encode(topic, payload).partition(b" ")[2]  # the ZeroMQ JSON, byte for byte
        if kind == messages.TOPIC_EVENT:
            self._event(str(payload.get("stream") or stream), payload, body)
        elif kind == messages.TOPIC_SCORES:
            self._scores(str(payload.get("stream") or stream), payload, body)
        elif kind == messages.TOPIC_STATUS:
            self._status(payload, body)
        elif kind == messages.TOPIC_MEDIA:
            self._media(str(payload.get("stream") or stream), payload, body)

    def _event(self, stream: str, payload: dict[str, Any], body: bytes) -> None:
        self._send(self.topics.events, body, self.qos, False)
        action = payload.get("action")
        if not STREAM_LEVEL.match(stream) or not isinstance(action, str):
            return
        state = b"OFF" if payload.get("phase") == "end" else b"ON"
        d = self._state.pair.setdefault((stream, action), {})
        d[""], d["attributes"] = state, body
        if self._state.has_pair(stream, action):
            key = self._state.key(action)
            self._retain(self.topics.action(stream, key), state)
            self._retain(self.topics.action(stream, key, "attributes"), body)
        if payload.get("phase") == "end" and payload.get("media") and isinstance(payload.get("id"), str):
            self._event_pairs[payload["id"]] = (stream, action)
            while len(self._event_pairs) > 2000:
                self._event_pairs.popitem(last=False)

    def _scores(self, stream: str, payload: dict[str, Any], body: bytes) -> None:
        if not self.scores or not STREAM_LEVEL.match(stream):
            return
        zone = payload.get("zone")
        zone = zone if isinstance(zone, str) and STREAM_LEVEL.match(zone) else None
        self._send(self.topics.scores(stream, zone), body, 0, False)
        smoothed = payload.get("smoothed")
        if isinstance(smoothed, dict):
            for action, value in smoothed.items():
                if isinstance(value, int | float):
                    self._score_value[(stream, str(action))] = float(value)
            self._flush_scores(time.monotonic())

    def _status(self, payload: dict[str, Any], body: bytes) -> None:
        self._state.status = body
        self._retain(self.topics.status, body)
        streams = payload.get("streams")
        if not isinstance(streams, dict):
            return
        for name, snap in streams.items():  # with a runtime behind the sink, its newer health is polled
            if self.runtime is None and isinstance(snap, dict) and "health" in snap:
                self._health(str(name), snap["health"])
        names = (payload.get("actions") or {}).get("names")
        if not self._explicit_catalog and isinstance(names, list):
            self._catalog(streams.keys(), names)

    def _media(self, stream: str, payload: dict[str, Any], body: bytes) -> None:
        """``media.<stream>``: forwarded; once written, the event's snapshot goes (retained) on
        ``<prefix>/<stream>/<key>/snapshot``."""
        if STREAM_LEVEL.match(stream):
            self._send(self.topics.stream(stream, "media"), body, self.qos, False)
        pair = self._event_pairs.pop(str(payload.get("event")), None)
        if self.media_dir is None or pair is None or not payload.get("written"):
            return
        path = evidence.snapshot_file(self.media_dir, pair[0], payload.get("snapshot"))
        data = None
        try:
            if path is not None and path.stat().st_size <= MAX_SNAPSHOT_FILE:
                data = evidence.bounded_jpeg(path.read_bytes(), int(self.settings.snapshot_max_bytes))
        except OSError as e:
            log.warning("mqtt: snapshot of event %s: %s", payload.get("event"), e)
        if data is None:
            self.snapshots_skipped += 1
            return
        self._state.pair.setdefault(pair, {})["snapshot"] = data
        if self._state.has_pair(*pair):
            self._retain(self.topics.action(pair[0], self._state.key(pair[1]), "snapshot"), data)
            self.snapshots += 1

    def _command(self, topic: str, payload: bytes) -> None:
        if self.runtime is None or not self.commands_on:
            return
        try:
            done = commands.apply(self.topics, self._state.catalog, self.runtime, topic, payload)
        except CezsarError as e:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:
                log.warning("%s [%d refused so far]", e, self.refused)
            return
        self.commands += 1
        log.info("mqtt: %s %s switched %s", done.kind, done.name, "on" if done.on else "off")
        (self._state.stream_on if done.kind == "stream" else self._state.action_on)[done.name] = done.on
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
        if self.commands_on:
            client.subscribe([(f, 1) for f in self.topics.command_filters()])
        _, mid = client.subscribe([(f, 1) for f in self.topics.scan_filters()])
        with self._lock:
            self._scan_mid, self._new_connection = mid, True

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with self._lock:
            if mid == self._scan_mid:
                self._scan_until = time.monotonic() + SCAN_WINDOW

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if self.topics.parse_command(msg.topic) is not None:
            if self.commands_on:
                try:
                    self._queue.put_nowait(_Command(msg.topic, bytes(msg.payload)))
                except queue.Full:
                    self.dropped += 1
            return
        if msg.retain and msg.payload:  # a retained message of ours from before (start-up scan)
            with self._lock:
                self._found.append(msg.topic)

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
