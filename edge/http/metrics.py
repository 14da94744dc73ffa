"""The runtime's Prometheus metrics (:class:`Metrics`), served by the health router (edge/http/health.py).

:class:`Metrics` is what the runtime calls; every method is thread-safe and cheap (a counter
increment), so reader threads and the main loop may call it directly. It has its own
``CollectorRegistry``, never prometheus_client's global one, so that several runtimes or tests in one
process do not clash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cezsar import extras
from cezsar.errors import CezsarError

extras.requires("prometheus_client", extra="http")  # imported where metrics are made

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SinkStats = Callable[[], Mapping[str, Any]]
StreamsHealth = Callable[[], Mapping[str, Mapping[str, Any]]]


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ModuleNotFoundError:
        raise CezsarError("HTTP metrics need prometheus-client: pip install 'cezsar[http]'") from None
    return prometheus_client


class Metrics:
    """The runtime's Prometheus metrics, in their own registry (``registry``).

    ============================================  ======================================================
    metric                                        what
    ============================================  ======================================================
    ``cezsar_frames_in_total{stream}``            frames decoded (:meth:`frame_in`)
    ``cezsar_frames_dropped_total{stream}``       frames dropped before inference (:meth:`frame_dropped`)
    ``cezsar_frames_encoded_total{stream}``       frames through the frame encoder (:meth:`frame_encoded`)
    ``cezsar_window_latency_seconds{stream}``     histogram, capture -> publish per window
                                                  (:meth:`window_latency`); ``_count`` = windows
    ``cezsar_events_total{stream,action}``        events started (:meth:`event`)
    ``cezsar_sink_messages_total{sink,outcome}``  per output: ``sent``, ``dropped``, ``unsent``, read
                                                  from the sink at each scrape (:meth:`watch_sink`)
    ``cezsar_sink_connected{sink}``               1/0 for sinks that report ``connected``
    ``cezsar_stream_up{stream}``                  1 while the stream is live, else 0 (edge/health.py),
                                                  from start, read at each scrape (:meth:`watch_streams`)
    ``cezsar_stream_state{stream,state}``         1 for the stream's health state, 0 for the others
    ``cezsar_stream_last_frame_age_seconds``      seconds since the stream's last frame (none yet: absent)
    ``cezsar_stream_reconnects_total{stream}``    reconnects of the stream
    ``cezsar_actions``                            active actions (:meth:`set_actions`)
    ``cezsar_runtime_info{backend,precision,..}``  always 1; the labels say what runs (:meth:`set_info`)
    ``process_*``                                 CPU, memory, open files of this process (Linux)
    ============================================  ======================================================
    """

    def __init__(self, registry: Any = None, process: bool = True) -> None:
        pc = _prometheus()
        self.registry = registry if registry is not None else pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self._frames_in = pc.Counter("cezsar_frames_in", "Frames decoded per stream.", ["stream"], registry=r)
        self._frames_dropped = pc.Counter(
            "cezsar_frames_dropped", "Frames dropped before inference per stream.", ["stream"], registry=r
        )
        self._frames_encoded = pc.Counter(
            "cezsar_frames_encoded", "Frames through the frame encoder per stream.", ["stream"], registry=r
        )
        self._latency = pc.Histogram(
            "cezsar_window_latency_seconds",
            "Capture to publish latency of each scored window.",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._events = pc.Counter(
            "cezsar_events", "Events started per stream and action.", ["stream", "action"], registry=r
        )
        self._actions = pc.Gauge("cezsar_actions", "Active actions.", registry=r)
        self._info = pc.Info("cezsar_runtime", "What the runtime runs (labels).", registry=r)
        self._sinks: dict[str, SinkStats] = {}
        self._sinks_lock = threading.Lock()
        self._streams: StreamsHealth | None = None
        r.register(_SinkCollector(self))
        r.register(_StreamCollector(self))
        if process:
            pc.ProcessCollector(registry=r)

    def add_stream(self, stream: str) -> None:
        """A stream's per-stream series exist from now on (at 0), before its first frame."""
        for c in (self._frames_in, self._frames_dropped, self._frames_encoded):
            c.labels(stream)

    def watch_streams(self, health: StreamsHealth) -> None:
        """Export every stream's health at each scrape: ``health()`` -> name -> edge.health.stream_health."""
        self._streams = health

    def frame_in(self, stream: str, n: int = 1) -> None:
        self._frames_in.labels(stream).inc(n)

    def frame_dropped(self, stream: str, n: int = 1) -> None:
        self._frames_dropped.labels(stream).inc(n)

    def frame_encoded(self, stream: str, n: int = 1) -> None:
        self._frames_encoded.labels(stream).inc(n)

    def window_latency(self, seconds: float, stream: str = "") -> None:
        self._latency.labels(stream).observe(max(0.0, float(seconds)))

    def event(self, stream: str, action: str) -> None:
        """One event started (call on ``phase == "start"``)."""
        self._events.labels(stream, action).inc()

    def set_actions(self, count: int) -> None:
        self._actions.set(count)

    def set_info(self, backend: str, precision: str, **labels: str) -> None:
        """E.g. ``set_info("onnxruntime-cpu", "fp32", version="0.1.0")``; replaces earlier labels."""
        self._info.info(
            {"backend": str(backend), "precision": str(precision), **{k: str(v) for k, v in labels.items()}}
        )

    def watch_sink(self, name: str, stats: SinkStats) -> None:
        """Export an output's own cumulative counters at each scrape. ``stats()`` returns a mapping with
        any of ``sent``, ``dropped``, ``unsent`` (monotonic counts) and ``connected`` (bool); e.g.
        ``metrics.watch_sink("mqtt", sink.stats)`` or ``watch_sink("zmq", lambda: {"sent": p.sent, ...})``."""
        with self._sinks_lock:
            self._sinks[name] = stats

    def unwatch_sink(self, name: str) -> None:
        with self._sinks_lock:
            self._sinks.pop(name, None)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        pc = _prometheus()
        return pc.generate_latest(self.registry), pc.CONTENT_TYPE_LATEST


