"""The runtime: the shell around the Recognizer that owns the ExitStack and the main loop.

    reader thread per source (decode -> sample -> preprocess -> FrameQueue)      edge/runtime/streams.py
        -> main loop: drain every queue -> Recognizer.push (edge/recognizer.py: frame encoder once per
           frame, rings, temporal head per hop, scorer, decisions; no threads)
           -> Outputs (edge/runtime/outputs.py): messages -> sinks, media, annotated video, frame taps
    HTTP server thread: routers for health/metrics, sources, media, console    edge/runtime/server.py
    actions watcher thread (polls the actions file)   -> ActionStore -> Recognizer.set_actions
    control thread (REP socket)                        -> ActionStore, sources

Everything the runtime opens goes on one ExitStack the moment it is opened: when __init__ fails half
way, what was opened so far is closed; close() unwinds the same stack: sources stopped, threads
joined, open events ended and the final status published, then the media, the HTTP server, the sinks,
the CURVE authenticator and the models closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextlib import ExitStack
from typing import Any

from cezsar.deploy.manifest import load_manifest
from cezsar.redact import install_log_filter
from cezsar.video import parse_sources
from edge.actions import ActionStore, ActionsWatcher, load_actions
from edge.actions_check import DomainWatch, runtime_warnings
from edge.control import ControlHandler, ControlServer
from edge.runtime.host import RuntimeHost
from edge.runtime.models import load_models, warm_up
from edge.runtime.outputs import build_outputs
from edge.runtime.server import build_server
from edge.runtime.status import StatusReporter
from edge.runtime.streams import StreamManager
from edge.runtime.switches import Switches
from edge.runtime.zoneplan import ZonePlanner
from edge.security import CurveServer, stop_authenticator
from edge.settings import RuntimeSettings
from edge.sinks import Sink
from edge.sources import Frame
from edge.zones import Zone

log = logging.getLogger("cezsar.edge")


def _zones(settings: RuntimeSettings) -> dict[str, dict[str, Zone]]:
    return {s.name: {z.name: z for z in s.zones} for s in settings.sources if s.zones}  # the settings' zones are Zones


class Runtime:
    def __init__(self, settings: RuntimeSettings) -> None:
        s = self.settings = settings.require()
        assert s.deploy is not None and s.actions is not None
        s.register_secrets()
        install_log_filter()
        specs = parse_sources(s.source_specs())  # what can be checked without a model fails first, in one line
        self.manifest = load_manifest(s.deploy)
        self.fps = float(s.sampling.fps or self.manifest.fps)
        self.window = self.manifest.window
        load_actions(s.actions)
        zmq = s.outputs.zmq
        self.curve = CurveServer.from_settings(zmq)
        self.errors: deque[str] = deque(maxlen=10)
        self.stop_event, self.notify = threading.Event(), threading.Event()
        self.inference_errors = 0
        self._opened = self._started = self._closed = False
        self._catalog_key: tuple[int, int] = (-1, -1)
        self.zones = ZonePlanner(_zones(s), self.manifest.pre, self._report)
        with ExitStack() as stack:  # unwound here if anything below fails, else by close()
            self.loaded, self.text, self.recognizer = load_models(s, self.manifest, self.errors, stack)
            trained_on = self.manifest.extra.get("trained_on")
            say = lambda m: log.warning("actions: %s", m)  # noqa: E731
            self.store = ActionStore(s.actions, on_change=DomainWatch(trained_on, say, self.recognizer.set_actions))
            self.store.load()
            zone_names = {sp.name: sorted(self.zones.zones.get(sp.name, {})) for sp in specs}
            for w in runtime_warnings(self.store.current, zone_names):
                log.warning("actions file %s: %s", s.actions, w)
            if self.curve is not None:
                stack.callback(stop_authenticator, self.curve.start_authenticator())
            self.streams = StreamManager.from_settings(specs, s, self.manifest.pre, self.fps, self.notify)
            self.switches = Switches(self.streams, self.store, self.notify)
            self.outputs = build_outputs(s, self.manifest, self.fps, self.curve, stack, self.switches)
            self.streams.running = lambda: self._started and not self._closed and not self.stop_event.is_set()
            self.outputs.meta.clock = self.streams.clock
            self.outputs.meta.actions_version = lambda: self.store.version
            self.outputs.meta.actions = lambda: getattr(self.recognizer.scorer, "aset", None)
            parts = (self.loaded, self.recognizer, self.store, self.streams, self.outputs, self.curve, self.errors)
            self.reporter = StatusReporter(s, self.manifest, self.fps, *parts)
            host_parts = (self.store, self.streams, self.text, self.recognizer, self.reporter, self.zones)
            self.host = RuntimeHost(*host_parts, self._added, self._removed, history=self._history())
            self.server = build_server(s, self.host, self.outputs, stack)
            if self.server is not None:
                self.server.feed.start(self.loaded, self.manifest.model_hash, self.outputs)
            stack.callback(self._finish)  # before the sinks close: end open events, final status
            self.watcher = ActionsWatcher(self.store)
            stack.callback(self.watcher.stop)
            self.control: ControlServer | None = None
            if zmq.control:
                handler = ControlHandler(self.store, self.host.status, sources=self.host)
                self.control = ControlServer(zmq.control, handler, curve=self.curve)
                self.reporter.control_endpoint = self.control.endpoint
                stack.callback(self.control.stop)
            stack.callback(self._stop_sources)  # first thing close() does
            self._resources = stack.pop_all()
        self._opened = True

    def _history(self) -> Any:
        """The history for the routes (edge/history/service.py), when the outputs keep one."""
        if self.outputs.history is None:
            return None
        from edge.history.service import LiveHistory

        return LiveHistory(
            self.outputs.history,
            self.text.encode,
            self.text.forget,
            lambda: self.store.current,
            self.recognizer.calibration,
        )

    # -- parts other code may hold ------------------------------------------------------------------
    @property
    def publisher(self) -> Any:
        return self.outputs.publisher

    @property
    def http(self) -> Any:
        return None if self.server is None else self.server.http

    @property
    def metrics(self) -> Any:
        """The Prometheus metrics (edge.http.Metrics) when the HTTP server is on, else None."""
        return self.outputs.metrics

    @property
    def stop_reason(self) -> str:
        return self.reporter.state

    def warm_up(self, batches: tuple[int, ...] = (1, 2, 4)) -> None:
        """Run both networks once per batch size on zeros, so the first frames meet warm kernels."""
        warm_up(self.loaded, self.manifest, batches)

    def add_sink(self, sink: Sink) -> None:
        """One more output for every message (edge/sinks), from the next message on."""
        self.outputs.add_sink(sink)

    # -- what the runtime says --------------------------------------------------------------------------
    def summary(self) -> list[str]:
        return self.reporter.summary()

    def ready(self) -> tuple[bool, list[str]]:
        return self.reporter.ready()

    def status(self, final: bool = False) -> dict[str, Any]:
        return self.reporter.message(final).payload

    def publish_status(self, final: bool = False) -> dict[str, Any]:
        return self.outputs.send(self.reporter.message(final)).payload

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        self.errors.append(message)

    # -- sources added and removed while running (through self.host) -------------------------------
    def _added(self, name: str) -> None:
        self.zones.invalidate()

    def _removed(self, name: str) -> None:
        self._end_stream(name, "source_removed")

    def _end_stream(self, stream: str, reason: str) -> None:
        for name in self.zones.names(stream):
            self.outputs.events(self.recognizer.end_stream(name, reason))

    # -- the main loop ------------------------------------------------------------------------------
    def _process(self, frames: list[Frame]) -> None:
        """Frames -> Recognizer -> messages / video. A failure here (e.g. the inference backend) is
        reported and these frames are skipped; the runtime goes on with the next ones."""
        self.outputs.frames(frames)
        live = self.switches.frames(frames)  # a paused stream's frames feed the taps, not the Recognizer
        try:
            plan = self.zones.plan(self.store.version, self.store.current, self.streams.names)
            self.outputs.step(self.recognizer.push(live + self.zones.frames(live, plan)))
            if self.server is not None:
                self.server.feed.encoded(live)
            self.outputs.annotate(frames, self.recognizer)
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop every stream
            self.inference_errors += 1
            n = self.inference_errors
            msg = f"processing {len(frames)} frame(s) failed ({type(e).__name__}: {str(e)[:200]})"
            if n & (n - 1) == 0:
                log.exception("%s [%d so far]", msg, n)
            self.errors.append(msg)
            for stream in {f.stream for f in frames}:
                for name in self.zones.names(stream):
                    self.recognizer.reset(name)

    def _end_action(self, action: str, reason: str) -> None:
        self.outputs.events(self.recognizer.decisions.end_action(action, reason, time.time()))

    def _tick(self) -> None:
        """What the loop does besides frames: stream changes, switches, discovery, media, metrics."""
        self.streams.check(self._end_stream, self.errors.append)
        self.switches.apply(self._end_stream, self._end_action)
        key = (self.store.version, self.streams.version)
        if key != self._catalog_key:
            self._catalog_key = key
            names = self.streams.names
            self.outputs.catalog(names, self.zones.catalog(self.store.current, names))
        self.outputs.media_written()
        if self.server is not None:
            self.server.feed.count(self.streams, len(self.store.current.actions))

    def start(self) -> None:
        """Start the HTTP server (its port is known from here on), the sources and the threads."""
        if self._started:
            return
        self._started = True
        if self.server is not None:
            self.server.start(self.outputs)
            self.reporter.http_url = self.server.http.url
        self.reporter.started_at = time.time()
        self.streams.start()
        self.watcher.start()
        if self.control:
            self.control.start()

    def stop(self, reason: str = "stopped") -> None:
        if self.reporter.state == "running":
            self.reporter.state = reason
        self.stop_event.set()
        self.notify.set()

    def run(self) -> int:
        """Run until every source is finished, ``duration`` passed or stop(); returns the exit code."""
        self.start()
        run = self.settings.run
        next_status, next_stats = time.monotonic(), time.monotonic() + run.stats_interval
        deadline = None if run.duration is None else time.monotonic() + run.duration
        try:
            while not self.stop_event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    self.reporter.state = "duration"
                    break
                self.reporter.loop_seen = time.time()
                self.notify.wait(0.1)
                if self.settings.sampling.batch_wait > 0:
                    self.streams.gather(self.settings.sampling.batch_wait)
                self.notify.clear()
                self.streams.apply_pending()
                frames = self.streams.drain()
                self.outputs.events(self.recognizer.sync())  # an edited action set, also while no frames come
                if frames:
                    self._process(frames)
                self._tick()
                now = time.monotonic()
                if now >= next_status:
                    self.publish_status()
                    next_status = now + run.status_interval
                if now >= next_stats:
                    log.info("%s", self.reporter.stats_line())
                    next_stats = now + run.stats_interval
                if self.streams.all_finished():
                    self.reporter.state = "finished"
                    break
        finally:
            self.close()
        return 1 if self.streams.failed() else 0

    def _stop_sources(self) -> None:
        if self.reporter.state == "running":
            self.reporter.state = "stopped"
        self.streams.stop()

    def _finish(self) -> None:
        """On the way out (threads stopped, sinks still open): end open events, publish the final status."""
        if not self._opened:  # __init__ failed: nothing ran, nothing to report
            return
        self.outputs.events(self.recognizer.end_all("shutdown"))
        self.outputs.media_written(final=True)
        if self.server is not None:
            self.server.feed.count(self.streams, len(self.store.current.actions))
        final = self.publish_status(final=True)
        log.info("%s", self.reporter.stats_line())
        p50 = final["latency_ms"]["p50"]
        windows, events = final["inference"]["windows"], self.outputs.events_started
        log.info(
            "stopped (%s): %d windows, %d events, latency p50 %s",
            self.stop_reason,
            windows,
            events,
            "-" if p50 is None else f"{p50} ms",
        )

    def close(self) -> None:
        """Stop everything (see the module docstring); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.reporter.closed = True
        self._resources.close()
