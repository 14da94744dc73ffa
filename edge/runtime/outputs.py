"""Where the runtime's results go: :func:`build_outputs` is the one place that knows the outputs.

    build_outputs(settings, ctx, stack) -> Outputs
        sinks: every registered sink whose settings section is set (edge/sinks: ZeroMQ PUB, events log,
               MQTT, webhook ...), each built from its own section
        media: a snapshot and a clip per event (edge/media.py), when outputs.media is set
        video: the annotated video (edge/annotate.py), when outputs.video is set
        taps:  callables that see every frame (the media ring, the web console's live view)
        history: every window (embedding, scores) and event into the history store (edge/history),
               through the writer's bounded queue, when the settings have a history section

:class:`Outputs` turns the Recognizer's steps into messages (edge/messages.py, the one builder),
stamps them (sequence numbers, instance) and hands them to every sink; it counts events by phase and
measures capture -> publish latency.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.deploy.manifest import Manifest
from edge import messages
from edge.annotate import Annotator
from edge.decisions import Event
from edge.media import MediaRecorder, MediaResult
from edge.recognizer import Recognizer, Step
from edge.runtime.switches import Switches
from edge.settings import RuntimeSettings
from edge.sinks import Sink, SinkContext, Sinks, sink_types
from edge.sinks.zmq import Publisher
from edge.zones import split_stream

log = logging.getLogger("cezsar.edge")

MEDIA_FLUSH_S = 10.0  # how long the end of a run waits for the snapshots and clips of the last events
FrameTap = Callable[[str, float, np.ndarray], None]


class Latency:
    """Capture -> publish latency of the last 2000 windows, in ms."""

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


@dataclass
class EventMeta:
    """What an event message says beyond the event: its stream's clock, the action set, the model."""

    clock: Callable[[str], str]
    actions_version: Callable[[], int]
    model: str
    actions: Callable[[], Any] = lambda: None  # the ActionSet that scored the current step (the history's)


class Outputs:
    def __init__(self, sinks: Sinks, publisher: Publisher, meta: EventMeta, sequencer: messages.Sequencer) -> None:
        self.sinks, self.publisher, self.meta, self.sequencer = sinks, publisher, meta, sequencer
        self.media: MediaRecorder | None = None
        self.video: Annotator | None = None
        self.taps: list[FrameTap] = []  # (stream, t, bgr) per frame from the main loop; must be cheap
        self.scores = True
        self.latency = Latency()
        self.metrics: Any = None  # edge.http.Metrics, when the HTTP server is on
        self.event_messages = 0  # every start, update and end message
        self.events_by_phase: dict[str, int] = {"start": 0, "update": 0, "end": 0}
        self.tap_errors = 0
        self.switches: Switches | None = None  # streams and actions switched off (MQTT commands)
        self.history: Any = None  # edge.history.writer.HistoryWriter, when the history is on
        self._media_done: deque[MediaResult] = deque()  # written by the media thread, published by the main loop

    def add_sink(self, sink: Sink) -> None:
        """One more output for every message, from the next message on; closed after the final status."""
        self.sinks.add(sink)

    def sink(self, name: str) -> Any:
        """The sink called ``name`` (``mqtt``, ``webhook`` ...), or None."""
        return next((s for s in self.sinks.sinks if getattr(s, "name", None) == name), None)

    def send(self, msg: messages.Message) -> messages.Message:
        """Stamp (seq, topic_seq, host, instance) and hand to every sink; returns the stamped message."""
        stamped = self.sequencer.stamp(msg)
        self.sinks.publish(*stamped)
        return stamped

    def frames(self, frames: Iterable[Any]) -> None:
        """Every frame to the media ring and the frame taps (cheap: references, no copies)."""
        for f in frames:
            if self.media is not None:
                self.media.add_frame(f.stream, f.t, f.image)
            for tap in list(self.taps):
                try:
                    tap(f.stream, f.t, f.image)
                except Exception as e:  # noqa: BLE001 - a broken tap must not stop recognition
                    self.tap_errors += 1
                    if self.tap_errors & (self.tap_errors - 1) == 0:
                        log.warning(
                            "frame tap %r failed (%s: %s) [%d so far]", tap, type(e).__name__, e, self.tap_errors
                        )

    def step(self, step: Step) -> None:
        """A Recognizer step -> its ended events, then per window its scores and events."""
        self.events(step.ended)
        aset = self.meta.actions() if self.history is not None and step.windows else None
        for r in step.windows:
            if self.history is not None:
                self.history.window(r, aset, self.meta.clock(split_stream(r.window.stream)[0]))
            now = time.time()
            stream = split_stream(r.window.stream)[0]
            self.latency.add(1000 * (now - r.window.wall))
            if self.metrics is not None:
                self.metrics.window_latency(now - r.window.wall, stream)
            if self.scores:
                shown = r if self.switches is None else self.switches.window(r)
                self.send(messages.scores(shown, now, clock=self.meta.clock(stream)))
            self.events(r.events)

    def events(self, events: Iterable[Event]) -> None:
        if self.switches is not None:
            events = self.switches.events(events)
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
            version, model = self.meta.actions_version(), self.meta.model
            self.send(
                messages.event(
                    ev, time.time(), media=media, clock=self.meta.clock(stream), actions_version=version, model=model
                )
            )
            self.event_messages += 1
            self.events_by_phase[ev.phase] = self.events_by_phase.get(ev.phase, 0) + 1
            level = logging.INFO if ev.phase != "update" else logging.DEBUG
            span = f"{ev.start:.2f}-{ev.end:.2f}" if ev.end is not None else f"{ev.start:.2f}-"
            reason = f" ({ev.reason})" if ev.reason else ""
            log.log(level, "event %s %s %s [%s s] peak %.3f%s", ev.phase, ev.stream, ev.action, span, ev.peak, reason)

    def annotate(self, frames: list[Any], recognizer: Recognizer) -> None:
        if self.video is not None:
            active = {(e.stream, e.action) for e in recognizer.active()}
            self.video.write(frames, active, recognizer.smoothed)

    def media_written(self, final: bool = False) -> None:
        """The media of ended events that the writer finished: one ``media.<stream>`` message each
        (``final``: first wait for the writer, up to MEDIA_FLUSH_S)."""
        if self.media is None:
            return
        if final and not self.media.flush(MEDIA_FLUSH_S):
            log.warning("media: writer still busy after %g s; the last clips may be missing", MEDIA_FLUSH_S)
        while self._media_done:
            res = self._media_done.popleft()
            self.send(messages.media(res.event_id, res.stream, res.as_message(), res.written, res.error))

    def catalog(self, streams: Iterable[str], pairs: Mapping[str, list[str]]) -> None:
        self.sinks.set_catalog(streams, pairs)

    @property
    def events_started(self) -> int:
        """Events, not messages: each has one start, some updates and one end."""
        return self.events_by_phase["start"]

    def status(self) -> dict[str, Any]:
        """The status's ``outputs``: every sink's counters but the PUB socket's (``publisher``), media."""
        out = {k: v for k, v in self.sinks.stats().items() if k != self.publisher.name}
        if self.media is not None:
            out["media"] = self.media.stats()
        return out


