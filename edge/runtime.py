"""The edge runtime: the shell around the Recognizer that owns the threads, sockets, sinks and files.

    reader thread per source (decode -> sample -> preprocess -> FrameQueue)
        -> main loop: drain every queue -> Recognizer.push (edge/recognizer.py: frame encoder once per
           frame, rings, temporal head per hop, scorer, decisions; no threads)
           -> edge/messages.py (scores, events, status) -> sinks (ZeroMQ PUB, events log, MQTT)
           -> annotated video, media recorder (snapshot + clip per event), frame taps
    HTTP server thread (--http: /healthz /readyz /metrics /media) reads Metrics fed by the main loop
    actions watcher thread (polls the actions file)      -> ActionStore -> Recognizer.set_actions
    control thread (REP socket)                           -> ActionStore -> Recognizer.set_actions

Everything the runtime opens goes on one ExitStack the moment it is opened: when __init__ fails half
way, what was opened so far is closed; close() unwinds the same stack: sources stopped, threads
joined, open events ended and the final status published, then the sinks, the CURVE
authenticator and the models closed.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import load_manifest
from cezsar.errors import CezsarError
from cezsar.video import default_stream_name, parse_source, parse_sources
from edge import messages
from edge.actions import ActionStore, ActionsWatcher, load_actions, warnings
from edge.annotate import Annotator
from edge.control import ControlHandler, ControlServer
from edge.decisions import Event
from edge.embedder import WindowEmbedder
from edge.endpoints import DEFAULT_CONTROL, DEFAULT_PUB
from edge.http import HttpServer, Metrics
from edge.media import MediaRecorder, MediaResult
from edge.publisher import SNDHWM, Publisher
from edge.recognizer import Recognizer, Step
from edge.security import CurveServer
from edge.sinks import Sink, Sinks
from edge.sinks.events_log import EventsLog
from edge.sinks.mqtt import MqttSink, MqttTls
from edge.sources import Frame, Source
from edge.text import TextEncoder
from edge.zones import Zone, split_stream, zone_stream

log = logging.getLogger("cezsar.edge")

FINAL_LINGER_MS = 500  # how long closing the PUB socket may take to hand the final messages to subscribers
MEDIA_FLUSH_S = 10.0  # how long close() waits for the snapshots and clips of the last events

FrameTap = Callable[[str, float, np.ndarray], None]


@dataclass
class MqttOptions:
    """``--mqtt HOST[:PORT]`` and its options (edge/sinks/mqtt.py)."""

    host: str
    port: int = 1883
    prefix: str = "cezsar"
    username: str | None = None
    password: str | None = None
    tls: MqttTls | None = None
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    node_id: str | None = None
    client_id: str | None = None
    scores: bool = True
    qos: int = 1


@dataclass
class MediaOptions:
    """``--media DIR`` and its options (edge/media.py)."""

    dir: Path
    pre_roll: float = 3.0
    max_clip: float = 120.0
    max_bytes: int = 2 << 30
    max_age: float = 7 * 86400.0


def parse_host_port(value: str, default_host: str | None, default_port: int | None, what: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``PORT`` or ``[v6]:PORT`` -> (host, port); one clear line when wrong."""
    v = value.strip()
    host: str | None
    port_s: str | None
    if v.startswith("["):
        host, sep, rest = v[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else (None if not rest else "x")
    elif v.isdigit():
        host, port_s = None, v
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    else:
        host, port_s = v, None
    host = host or default_host
    try:
        port = int(port_s) if port_s is not None else default_port
    except ValueError:
        port = None
    if not host or port is None or not 0 <= port < 65536:
        raise CezsarError(f"{what} {value!r}: expected [HOST:]PORT or HOST[:PORT] with a port 0-65535")
    return host, port


@dataclass
class RuntimeConfig:
    deploy: Path
    sources: list[str]
    actions: Path
    pub: str = DEFAULT_PUB
    control: str | None = DEFAULT_CONTROL
    backend: str = "auto"
    precision: str = "auto"  # auto: the best the chosen backend runs
    realtime: bool = True
    hop: int = 2
    fps: float | None = None  # None: manifest.fps
    events_log: Path | None = None
    output: Path | None = None
    duration: float | None = None
    cache: bool = True
    status_interval: float = 2.0
    stats_interval: float = 5.0
    scores: bool = True  # publish per-window scores
    threads: int | None = None
    update_interval: float = 1.0
    max_gap: float = 10.0
    batch_wait: float = 0.0  # seconds to wait for the other streams' frames before encoding
    hwm: int = SNDHWM  # messages queued per subscriber before PUB drops for that subscriber
    curve_secret: Path | None = None  # the runtime's CURVE .key_secret: encrypt + authenticate both sockets
    curve_clients: Path | None = None  # folder of allowed client public keys (*.key)
    fallback_backend: str | None = None  # backend to use when --backend cannot load (e.g. onnxruntime-cpu)
    shutdown_timeout: float = 0.5  # seconds close() waits for reader threads (they are daemons)
    extra_status: dict[str, Any] = field(default_factory=dict)
    mqtt: MqttOptions | None = None  # publish to an MQTT broker too (Home Assistant discovery)
    http: tuple[str, int] | None = None  # (bind, port): /healthz /readyz /metrics (/media)
    http_token: str | None = None  # bearer token; required beyond loopback
    media: MediaOptions | None = None  # snapshot + clip per event
    instance: str | None = None  # publisher instance id in every message (default: random, new per start)
    zones: dict[str, dict[str, Zone]] = field(default_factory=dict)  # stream -> zone name -> Zone
    # sources added at run time (control socket, HTTP): network URLs and cameras; video files only
    # under this folder; GStreamer pipelines never (they can read and write any file)
    runtime_files: Path | None = None
    console: bool = True  # the web console (edge/console) on the HTTP server, when http is set


class _Latency:
    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=2000)

    def add(self, ms: float) -> None:
        self.recent.append(ms)

    def summary(self) -> dict[str, float | int | None]:
        if not self.recent:
            return {"p50": None, "p95": None, "max": None, "n": 0}
        a = np.asarray(list(self.recent))  # list() copies atomically; read from the control thread too
        return {
            "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1),
            "max": round(float(a.max()), 1),
            "n": int(a.size),
        }