class _SinkCollector:
    """Reads every watched sink's counters at scrape time (so the counts are the sinks' own)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        messages = CounterMetricFamily(
            "cezsar_sink_messages",
            "Messages per output: sent, dropped (queue full), unsent (peer down).",
            labels=["sink", "outcome"],
        )
        connected = GaugeMetricFamily("cezsar_sink_connected", "1 while the output is connected.", labels=["sink"])
        with self.metrics._sinks_lock:
            sinks = list(self.metrics._sinks.items())
        for name, stats in sinks:
            try:
                s = stats()
            except Exception as e:  # a broken sink must not break the scrape
                log.debug("metrics: sink %s stats failed: %s", name, e)
                continue
            for outcome in ("sent", "dropped", "unsent"):
                if isinstance(s.get(outcome), int | float):
                    messages.add_metric([name, outcome], float(s[outcome]))
            if isinstance(s.get("connected"), bool):
                connected.add_metric([name], 1.0 if s["connected"] else 0.0)
        yield messages
        yield connected


class _StreamCollector:
    """Every stream's health at scrape time (so a camera that never connected has its series, at 0)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from edge.health import STATES, UP

        up = GaugeMetricFamily("cezsar_stream_up", "1 while the stream is live (frames arriving).", labels=["stream"])
        state = GaugeMetricFamily("cezsar_stream_state", "1 for the stream's health state.", labels=["stream", "state"])
        age = GaugeMetricFamily(
            "cezsar_stream_last_frame_age_seconds", "Seconds since the stream's last frame.", labels=["stream"]
        )
        reconnects = CounterMetricFamily("cezsar_stream_reconnects", "Reconnects of the stream.", labels=["stream"])
        fn = self.metrics._streams
        try:
            health = dict(fn()) if fn is not None else {}
        except Exception as e:  # a failing read must not break the scrape
            log.debug("metrics: stream health failed: %s", e)
            health = {}
        for name, h in health.items():
            up.add_metric([name], 1.0 if h["state"] == UP else 0.0)
            for s in STATES:
                state.add_metric([name, s], 1.0 if h["state"] == s else 0.0)
            if h.get("last_frame_age") is not None:
                age.add_metric([name], float(h["last_frame_age"]))
            reconnects.add_metric([name], float(h.get("reconnects", 0)))
        yield from (up, state, age, reconnects)