def build_outputs(
    settings: RuntimeSettings,
    manifest: Manifest,
    fps: float,
    curve: Any,
    stack: ExitStack,
    switches: Switches | None = None,
) -> Outputs:
    """Every output the settings ask for, each closed by ``stack`` (sinks after the final status);
    ``switches``: the runtime's side for the sinks (edge.host.SinkHost), which also filters what is
    published of paused streams and disabled actions."""
    out = settings.outputs
    ctx = SinkContext(
        scores=out.scores,
        curve=curve,
        host=switches,
        media_dir=None if out.media is None else out.media.dir,
        public_url=None if out.http is None else out.http.public_url,
    )
    sinks = Sinks()
    stack.callback(sinks.close)
    types = sink_types()
    publisher = types["zmq"].from_settings(out.zmq, ctx)
    sinks.add(publisher)
    for key, cls in types.items():
        section = getattr(out, key, None) if key != "zmq" else None
        if section is not None:
            sinks.add(cls.from_settings(section, ctx))
    meta = EventMeta(clock=lambda s: "media", actions_version=lambda: 0, model=manifest.model_hash)
    outputs = Outputs(sinks, publisher, meta, messages.Sequencer(settings.run.instance))
    outputs.scores = out.scores
    outputs.switches = switches
    if out.media is not None:
        outputs.media = MediaRecorder(
            out.media,
            start_delay=max(5.0, 2 * manifest.window / fps),
            base_url=None,  # the HTTP server's /media URL, set once it listens
            on_written=outputs._media_done.append,
        )
        stack.callback(outputs.media.close)
    if out.video is not None:
        outputs.video = Annotator(Path(out.video), fps, len(settings.sources) > 1)
        stack.callback(outputs.video.close)
    if settings.history is not None:
        outputs.history = _history(settings, manifest)
        sinks.add(outputs.history)  # event and media messages; closed with the sinks, after the final status
        outputs.taps.append(outputs.history.tap)
    return outputs


def _history(settings: RuntimeSettings, manifest: Manifest) -> Any:
    from edge.history.url import history_url
    from edge.history.writer import HistoryWriter

    h = settings.history
    assert h is not None
    media = settings.outputs.media
    where = history_url(h.location(media.dir if media is not None else None), h.secret())
    return HistoryWriter.from_settings(h, where, manifest.model_hash, manifest.joint_dim).start()