def _stop_authenticator(auth: Any) -> None:
    try:
        auth.stop()
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.debug("authenticator stop", exc_info=True)


class Runtime:
    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        # everything that can be checked without loading a model fails first, in one clear line
        specs = parse_sources(cfg.sources)
        if cfg.hop < 1:
            raise CezsarError(f"--hop {cfg.hop}: must be >= 1")
        self.manifest = load_manifest(cfg.deploy)
        self.fps = float(cfg.fps or self.manifest.fps)
        if not self.fps > 0:
            raise CezsarError(f"--fps {cfg.fps}: must be > 0")
        self.window = self.manifest.window
        load_actions(cfg.actions)
        self.curve: CurveServer | None = None
        if cfg.curve_secret or cfg.curve_clients:
            if not (cfg.curve_secret and cfg.curve_clients):
                raise CezsarError("CURVE needs both --curve-secret (server .key_secret) and --curve-clients (folder)")
            self.curve = CurveServer.load(cfg.curve_secret, cfg.curve_clients)
        self.errors: deque[str] = deque(maxlen=10)
        self.stop_event = threading.Event()
        self.notify = threading.Event()
        self.started_at = time.time()
        self.latency = _Latency()
        self.events_total = 0
        self.events_by_phase: dict[str, int] = {"start": 0, "update": 0, "end": 0}
        self.inference_errors = 0
        self._ended_streams: set[str] = set()
        self._reconnects: dict[str, int] = {}
        self._opened = self._started = self._closed = False
        self.frame_taps: list[FrameTap] = []  # (stream, t, bgr) per frame from the main loop; must be cheap
        self.tap_errors = 0
        self.http: HttpServer | None = None
        self.metrics: Metrics | None = None
        self.media: MediaRecorder | None = None
        self.mqtt: MqttSink | None = None
        self._media_done: deque[MediaResult] = deque()  # written by the media thread, published by the main loop
        self._counted: dict[str, tuple[int, int]] = {}  # stream -> (frames, dropped) already in the metrics
        self.sources: list[Source] = []
        self.sequencer = messages.Sequencer(cfg.instance)
        self._clocks: dict[str, str] = {sp.name: "wall" if sp.live else "media" for sp in specs}
        names = {sp.name for sp in specs}
        unknown = sorted(set(cfg.zones) - names)
        if unknown:
            raise CezsarError(f"zones for unknown stream(s) {', '.join(unknown)} (streams: {', '.join(sorted(names))})")
        self.zones = {k: dict(v) for k, v in cfg.zones.items()}
        self._zone_plan: tuple[int, dict[str, list[Zone]]] = (-1, {})  # (actions version, stream -> zones to crop)
        self._discovery_version: tuple[int, int] = (-1, -1)
        self._sources_version = 0
        self._source_ops: queue.Queue[tuple[Callable[[], dict[str, Any]], Future[dict[str, Any]]]] = queue.Queue()
        self.stop_reason = "running"
        with ExitStack() as stack:  # unwound here if anything below fails, else by close()
            self.loaded = self._load_backend()
            stack.callback(self.loaded.close)
            self.text = TextEncoder(cfg.deploy, self.manifest, cfg.threads)
            embedder = WindowEmbedder(
                self.loaded.frame_encoder,
                self.loaded.temporal_head,
                self.window,
                cfg.hop,
                self.manifest.feature_dim,
                cache=cfg.cache,
                max_gap=cfg.max_gap,
            )
            self.recognizer = Recognizer(embedder, self.text, update_interval=cfg.update_interval)
            self.store = ActionStore(cfg.actions, on_change=self.recognizer.set_actions)
            self.store.load()
            for w in warnings(self.store.current):
                log.warning("actions file %s: %s", cfg.actions, w)
            if self.curve is not None:
                import zmq

                stack.callback(_stop_authenticator, self.curve.start_authenticator(zmq.Context.instance()))
            self.sinks = Sinks()
            stack.callback(self.sinks.close)
            self.publisher = Publisher(cfg.pub, hwm=cfg.hwm, linger_ms=FINAL_LINGER_MS, curve=self.curve)
            self.add_sink(self.publisher)
            if cfg.events_log:
                self.add_sink(EventsLog(cfg.events_log))
            if cfg.mqtt is not None:
                self.mqtt = self._mqtt_sink(cfg.mqtt)
                self.add_sink(self.mqtt)
            if cfg.http is not None:
                self.metrics = Metrics()
                self.http = HttpServer(
                    cfg.http[0],
                    cfg.http[1],
                    metrics=self.metrics,
                    ready=self.ready,
                    token=cfg.http_token,
                    media_dir=cfg.media.dir if cfg.media else None,
                )
                self._add_source_routes(self.http)
                if cfg.console:  # issue 15: the web console's routes, sink and frame tap, before the server starts
                    from edge.console import attach_console

                    attach_console(self)
                stack.callback(self.http.stop)  # started by start(): routes can be added until then
                self._init_metrics()
            if cfg.media is not None:
                mo = cfg.media
                self.media = MediaRecorder(
                    mo.dir,
                    pre_roll=mo.pre_roll,
                    start_delay=max(5.0, 2 * self.window / self.fps),
                    max_clip=mo.max_clip,
                    max_bytes=mo.max_bytes,
                    max_age=mo.max_age,
                    base_url=None,  # the HTTP server's /media URL, set by start() once it listens
                    on_written=self._media_done.append,
                )
                stack.callback(self.media.close)
                if self.metrics is not None:
                    self.metrics.watch_sink("media", self.media.stats)
            stack.callback(self._finish)  # before the sinks close: end open events, final status
            self.watcher = ActionsWatcher(self.store)
            stack.callback(self.watcher.stop)
            self.control: ControlServer | None = None
            if cfg.control:
                self.control = ControlServer(
                    cfg.control, ControlHandler(self.store, self.status, sources=self), curve=self.curve
                )
                stack.callback(self.control.stop)
            self.annotator: Annotator | None = None
            if cfg.output:
                self.annotator = Annotator(Path(cfg.output), self.fps, len(specs) > 1)
                stack.callback(self.annotator.close)
            capacity = max(4, 2 * cfg.hop)
            self.sources = [Source(s, self.manifest.pre, self.fps, cfg.realtime, capacity, self.notify) for s in specs]
            stack.callback(self._stop_sources)  # first thing close() does
            self._resources = stack.pop_all()
        self._opened = True

    def _load_backend(self) -> Any:
        cfg = self.cfg
        try:
            return load_backend(cfg.backend, cfg.precision, cfg.deploy, self.manifest, cfg.threads)
        except CezsarError as e:
            if not cfg.fallback_backend:
                raise
            log.warning(
                "--backend %s cannot run (%s); using --fallback-backend %s", cfg.backend, e, cfg.fallback_backend
            )
            loaded = load_backend(cfg.fallback_backend, "auto", cfg.deploy, self.manifest, cfg.threads)
            loaded.reason = f"fallback: --backend {cfg.backend} failed ({e}); {loaded.reason}"
            self.errors.append(f"backend {cfg.backend}: {e}")
            return loaded

    def _mqtt_sink(self, o: MqttOptions) -> MqttSink:
        return MqttSink(
            o.host,
            o.port,
            prefix=o.prefix,
            username=o.username,
            password=o.password,
            tls=o.tls,
            client_id=o.client_id,
            node_id=o.node_id,
            discovery=o.discovery,
            discovery_prefix=o.discovery_prefix,
            scores=o.scores and self.cfg.scores,
            qos=o.qos,
        )

    def _init_metrics(self) -> None:
        m = self.metrics
        assert m is not None
        backend = self.loaded.backend
        m.set_info(backend.describe(), backend.precision, model=self.manifest.model_hash[:12])
        m.set_actions(len(self.store.current.actions))
        m.watch_sink("zmq", self.publisher.stats)
        if self.mqtt is not None:
            m.watch_sink("mqtt", self.mqtt.stats)

    def ready(self) -> tuple[bool, list[str]]:
        """/readyz: models loaded (they are, once the runtime exists) and every source producing frames
        (a file that played to its end counts; a failed or reconnecting source, or one with no frame yet,
        does not)."""
        reasons = []
        if self._closed:
            reasons.append("runtime stopped")
        for s in list(self.sources):
            snap = s.snapshot()
            if snap["state"] in ("failed", "reconnecting", "connecting", "starting", "stopped"):
                reasons.append(f"{s.name}: {snap['state']}" + (f" ({snap['error']})" if snap["error"] else ""))
            elif snap["frames"] == 0:
                reasons.append(f"{s.name}: no frame yet")
        return not reasons, reasons

    def add_sink(self, sink: Sink) -> None:
        """One more output for every message (edge/sinks), from the next message on; closed after the
        final status."""
        self.sinks.add(sink)

    @property
    def embedder(self) -> WindowEmbedder:
        return self.recognizer.embedder

    # -- summary and status ----------------------------------------------------------------
    def summary(self) -> list[str]:
        cfg, m = self.cfg, self.manifest
        aset = self.store.current
        lines = [
            f"deploy: {cfg.deploy} (model {m.model_hash[:12]}, window T={self.window} at {m.fps:g} fps, "
            f"{m.pre.size}px)",
            f"backend: {self.loaded.backend.describe()} - {self.loaded.reason}",
        ]
        lines += [f"  skipped {s}" for s in self.loaded.skipped]
        lines.append(
            f"sampling: {self.fps:g} fps, window {self.window} frames ({self.window / self.fps:.2f} s), hop "
            f"{cfg.hop} ({cfg.hop / self.fps:.2f} s), feature cache {'on' if cfg.cache else 'off'}, "
            f"{'real time' if cfg.realtime else 'every frame (--no-realtime)'}"
        )
        lines += [f"source {s.spec.describe()}" for s in self.sources]
        lines.append(
            f"actions: {cfg.actions}: {len(aset.actions)} ({', '.join(aset.names()) or 'none'}); "
            f"background: {len(aset.background)} description(s)"
        )
        lines.append(
            f"publish: {self.publisher.endpoint}" + (f", control: {self.control.endpoint}" if self.control else "")
        )
        if cfg.events_log:
            lines.append(f"events log: {cfg.events_log}")
        if cfg.output:
            lines.append(f"annotated video: {cfg.output}")
        if self.mqtt is not None:
            lines.append(f"mqtt: {self.mqtt.host}:{self.mqtt.port} prefix {self.mqtt.prefix}")
        if self.http is not None:
            lines.append(f"http: {self.http.url} (/healthz /readyz /metrics{' /media' if self.media else ''})")
        if self.media is not None:
            lines.append(f"media: {self.media.dir} (pre-roll {self.media.pre_roll:g} s)")
        return lines

    def _status_message(self, final: bool) -> messages.Message:
        rec, e, aset = self.recognizer, self.recognizer.embedder, self.store.current
        streams = {}
        for s in self.sources:
            snap = s.snapshot()
            snap["windows"] = rec.windows_by_stream.get(s.name, 0)
            streams[s.name] = snap
        return messages.status(
            now=time.time(),
            started_at=self.started_at,
            final=final,
            state=self.stop_reason,
            backend=self.loaded.backend.describe(),
            backend_reason=self.loaded.reason,
            precision=self.loaded.backend.precision,
            fps=self.fps,
            window=self.window,
            hop=self.cfg.hop,
            cache=self.cfg.cache,
            realtime=self.cfg.realtime,
            streams=streams,
            latency=self.latency.summary(),
            inference=messages.inference(e.frames_encoded, e.windows_out, e.encoder_seconds, e.head_seconds),
            actions=messages.actions_state(aset.names(), self.store.version, self.store.error, self.store.error_line),
            events={"total": self.events_total, "open": len(rec.active()), **self.events_by_phase},
            publisher=self.publisher.stats(),
            outputs=self._outputs(),
            security={"curve": self.curve is not None, "allowed_clients": self.curve.clients if self.curve else 0},
            errors=list(self.errors),
            extra=self.cfg.extra_status,
        )

    def _outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.mqtt is not None:
            out["mqtt"] = self.mqtt.stats()
        if self.http is not None:
            out["http"] = {"url": self.http.url}
        if self.media is not None:
            out["media"] = self.media.stats()
        return out

    def status(self, final: bool = False) -> dict[str, Any]:
        return self._status_message(final).payload

    def publish_status(self, final: bool = False) -> dict[str, Any]:
        msg = self._send(self._status_message(final))
        return msg.payload

    def _send(self, msg: messages.Message) -> messages.Message:
        """Stamp (seq, topic_seq, host, instance) and hand to every sink; returns the stamped message."""
        stamped = self.sequencer.stamp(msg)
        self.sinks.publish(*stamped)
        return stamped

    def stats_line(self) -> str:
        parts = []
        for s in self.sources:
            snap = s.snapshot()
            parts.append(
                f"{s.name} {snap['state']} in {snap['input_fps']:.1f} fps, sampled {snap['sampled']}, "
                f"dropped {snap['dropped']}, windows {self.recognizer.windows_by_stream.get(s.name, 0)}"
            )
        lat = self.latency.summary()
        lat_s = f"latency p50 {lat['p50']} ms p95 {lat['p95']} ms" if lat["n"] else "latency -"
        err = f" | actions file: {self.store.error}" if self.store.error else ""
        return (
            f"stats | {' | '.join(parts)} | {lat_s} | events {self.events_total} "
            f"(open {len(self.recognizer.active())}) | actions {len(self.store.current.actions)}{err}"
        )

    # -- publishing ------------------------------------------------------------------------
    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            media: dict[str, Any] | None = None
            stream = split_stream(ev.stream)[0]
            if self.media is not None:
                if ev.phase == "start":
                    self.media.event_start(ev.id, stream, ev.start)
                elif ev.phase == "end":
                    res = self.media.event_end(ev.id, ev.end if ev.end is not None else ev.start, ev.peak_time)
                    media = None if res is None else {**res.as_message(), "written": False}
            if self.metrics is not None and ev.phase == "start":
                self.metrics.event(stream, ev.action)
            self._send(
                messages.event(
                    ev,
                    time.time(),
                    media=media,
                    clock=self._clocks.get(stream, "media"),
                    actions_version=self.store.version,
                    model=self.manifest.model_hash,
                )
            )
            self.events_total += 1
            self.events_by_phase[ev.phase] = self.events_by_phase.get(ev.phase, 0) + 1
            level = logging.INFO if ev.phase != "update" else logging.DEBUG
            span = f"{ev.start:.2f}-{ev.end:.2f}" if ev.end is not None else f"{ev.start:.2f}-"
            reason = f" ({ev.reason})" if ev.reason else ""
            log.log(level, "event %s %s %s [%s s] peak %.3f%s", ev.phase, ev.stream, ev.action, span, ev.peak, reason)

    def _publish(self, step: Step) -> None:
        self._emit(step.ended)
        for r in step.windows:
            now = time.time()
            self.latency.add(1000 * (now - r.window.wall))
            if self.metrics is not None:
                self.metrics.window_latency(now - r.window.wall, split_stream(r.window.stream)[0])
            if self.cfg.scores:
                self._send(messages.scores(r, now, clock=self._clocks.get(split_stream(r.window.stream)[0], "media")))
            self._emit(r.events)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the HTTP server (its port is known from here on), the sources and the threads.
        Until then more routes can be added to ``runtime.http.app`` (a web console)."""
        if self._started:
            return
        self._started = True
        if self.http is not None:
            self.http.start()
            if self.media is not None:
                self.media.base_url = f"{self.http.url}/media"
        self.started_at = time.time()
        for s in self.sources:
            s.start()
        self.watcher.start()
        if self.control:
            self.control.start()

    def stop(self, reason: str = "stopped") -> None:
        if self.stop_reason == "running":
            self.stop_reason = reason
        self.stop_event.set()
        self.notify.set()

    def _check_streams(self) -> None:
        for s in self.sources:
            rc = s.stats.reconnects
            if rc != self._reconnects.get(s.name, 0):
                self._reconnects[s.name] = rc
                for name in self._stream_names(s.name):
                    self._emit(self.recognizer.end_stream(name, "stream_interrupted"))
                self.errors.append(f"{s.name}: {s.stats.error or 'reconnecting'}")
            if s.finished and s.name not in self._ended_streams:
                self._ended_streams.add(s.name)
                for name in self._stream_names(s.name):
                    self._emit(self.recognizer.end_stream(name, "stream_end"))
                if s.stats.state == "failed":
                    self.errors.append(f"{s.name}: {s.stats.error}")
                log.info("source %s %s%s", s.name, s.stats.state, f": {s.stats.error}" if s.stats.error else "")

    def _stream_names(self, stream: str) -> list[str]:
        """A stream and its zones' crops, as the Recognizer names them."""
        return [stream, *(zone_stream(stream, z) for z in self.zones.get(stream, {}))]

    def _gather(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every running stream to have a frame queued (bigger batches
        across unsynchronised streams, at the cost of up to that much latency)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            waiting = [s for s in self.sources if s.stats.state == "running" and len(s.queue) == 0]
            if not waiting:
                return
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))

    def _process(self, frames: list[Frame]) -> None:
        """Frames -> Recognizer -> messages / video. A failure here (e.g. the inference backend) is
        reported and these frames are skipped; the runtime goes on with the next ones."""
        self._tap(frames)
        try:
            self._publish(self.recognizer.push(frames + self._zone_frames(frames)))
            if self.metrics is not None:
                per: dict[str, int] = {}
                for f in frames:
                    per[f.stream] = per.get(f.stream, 0) + 1
                for name, n in per.items():
                    self.metrics.frame_encoded(name, n)
            if self.annotator is not None:
                active = {(e.stream, e.action) for e in self.recognizer.active()}
                self.annotator.write(frames, active, self.recognizer.smoothed)
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop every stream
            self.inference_errors += 1
            n = self.inference_errors
            msg = f"processing {len(frames)} frame(s) failed ({type(e).__name__}: {str(e)[:200]})"
            if n & (n - 1) == 0:
                log.exception("%s [%d so far]", msg, n)
            self.errors.append(msg)
            for stream in {f.stream for f in frames}:
                for name in self._stream_names(stream):
                    self.recognizer.reset(name)

    def _zones_needed(self) -> dict[str, list[Zone]]:
        """stream -> the zones some action of the current set needs (recomputed per actions version)."""
        version = self.store.version
        if self._zone_plan[0] == version:
            return self._zone_plan[1]
        plan: dict[str, list[Zone]] = {}
        for stream, zname in sorted(self.store.current.zones(), key=str):
            targets = [stream] if stream is not None else [s.name for s in self.sources]
            for name in targets:
                z = self.zones.get(name, {}).get(zname)
                if z is None:
                    if stream is not None or not any(zname in zs for zs in self.zones.values()):
                        msg = f"actions: zone '{zname}' is not defined for stream {name} (site config zones / --zone)"
                        log.warning("%s", msg)
                        self.errors.append(msg)
                    continue
                if z not in plan.setdefault(name, []):
                    plan[name].append(z)
        self._zone_plan = (version, plan)
        return plan

    def _zone_frames(self, frames: list[Frame]) -> list[Frame]:
        """The crops of the zones that actions need, each as a frame of the stream ``<stream>@<zone>``."""
        plan = self._zones_needed()
        if not plan:
            return []
        out = []
        for f in frames:
            for z in plan.get(f.stream, ()):
                out.append(
                    Frame.from_image(
                        zone_stream(f.stream, z.name), f.index, f.t, f.wall, z.crop(f.image), self.manifest.pre
                    )
                )
        return out

    def _sync_discovery(self) -> None:
        """Tell the MQTT sink which stream x action pairs exist (per-stream actions), per actions version."""
        key = (self.store.version, self._sources_version)
        if self.mqtt is None or self._discovery_version == key:
            return
        self._discovery_version = key
        aset = self.store.current
        pairs: dict[str, list[str]] = {}
        for s in self.sources:
            zones = [zone_stream(s.name, z) for z in self.zones.get(s.name, {})]
            pairs[s.name] = [a.name for a in aset.actions if any(a.applies(n) for n in [s.name, *zones])]
        self.mqtt.set_actions(pairs.keys(), pairs)

    # -- sources added and removed while running (control socket, HTTP) ---------------------
    def list_sources(self) -> dict[str, Any]:
        return {"sources": [{"name": s.name, **s.snapshot()} for s in list(self.sources)]}

    def add_source(self, text: str, timeout: float = 10.0) -> dict[str, Any]:
        """Start one more stream (``NAME=URL``); any thread. Returns its description once running."""
        spec = parse_source(text, default_stream_name(text, len(self.sources), {s.name for s in self.sources}))
        if spec.kind == "gstreamer":
            raise CezsarError(f"source {text!r}: GStreamer pipelines cannot be added while running (start with them)")
        if spec.kind == "file":
            base = self.cfg.runtime_files
            target = Path(spec.target).resolve()
            if base is None or not target.is_relative_to(base.resolve()):
                raise CezsarError(
                    f"source {text!r}: video files can be added while running only from the --runtime-files folder"
                    + ("" if base is None else f" ({base})")
                )
            if not target.is_file():
                raise CezsarError(f"source {text!r}: {spec.target}: video file not found")

        def apply() -> dict[str, Any]:
            if any(s.name == spec.name for s in self.sources):
                raise CezsarError(f"source {spec.name}: a stream of that name exists")
            src = Source(spec, self.manifest.pre, self.fps, self.cfg.realtime, max(4, 2 * self.cfg.hop), self.notify)
            self.sources.append(src)
            self._clocks[spec.name] = "wall" if spec.live else "media"
            self._ended_streams.discard(spec.name)
            self._zone_plan = (-1, {})
            self._sources_version += 1
            src.start()
            log.info("source added: %s", spec.describe())
            return {"name": spec.name, "kind": spec.kind}

        return self._on_main_loop(apply, timeout)

    def remove_source(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Stop a stream and end its open events (``source_removed``); any thread."""

        def apply() -> dict[str, Any]:
            src = next((s for s in self.sources if s.name == name), None)
            if src is None:
                raise CezsarError(f"no source named {name!r} (sources: {', '.join(s.name for s in self.sources)})")
            src.stop()
            self.sources.remove(src)
            self._ended_streams.add(name)
            for n in self._stream_names(name):
                self._emit(self.recognizer.end_stream(n, "source_removed"))
            self._sources_version += 1
            src.join(self.cfg.shutdown_timeout)
            log.info("source removed: %s", name)
            return {"name": name, "sources": [s.name for s in self.sources]}

        return self._on_main_loop(apply, timeout)

    def _add_source_routes(self, http: HttpServer) -> None:
        """GET /sources, POST /sources {"source": "NAME=URL"}, DELETE /sources/NAME (behind the token)."""
        import asyncio

        web = http._web

        async def call(fn: Callable[..., dict[str, Any]], *args: Any) -> Any:
            try:
                body = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
            except CezsarError as e:
                return web.json_response({"ok": False, "error": e.message}, status=400)
            return web.json_response({"ok": True, **body})

        async def get_sources(request: Any) -> Any:
            return await call(self.list_sources)

        async def post_source(request: Any) -> Any:
            try:
                data = await request.json()
            except ValueError:
                data = None
            text = data.get("source") if isinstance(data, dict) else None
            if not isinstance(text, str) or not text.strip():
                return web.json_response({"ok": False, "error": 'expected JSON {"source": "NAME=URL"}'}, status=400)
            return await call(self.add_source, text.strip())

        async def delete_source(request: Any) -> Any:
            return await call(self.remove_source, request.match_info["name"])

        http.app.router.add_get("/sources", get_sources)
        http.app.router.add_post("/sources", post_source)
        http.app.router.add_delete("/sources/{name}", delete_source)

    def _on_main_loop(self, fn: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Run ``fn`` between two frame batches of the main loop and wait for its result."""
        if not self._started or self._closed or self.stop_event.is_set():
            raise CezsarError("the runtime is not running")
        fut: Future[dict[str, Any]] = Future()
        self._source_ops.put((fn, fut))
        self.notify.set()
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise CezsarError(f"the runtime did not apply the change within {timeout:g} s") from None

    def _apply_source_ops(self) -> None:
        while True:
            try:
                fn, fut = self._source_ops.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except Exception as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def _tap(self, frames: list[Frame]) -> None:
        """Every frame to the media ring and the frame taps (cheap: references, no copies)."""
        for f in frames:
            if self.media is not None:
                self.media.add_frame(f.stream, f.t, f.image)
            for tap in list(self.frame_taps):
                try:
                    tap(f.stream, f.t, f.image)
                except Exception as e:  # noqa: BLE001 - a broken tap must not stop recognition
                    self.tap_errors += 1
                    if self.tap_errors & (self.tap_errors - 1) == 0:
                        log.warning(
                            "frame tap %r failed (%s: %s) [%d so far]", tap, type(e).__name__, e, self.tap_errors
                        )

    def _publish_media(self) -> None:
        """The media of ended events that the writer finished: one ``media.<stream>`` message each."""
        while self._media_done:
            res = self._media_done.popleft()
            self._send(messages.media(res.event_id, res.stream, res.as_message(), res.written, res.error))

    def _count_frames(self) -> None:
        if self.metrics is None:
            return
        for s in self.sources:
            frames, dropped = s.stats.frames, s.queue.dropped
            f0, d0 = self._counted.get(s.name, (0, 0))
            if frames > f0:
                self.metrics.frame_in(s.name, frames - f0)
            if dropped > d0:
                self.metrics.frame_dropped(s.name, dropped - d0)
            self._counted[s.name] = (frames, dropped)
        self.metrics.set_actions(len(self.store.current.actions))

    def run(self) -> int:
        """Run until every source is finished, ``duration`` passed or stop(); returns the exit code."""
        self.start()
        cfg = self.cfg
        next_status = time.monotonic()
        next_stats = time.monotonic() + cfg.stats_interval
        deadline = None if cfg.duration is None else time.monotonic() + cfg.duration
        try:
            while not self.stop_event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    self.stop_reason = "duration"
                    break
                self.notify.wait(0.1)
                if cfg.batch_wait > 0:
                    self._gather(cfg.batch_wait)
                self.notify.clear()
                self._apply_source_ops()
                frames: list[Frame] = []
                for s in self.sources:
                    frames.extend(s.queue.drain())
                self._emit(self.recognizer.sync())  # an edited action set, also while no frames come
                if frames:
                    self._process(frames)
                self._check_streams()
                self._sync_discovery()
                self._publish_media()
                self._count_frames()
                now = time.monotonic()
                if now >= next_status:
                    self.publish_status()
                    next_status = now + cfg.status_interval
                if now >= next_stats:
                    log.info("%s", self.stats_line())
                    next_stats = now + cfg.stats_interval
                if self.sources and all(s.finished for s in self.sources):
                    self.stop_reason = "finished"
                    break
        finally:
            self.close()
        failed = [s.name for s in self.sources if s.stats.state == "failed"]
        return 1 if failed else 0

    def _stop_sources(self) -> None:
        if self.stop_reason == "running":
            self.stop_reason = "stopped"
        for s in self.sources:
            s.stop()
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        for s in self.sources:  # daemon threads: one stuck in a network read does not hold the exit
            s.join(max(0.0, deadline - time.monotonic()))

    def _finish(self) -> None:
        """On the way out (threads stopped, sinks still open): end open events, publish the final status."""
        if not self._opened:  # __init__ failed: nothing ran, nothing to report
            return
        self._emit(self.recognizer.end_all("shutdown"))
        if self.media is not None:
            if not self.media.flush(MEDIA_FLUSH_S):
                log.warning("media: writer still busy after %g s; the last clips may be missing", MEDIA_FLUSH_S)
            self._publish_media()
        self._count_frames()
        final = self.publish_status(final=True)
        log.info("%s", self.stats_line())
        p50 = final["latency_ms"]["p50"]
        log.info(
            "stopped (%s): %d windows, %d events, latency p50 %s",
            self.stop_reason,
            final["inference"]["windows"],
            self.events_total,
            "-" if p50 is None else f"{p50} ms",
        )

    def close(self) -> None:
        """Stop everything (see the module docstring); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._resources.close()
