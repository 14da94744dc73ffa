"""Window scores -> events, per stream and action.

Each (stream, action) has a small state machine driven by the window scores in capture time
(a window's time is its centre):

- the score is smoothed with an EMA: ``s = a * score + (1 - a) * s_prev`` (``a`` = smoothing);
- hysteresis: "on" when ``s >= threshold``, "off" when ``s < threshold - hysteresis``;
- idle -> pending when on (and the cooldown is over); pending -> active when it stayed on for
  ``min_duration`` seconds: a ``start`` event is emitted, its span starting at the first on window;
  pending -> idle when off before that (nothing is emitted);
- active: ``update`` events at most every ``update_interval`` seconds (peak, current score);
  active -> cooldown when off: an ``end`` event with the span up to the last window that was on;
- cooldown -> idle after ``cooldown`` seconds of capture time.

Events that are open when a stream ends, an action is removed or the runtime stops are ended
with a reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Params:
    """How one action's scores become events, and, as ``Params()``, THE defaults: the actions file's
    ``defaults:`` start from these, an action without its own values takes them, and the demo uses
    them. The only place the default thresholds are written (docs/edge.md shows them)."""

    threshold: float = 0.05  # an event starts when the smoothed score reaches this
    hysteresis: float = 0.03  # ... and ends when it falls below threshold - hysteresis
    min_duration: float = 1.0  # seconds the score must stay on before the event starts
    cooldown: float = 2.0  # seconds after an end before the same action can start again
    smoothing: float = 0.5  # EMA weight of the newest window score, (0, 1]

    @property
    def off(self) -> float:
        return self.threshold - self.hysteresis

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PARAM_KEYS}


PARAM_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Params))


@dataclass
class Event:
    id: str
    stream: str
    action: str
    phase: str  # "start" | "update" | "end"
    start: float  # capture time
    end: float | None  # "end" only: capture time of the last window that was on
    score: float  # current smoothed score
    peak: float
    peak_time: float
    windows: int  # windows that were on so far
    reason: str | None = None  # for "end": "score" | "stream_end" | "action_removed" | "action_changed" | "shutdown"
    wall: float = 0.0  # decode wall-clock of the newest frame behind this decision (latency reference)


@dataclass
class _Track:
    state: str = "idle"  # idle | pending | active | cooldown
    ema: float | None = None
    on_since: float = 0.0
    last_on: float = 0.0
    cooldown_until: float = float("-inf")
    event: Event | None = None
    last_update: float = 0.0
    peak: float = float("-inf")
    peak_time: float = 0.0
    windows: int = 0
    params: Params = field(default_factory=Params)


class Decisions:
    def __init__(self, update_interval: float = 1.0, defaults: Params | None = None) -> None:
        self.update_interval = update_interval
        self.defaults = defaults or Params()  # for an action that ``params`` of step() does not name
        self._tracks: dict[tuple[str, str], _Track] = {}

    def smoothed(self, stream: str) -> dict[str, float]:
        return {a: t.ema for (s, a), t in self._tracks.items() if s == stream and t.ema is not None}

    def active(self) -> list[Event]:
        tracks = list(self._tracks.values())  # atomic copy: the control thread reads this too
        return [t.event for t in tracks if t.state == "active" and t.event is not None]

    def step(
        self, stream: str, t: float, wall: float, scores: dict[str, float], params: dict[str, Params]
    ) -> list[Event]:
        """One window of ``stream`` at capture time ``t``: its score per action -> events."""
        out: list[Event] = []
        for action, score in scores.items():
            p = params.get(action, self.defaults)
            track = self._tracks.setdefault((stream, action), _Track(params=p))
            track.params = p  # edited thresholds apply from the next window; an open event continues
            ev = self._step_one(track, stream, action, t, wall, float(score))
            if ev is not None:
                out.append(ev)
        return out

    def _step_one(self, tr: _Track, stream: str, action: str, t: float, wall: float, score: float) -> Event | None:
        p = tr.params
        a = p.smoothing
        tr.ema = score if tr.ema is None else a * score + (1.0 - a) * tr.ema
        s = tr.ema
        on, off = s >= p.threshold, s < p.off
        if tr.state == "cooldown" and t >= tr.cooldown_until:
            tr.state = "idle"
        if tr.state == "idle":
            if on:
                tr.state, tr.on_since, tr.last_on = "pending", t, t
                tr.peak, tr.peak_time, tr.windows = s, t, 1
                return self._maybe_start(tr, stream, action, t, wall)
            return None
        if tr.state == "pending":
            if off:
                tr.state = "idle"
                return None
            if not on:  # in the hysteresis band: neither confirms nor cancels
                return None
            tr.last_on = t
            tr.windows += 1
            if s > tr.peak:
                tr.peak, tr.peak_time = s, t
            return self._maybe_start(tr, stream, action, t, wall)
        if tr.state == "active":
            ev = tr.event
            assert ev is not None
            if off:
                return self._end(tr, "score", wall)
            tr.last_on = t
            tr.windows += 1
            if s > tr.peak:
                tr.peak, tr.peak_time = s, t
            if t - tr.last_update >= self.update_interval:
                tr.last_update = t
                return self._emit(tr, ev, "update", s, wall)
        return None

    def _maybe_start(self, tr: _Track, stream: str, action: str, t: float, wall: float) -> Event | None:
        if t - tr.on_since + 1e-9 < tr.params.min_duration:
            return None
        tr.state = "active"
        tr.last_update = t
        assert tr.ema is not None
        tr.event = Event(
            uuid.uuid4().hex,
            stream,
            action,
            "start",
            tr.on_since,
            None,
            tr.ema,
            tr.peak,
            tr.peak_time,
            tr.windows,
            wall=wall,
        )
        return self._emit(tr, tr.event, "start", tr.ema, wall)

    def _emit(self, tr: _Track, ev: Event, phase: str, score: float, wall: float) -> Event:
        return Event(
            ev.id,
            ev.stream,
            ev.action,
            phase,
            ev.start,
            tr.last_on if phase == "end" else None,
            score,
            tr.peak,
            tr.peak_time,
            tr.windows,
            None,
            wall,
        )

    def _end(self, tr: _Track, reason: str, wall: float) -> Event:
        ev = tr.event
        assert ev is not None and tr.ema is not None
        out = self._emit(tr, ev, "end", tr.ema, wall)
        out.reason = reason
        tr.state = "cooldown"
        tr.cooldown_until = tr.last_on + tr.params.cooldown
        tr.event = None
        return out

    def end_stream(self, stream: str, reason: str, wall: float) -> list[Event]:
        """End the open events of a stream and forget its state (the stream ended or reconnected)."""
        out = []
        for key in [k for k in self._tracks if k[0] == stream]:
            tr = self._tracks.pop(key)
            if tr.state == "active":
                out.append(self._end(tr, reason, wall))
        return out

    def end_action(self, action: str, reason: str, wall: float) -> list[Event]:
        out = []
        for key in [k for k in self._tracks if k[1] == action]:
            tr = self._tracks.pop(key)
            if tr.state == "active":
                out.append(self._end(tr, reason, wall))
        return out

    def end_all(self, reason: str, wall: float) -> list[Event]:
        out = []
        for tr in self._tracks.values():
            if tr.state == "active":
                out.append(self._end(tr, reason, wall))
        return out
