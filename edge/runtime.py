"""The edge runtime: wiring and threads.

    reader thread per source (decode -> sample -> preprocess -> FrameQueue)
        -> main loop: drain every queue -> WindowEmbedder (frame encoder batched across streams,
           rings, temporal head per hop) -> Scorer -> Decisions -> Publisher / events log / video
    actions watcher thread (polls the actions file)      -> ActionStore -> new Scorer
    control thread (REP socket)                           -> ActionStore -> new Scorer

The Scorer is swapped as one reference, so the main loop always scores with a complete set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import load_manifest
from cezsar.errors import CezsarError
from edge import messages
from edge.actions import ActionSet, ActionStore, ActionsWatcher, load_actions
from edge.annotate import AnnotatedWriter, draw, output_path
from edge.control import ControlHandler, ControlServer
from edge.decisions import Decisions, Event
from edge.embedder import Window, WindowEmbedder
from edge.publisher import SNDHWM, Publisher
from edge.scorer import Scorer
from edge.security import CurveServer
from edge.sources import Frame, Source, default_stream_name, parse_source
from edge.text import TextEncoder

log = logging.getLogger("cezsar.edge")

DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_CONTROL = "tcp://127.0.0.1:5557"


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


class Runtime:
    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        if not cfg.sources:
            raise CezsarError("give at least one --source")
        if cfg.hop < 1:
            raise CezsarError(f"--hop {cfg.hop}: must be >= 1")
        self.manifest = load_manifest(cfg.deploy)
        self.fps = float(cfg.fps or self.manifest.fps)
        if not self.fps > 0:
            raise CezsarError(f"--fps {cfg.fps}: must be > 0")
        self.window = self.manifest.window
        # sources first: a wrong --source fails before any model is loaded
        taken: set[str] = set()
        specs = []
        for i, text in enumerate(cfg.sources):
            spec = parse_source(text, default_stream_name(text, i, taken))
            if spec.name in taken:
                raise CezsarError(f"--source {text!r}: stream name {spec.name!r} is used twice")
            if spec.kind == "file" and not Path(spec.target).is_file():
                raise CezsarError(f"--source {text!r}: {spec.target}: video file not found")
            taken.add(spec.name)
            specs.append(spec)
        load_actions(cfg.actions)  # a bad actions file fails before any model is loaded
        self.curve: CurveServer | None = None
        if cfg.curve_secret or cfg.curve_clients:
            if not (cfg.curve_secret and cfg.curve_clients):
                raise CezsarError("CURVE needs both --curve-secret (server .key_secret) and --curve-clients (folder)")
            self.curve = CurveServer.load(cfg.curve_secret, cfg.curve_clients)
        self.errors: deque[str] = deque(maxlen=10)
        self.loaded = self._load_backend()
        self.text = TextEncoder(cfg.deploy, self.manifest, cfg.threads)
        self.scorer: Scorer | None = None
        self.store = ActionStore(cfg.actions, on_change=self._on_actions)
        self.store.load()
        self._scorer_in_use: Scorer | None = None
        self.notify = threading.Event()
        capacity = max(4, 2 * cfg.hop)
        self.sources = [Source(s, self.manifest.pre, self.fps, cfg.realtime, capacity, self.notify) for s in specs]
        self.embedder = WindowEmbedder(
            self.loaded.frame_encoder,
            self.loaded.temporal_head,
            self.window,
            cfg.hop,
            self.manifest.feature_dim,
            cache=cfg.cache,
            max_gap=cfg.max_gap,
        )
        self.decisions = Decisions(cfg.update_interval)
        self.events_log: IO[str] | None = None
        if cfg.events_log:
            Path(cfg.events_log).parent.mkdir(parents=True, exist_ok=True)
            self.events_log = open(cfg.events_log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self.auth: Any = None
        if self.curve is not None:
            import zmq

            self.auth = self.curve.start_authenticator(zmq.Context.instance())
        try:
            self.publisher = Publisher(cfg.pub, hwm=cfg.hwm, curve=self.curve)
        except CezsarError:
            self._stop_auth()
            raise
        self.control: ControlServer | None = None
        if cfg.control:
            try:
                self.control = ControlServer(cfg.control, ControlHandler(self.store, self.status), curve=self.curve)
            except CezsarError:
                self.publisher.close(0)
                self._stop_auth()
                raise
        self.watcher = ActionsWatcher(self.store)
        self.writers: dict[str, AnnotatedWriter] = {}
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.latency = _Latency()
        self.events_total = 0
        self.events_by_phase: dict[str, int] = {"start": 0, "update": 0, "end": 0}
        self.windows_by_stream: dict[str, int] = {}
        self.inference_errors = 0
        self._ended_streams: set[str] = set()
        self._reconnects: dict[str, int] = {}
        self._started = False
        self._closed = False
        self.stop_reason = "running"

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

    def _stop_auth(self) -> None:
        if self.auth is not None:
            try:
                self.auth.stop()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.debug("authenticator stop", exc_info=True)
            self.auth = None

    # -- actions ---------------------------------------------------------------------------
    def _on_actions(self, aset: ActionSet) -> None:
        """Runs in the watcher/control thread before a set becomes active: embed, then swap."""
        self.scorer = Scorer.build(aset, self.text)
        self.text.forget(aset.descriptions())

    def _sync_scorer(self) -> Scorer | None:
        new = self.scorer
        old = self._scorer_in_use
        if new is not old and new is not None:
            if old is not None:
                wall = time.time()
                for name in old.names:
                    a_old, a_new = old.aset.get(name), new.aset.get(name)
                    if a_new is None:
                        self._emit_events(self.decisions.end_action(name, "action_removed", wall))
                    elif a_old is not None and a_old.descriptions != a_new.descriptions:
                        self._emit_events(self.decisions.end_action(name, "action_changed", wall))
            self._scorer_in_use = new
        return self._scorer_in_use

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
        return lines

    def status(self, final: bool = False) -> dict[str, Any]:
        e = self.embedder
        streams = {}
        for s in self.sources:
            snap = s.snapshot()
            snap["windows"] = self.windows_by_stream.get(s.name, 0)
            streams[s.name] = snap
        aset = self.store.current
        return {
            "type": "status",
            "time": time.time(),
            "uptime": round(time.time() - self.started_at, 3),
            "final": final,
            "state": self.stop_reason,
            "backend": self.loaded.backend.describe(),
            "backend_reason": self.loaded.reason,
            "precision": self.loaded.backend.precision,
            "fps": self.fps,
            "window": self.window,
            "hop": self.cfg.hop,
            "cache": self.cfg.cache,
            "realtime": self.cfg.realtime,
            "streams": streams,
            "latency_ms": self.latency.summary(),
            "inference": {
                "frames_encoded": e.frames_encoded,
                "windows": e.windows_out,
                "encoder_ms_per_frame": round(1000 * e.encoder_seconds / max(1, e.frames_encoded), 3),
                "head_ms_per_window": round(1000 * e.head_seconds / max(1, e.windows_out), 3),
            },
            "actions": {
                "count": len(aset.actions),
                "names": aset.names(),
                "version": self.store.version,
                "error": self.store.error,
                "error_line": self.store.error_line,
            },
            "events": {"total": self.events_total, "open": len(self.decisions.active()), **self.events_by_phase},
            "publisher": {"sent": self.publisher.sent, "dropped": self.publisher.dropped, "hwm": self.cfg.hwm},
            "security": {"curve": self.curve is not None, "allowed_clients": self.curve.clients if self.curve else 0},
            "errors": list(self.errors),
            **self.cfg.extra_status,
        }

    def publish_status(self, final: bool = False) -> dict[str, Any]:
        st = self.status(final)
        self.publisher.publish(messages.TOPIC_STATUS, st)
        return st

    def stats_line(self) -> str:
        parts = []
        for s in self.sources:
            snap = s.snapshot()
            parts.append(
                f"{s.name} {snap['state']} in {snap['input_fps']:.1f} fps, sampled {snap['sampled']}, "
                f"dropped {snap['dropped']}, windows {self.windows_by_stream.get(s.name, 0)}"
            )
        lat = self.latency.summary()
        lat_s = f"latency p50 {lat['p50']} ms p95 {lat['p95']} ms" if lat["n"] else "latency -"
        err = f" | actions file: {self.store.error}" if self.store.error else ""
        return (
            f"stats | {' | '.join(parts)} | {lat_s} | events {self.events_total} "
            f"(open {len(self.decisions.active())}) | actions {len(self.store.current.actions)}{err}"
        )

    # -- publishing ------------------------------------------------------------------------
    def _emit_events(self, events: list[Event]) -> None:
        for ev in events:
            now = time.time()
            payload = {
                "type": "event",
                **ev.to_dict(),
                "time": now,
                "latency_ms": round(1000 * (now - ev.wall), 1) if ev.wall else None,
            }
            topic = messages.topic_for(messages.TOPIC_EVENT, ev.stream)
            self.publisher.publish(topic, payload)
            if self.events_log is not None:
                self.events_log.write(messages.to_json({"topic": topic, "schema": messages.SCHEMA, **payload}) + "\n")
            self.events_total += 1
            self.events_by_phase[ev.phase] = self.events_by_phase.get(ev.phase, 0) + 1
            level = logging.INFO if ev.phase != "update" else logging.DEBUG
            span = f"{ev.start:.2f}-{ev.end:.2f}" if ev.end is not None else f"{ev.start:.2f}-"
            log.log(
                level,
                "event %s %s %s [%s s] peak %.3f%s",
                ev.phase,
                ev.stream,
                ev.action,
                span,
                ev.peak,
                f" ({ev.reason})" if ev.reason else "",
            )

    def _handle_windows(self, windows: list[Window], scorer: Scorer) -> None:
        sc = scorer.score(np.stack([w.embedding for w in windows]))
        for i, w in enumerate(windows):
            self.windows_by_stream[w.stream] = self.windows_by_stream.get(w.stream, 0) + 1
            scores = {n: round(float(sc.scores[i, j]), 4) for j, n in enumerate(scorer.names)}
            events = self.decisions.step(w.stream, w.center, w.wall, scores, scorer.params)
            now = time.time()
            self.latency.add(1000 * (now - w.wall))
            if self.cfg.scores:
                payload = {
                    "type": "scores",
                    "stream": w.stream,
                    "window": {
                        "start": round(w.start, 3),
                        "end": round(w.end, 3),
                        "center": round(w.center, 3),
                        "frames": w.frames,
                        "first_index": w.first_index,
                        "last_index": w.last_index,
                    },
                    "scores": scores,
                    "smoothed": {a: round(v, 4) for a, v in self.decisions.smoothed(w.stream).items()},
                    "cosine": {n: round(float(sc.cosine[i, j]), 4) for j, n in enumerate(scorer.names)},
                    "background": None if sc.background is None else round(float(sc.background[i]), 4),
                    "time": now,
                    "latency_ms": round(1000 * (now - w.wall), 1),
                }
                self.publisher.publish(messages.topic_for(messages.TOPIC_SCORES, w.stream), payload)
            self._emit_events(events)

    def _annotate(self, frames: list[Frame]) -> None:
        if not self.cfg.output:
            return
        several = len(self.sources) > 1
        active = {(e.stream, e.action) for e in self.decisions.active()}
        for f in frames:
            w = self.writers.get(f.stream)
            if w is None:
                w = self.writers[f.stream] = AnnotatedWriter(
                    output_path(Path(self.cfg.output), f.stream, several), self.fps
                )
            sm = self.decisions.smoothed(f.stream)
            top = sorted(sm.items(), key=lambda kv: -kv[1])[:4]
            lines = [(f"{f.stream} t={f.t:.2f}s", False)]
            lines += [(f"{a}: {s:+.3f}", (f.stream, a) in active) for a, s in top]
            w.write(draw(f.image, lines))

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._started = True
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
        wall = time.time()
        for s in self.sources:
            rc = s.stats.reconnects
            if rc != self._reconnects.get(s.name, 0):
                self._reconnects[s.name] = rc
                self.embedder.reset(s.name)
                self._emit_events(self.decisions.end_stream(s.name, "stream_interrupted", wall))
                self.errors.append(f"{s.name}: {s.stats.error or 'reconnecting'}")
            if s.finished and s.name not in self._ended_streams:
                self._ended_streams.add(s.name)
                self._emit_events(self.decisions.end_stream(s.name, "stream_end", wall))
                if s.stats.state == "failed":
                    self.errors.append(f"{s.name}: {s.stats.error}")
                log.info("source %s %s%s", s.name, s.stats.state, f": {s.stats.error}" if s.stats.error else "")

    def _gather(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every running stream to have a frame queued (bigger batches
        across unsynchronised streams, at the cost of up to that much latency)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            waiting = [s for s in self.sources if s.stats.state == "running" and len(s.queue) == 0]
            if not waiting:
                return
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))

    def _process(self, frames: list[Frame], scorer: Scorer | None) -> None:
        """Frames -> windows -> scores/events/video. A failure here (e.g. the inference backend) is
        reported and these frames are skipped; the runtime goes on with the next ones."""
        try:
            windows = self.embedder.add(frames)
            if windows and scorer is not None:
                self._handle_windows(windows, scorer)
            self._annotate(frames)
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop every stream
            self.inference_errors += 1
            n = self.inference_errors
            msg = f"processing {len(frames)} frame(s) failed ({type(e).__name__}: {str(e)[:200]})"
            if n & (n - 1) == 0:
                log.exception("%s [%d so far]", msg, n)
            self.errors.append(msg)
            for name in {f.stream for f in frames}:
                self.embedder.reset(name)

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
                frames: list[Frame] = []
                for s in self.sources:
                    frames.extend(s.queue.drain())
                scorer = self._sync_scorer()
                if frames:
                    self._process(frames, scorer)
                self._check_streams()
                now = time.monotonic()
                if now >= next_status:
                    self.publish_status()
                    next_status = now + cfg.status_interval
                if now >= next_stats:
                    log.info("%s", self.stats_line())
                    next_stats = now + cfg.stats_interval
                if all(s.finished for s in self.sources):
                    self.stop_reason = "finished"
                    break
        finally:
            self.close()
        failed = [s.name for s in self.sources if s.stats.state == "failed"]
        return 1 if failed else 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.stop_reason == "running":
            self.stop_reason = "stopped"
        for s in self.sources:
            s.stop()
        self._emit_events(self.decisions.end_all("shutdown", time.time()))
        self.watcher.stop()
        if self.control:
            self.control.stop()
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        for s in self.sources:  # daemon threads: one stuck in a network read does not hold the exit
            s.join(max(0.0, deadline - time.monotonic()))
        for w in self.writers.values():
            w.close()
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
        if self.events_log is not None:
            self.events_log.close()
        self.publisher.close(500)  # up to 0.5 s to hand the final messages to connected subscribers
        self._stop_auth()
        self.loaded.close()
