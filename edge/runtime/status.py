"""What the runtime says about itself: the start summary, the status message, the stats log line and
readiness (/readyz). Read-only: it looks at the runtime's parts and changes nothing."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from cezsar.deploy.manifest import Manifest
from edge import messages
from edge.actions import ActionStore
from edge.health import stream_health
from edge.recognizer import Recognizer
from edge.runtime.outputs import Outputs
from edge.runtime.streams import StreamManager
from edge.settings import RuntimeSettings

LOOP_STALL = 30.0  # seconds without a main-loop round before the process counts as not ready


@dataclass
class StatusReporter:
    settings: RuntimeSettings
    manifest: Manifest
    fps: float
    loaded: Any  # cezsar.backends.registry.Loaded
    recognizer: Recognizer
    store: ActionStore
    streams: StreamManager
    outputs: Outputs
    curve: Any  # edge.security.CurveServer | None
    errors: deque[str]
    started_at: float = 0.0
    state: str = "running"  # running, then why it stopped: finished, duration, stopped, SIGTERM ...
    closed: bool = False
    http_url: str | None = None
    control_endpoint: str | None = None
    loop_seen: float = 0.0  # when the main loop last went round (Unix time)

    def summary(self) -> list[str]:
        s, m = self.settings, self.manifest
        aset = self.store.current
        hop = s.sampling.hop
        lines = [
            f"deploy: {s.deploy} (model {m.model_hash[:12]}, window T={m.window} at {m.fps:g} fps, {m.pre.size}px)",
            f"backend: {self.loaded.backend.describe()} - {self.loaded.reason}",
            *(f"  skipped {x}" for x in self.loaded.skipped),
            f"sampling: {self.fps:g} fps, window {m.window} frames ({m.window / self.fps:.2f} s), hop "
            f"{hop} ({hop / self.fps:.2f} s), feature cache {'on' if s.sampling.cache else 'off'}, "
            f"{'real time' if s.sampling.realtime else 'every frame (--no-realtime)'}",
            *(f"source {src.spec.describe()}" for src in self.streams.sources),
            f"actions: {s.actions}: {len(aset.actions)} ({', '.join(aset.names()) or 'none'}); "
            f"background: {len(aset.background)} description(s)",
            f"publish: {self.outputs.publisher.endpoint}"
            + (f", control: {self.control_endpoint}" if self.control_endpoint else ""),
        ]
        out = s.outputs
        if out.events_log:
            lines.append(f"events log: {out.events_log}")
        if out.video:
            lines.append(f"annotated video: {out.video}")
        mqtt = self.outputs.sink("mqtt")
        if mqtt is not None:
            lines.append(f"mqtt: {mqtt.host}:{mqtt.port} prefix {mqtt.prefix}")
        webhook = self.outputs.sink("webhook")
        if webhook is not None:
            lines.append(f"webhook: {webhook.shown}")
        if self.http_url is not None:
            lines.append(f"http: {self.http_url} (/console/ /healthz /readyz /metrics /sources)")
        if self.outputs.media is not None:
            lines.append(f"media: {self.outputs.media.dir} (pre-roll {self.outputs.media.pre_roll:g} s)")
        return lines

    def message(self, final: bool) -> messages.Message:
        rec, e, aset, s = self.recognizer, self.recognizer.embedder, self.store.current, self.settings
        streams, now = {}, time.time()
        for src in self.streams.sources:
            snap = src.snapshot()
            snap["windows"] = rec.windows_by_stream.get(src.name, 0)
            snap["health"] = stream_health(snap, now)
            streams[src.name] = snap
        outputs = self.outputs.status()
        if self.http_url is not None:
            outputs["http"] = {"url": self.http_url}
        o = self.outputs
        return messages.status(
            now=time.time(),
            started_at=self.started_at,
            final=final,
            state=self.state,
            backend=self.loaded.backend.describe(),
            backend_reason=self.loaded.reason,
            precision=self.loaded.backend.precision,
            fps=self.fps,
            window=self.manifest.window,
            hop=s.sampling.hop,
            cache=s.sampling.cache,
            realtime=s.sampling.realtime,
            streams=streams,
            latency=o.latency.summary(),
            inference=messages.inference(e.frames_encoded, e.windows_out, e.encoder_seconds, e.head_seconds),
            actions=messages.actions_state(aset.names(), self.store.version, self.store.error, self.store.error_line),
            events={
                "total": o.events_started,
                "messages": o.event_messages,
                "open": len(rec.active()),
                **o.events_by_phase,
            },
            publisher=o.publisher.stats(),
            outputs=outputs,
            security={"curve": self.curve is not None, "allowed_clients": self.curve.clients if self.curve else 0},
            errors=list(self.errors),
        )

    def stats_line(self) -> str:
        parts = []
        for src in self.streams.sources:
            snap = src.snapshot()
            parts.append(
                f"{src.name} {snap['state']} in {snap['input_fps']:.1f} fps, sampled {snap['sampled']}, "
                f"dropped {snap['dropped']}, windows {self.recognizer.windows_by_stream.get(src.name, 0)}"
            )
        lat = self.outputs.latency.summary()
        lat_s = f"latency p50 {lat['p50']} ms p95 {lat['p95']} ms" if lat["n"] else "latency -"
        err = f" | actions file: {self.store.error}" if self.store.error else ""
        return (
            f"stats | {' | '.join(parts)} | {lat_s} | events {self.outputs.events_started} "
            f"(open {len(self.recognizer.active())}, {self.outputs.event_messages} event messages) | "
            f"actions {len(self.store.current.actions)}{err}"
        )

    def ready(self) -> tuple[bool, list[str]]:
        """/readyz: this process can do its job: the models are loaded (they are, once the runtime
        exists), it has started and its main loop is running. A camera that is down does not make the
        process unready (restarting the container would not bring the camera back): per-stream health is
        :meth:`streams_health` (/health/streams)."""
        reasons = []
        if self.closed:
            reasons.append("runtime stopped")
        elif not self.started_at:
            reasons.append("runtime not started yet")
        elif self.loop_seen and time.time() - self.loop_seen > LOOP_STALL:
            reasons.append(f"main loop has not run for {time.time() - self.loop_seen:.0f} s")
        return not reasons, reasons

    def streams_health(self) -> dict[str, dict[str, Any]]:
        """Every stream's health (edge/health.py), by name."""
        now = time.time()
        return {src.name: stream_health(src.snapshot(), now) for src in list(self.streams.sources)}
