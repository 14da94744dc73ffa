"""Window scores -> events, and events -> detection quality: the decision rules of the edge (the runtime,
`cezsar eval-stream`) and of training (choosing a calibrated default threshold on validation streams).

Torch-free and below every stage (the edge imports it through edge.decisions and edge.event_scoring;
training imports it directly, never the edge).

## Decisions
Window scores -> events, per stream and action.

Each (stream, action) has a small state machine driven by the window scores in capture time
(a window's time is its centre):

- the score is smoothed with an EMA: ``s = a * score + (1 - a) * s_prev`` (``a`` = smoothing);
- hysteresis: "on" when ``s >= threshold``, "off" when ``s < threshold - hysteresis``;
- exclusive (one actor in view: the actions file's ``exclusive: true``): only the action whose smoothed
  score is the highest of the stream's may be on, every other one is off, so at most one event per
  stream is open and a switch of the top action ends one event before the next starts;
- idle -> pending when on (and the cooldown is over); pending -> active when it stayed on for
  ``min_duration`` seconds: a ``start`` event is emitted, its span starting at the first on window;
  pending -> idle when off before that (nothing is emitted);
- active: ``update`` events at most every ``update_interval`` seconds (peak, current score);
  active -> cooldown when off: an ``end`` event with the span up to the last window that was on;
- cooldown -> idle after ``cooldown`` seconds of capture time.

Events that are open when a stream ends, an action is removed or the runtime stops are ended
with a reason.

## Matching

Event-level detection quality against known segments (the demo and the end-to-end test).

A predicted event matches a ground-truth segment when the action is the same and their temporal
IoU is at least ``min_iou``; matching is one-to-one, greedy by IoU (highest first), as in detection
evaluation. F1 = 2PR / (P + R) over the matched counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any


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
        self,
        stream: str,
        t: float,
        wall: float,
        scores: dict[str, float],
        params: dict[str, Params],
        exclusive: bool = False,
    ) -> list[Event]:
        """One window of ``stream`` at capture time ``t``: its score per action -> events. ``exclusive``
        (one actor, one action at a time): only the action with the highest smoothed score may be on;
        every other one is off (an open event of it ends), so at most one event per stream is open."""
        tracks: list[tuple[str, _Track]] = []
        for action, score in scores.items():
            p = params.get(action, self.defaults)
            track = self._tracks.setdefault((stream, action), _Track(params=p))
            track.params = p  # edited thresholds apply from the next window; an open event continues
            a = p.smoothing
            track.ema = float(score) if track.ema is None else a * float(score) + (1.0 - a) * track.ema
            tracks.append((action, track))
        top = max(tracks, key=lambda at: at[1].ema or 0.0)[0] if exclusive and tracks else None
        # an exclusive switch ends the old event before the new one starts
        tracks.sort(key=lambda at: at[0] == top)
        out: list[Event] = []
        for action, track in tracks:
            ev = self._step_one(track, stream, action, t, wall, top is None or action == top)
            if ev is not None:
                out.append(ev)
        return out

    def _step_one(self, tr: _Track, stream: str, action: str, t: float, wall: float, allowed: bool) -> Event | None:
        p = tr.params
        s = tr.ema
        assert s is not None
        on, off = allowed and s >= p.threshold, not allowed or s < p.off
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

    def quiet(self, stream: str) -> bool:
        """No track of ``stream`` is pending or active: a window whose smoothed scores all stay under their
        thresholds changes nothing here but the smoothed scores (what :meth:`carry` sets)."""
        return all(tr.state in ("idle", "cooldown") for (s, _), tr in self._tracks.items() if s == stream)

    def carry(self, stream: str, emas: dict[str, float], params: dict[str, Params]) -> None:
        """Take the smoothed scores of quiet windows of ``stream`` smoothed elsewhere, with the same
        expression as :meth:`step` (a replay's fast path over stored scores: edge/history/backtest.py)."""
        for action, ema in emas.items():
            p = params.get(action, self.defaults)
            track = self._tracks.setdefault((stream, action), _Track(params=p))
            track.params, track.ema = p, ema

    def end_all(self, reason: str, wall: float) -> list[Event]:
        out = []
        for tr in self._tracks.values():
            if tr.state == "active":
                out.append(self._end(tr, reason, wall))
        return out


def temporal_iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def match_events(
    predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], min_iou: float = 0.3
) -> dict[str, Any]:
    """``predicted``/``truth``: dicts with "action", "start", "end" (seconds)."""
    pairs = []
    for i, p in enumerate(predicted):
        for j, t in enumerate(truth):
            if p["action"] != t["action"]:
                continue
            iou = temporal_iou(float(p["start"]), float(p["end"]), float(t["start"]), float(t["end"]))
            if iou >= min_iou:
                pairs.append((iou, i, j))
    pairs.sort(key=lambda x: -x[0])
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for iou, i, j in pairs:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matches.append({"event": i, "segment": j, "iou": round(iou, 3)})
    tp = len(matches)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if not predicted and not truth:
        precision = recall = f1 = 1.0
    return {
        "tp": tp,
        "fp": len(predicted) - tp,
        "fn": len(truth) - tp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "matches": sorted(matches, key=lambda m: m["segment"]),
    }


# -- streams: window scores -> events -> quality ------------------------------------------------------
@dataclass
class ScoredStream:
    """One stream's window scores and its truth: what :func:`decide` and :func:`evaluate` need.

    ``centers``: each window's capture time (its centre, the time the decisions see); ``ends``: the
    capture time of its newest frame (when the decision could be made: the detection time of a start);
    ``scores``: (N, A) the scores the decisions see, columns ``names``; ``truth``: segments of the watched
    actions; ``other``: segments of actions the stream shows but nobody watches (neither idle nor
    scored); ``duration``: seconds.
    """

    name: str
    duration: float
    centers: Any  # np.ndarray (N,)
    ends: Any  # np.ndarray (N,)
    names: list[str]
    scores: Any  # np.ndarray (N, A)
    truth: list[dict[str, Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)


def decide(
    stream: ScoredStream, params: dict[str, Params] | Params, update_interval: float = 1.0, exclusive: bool = False
) -> list[dict[str, Any]]:
    """Run the Decisions over a stream's window scores: its events as ``{"action", "start", "end",
    "peak", "detected"}`` dicts (``detected``: the capture time at which the start was emitted), those
    still open when the stream ends included (as the runtime ends them). ``exclusive``: as Decisions.step."""
    by_action = params if isinstance(params, dict) else dict.fromkeys(stream.names, params)
    default = params if isinstance(params, Params) else Params()
    dec = Decisions(update_interval, default)
    detected: dict[str, float] = {}
    out: list[dict[str, Any]] = []

    def keep(ev: Event) -> None:
        if ev.phase == "start":
            detected[ev.id] = ev.wall
        elif ev.phase == "end":
            out.append(event_dict(ev, detected.get(ev.id, ev.start)))

    for i in range(len(stream.centers)):
        row = {n: float(stream.scores[i, j]) for j, n in enumerate(stream.names)}
        t, wall = float(stream.centers[i]), float(stream.ends[i])
        for ev in dec.step(stream.name, t, wall, row, by_action, exclusive):
            keep(ev)
    last = float(stream.ends[-1]) if len(stream.ends) else 0.0
    for ev in dec.end_stream(stream.name, "stream_end", last):
        keep(ev)
    return out


def event_dict(ev: Event, detected: float) -> dict[str, Any]:
    """An end event as the stream evaluation keeps it."""
    end = ev.end if ev.end is not None else ev.start
    return {"action": ev.action, "start": ev.start, "end": end, "peak": ev.peak, "detected": detected}


def _overlaps(a0: float, a1: float, segments: Sequence[dict[str, Any]]) -> bool:
    eps = 1e-9
    return any(min(a1, float(s["end"])) >= max(a0, float(s["start"])) - eps for s in segments)


def _covered(segments: Sequence[dict[str, Any]], duration: float) -> float:
    """Seconds of [0, duration] covered by the union of ``segments``."""
    spans = sorted((max(0.0, float(s["start"])), min(duration, float(s["end"]))) for s in segments)
    total, cur0, cur1 = 0.0, None, None
    for a, b in spans:
        if b <= a:
            continue
        if cur1 is None or a > cur1:
            if cur1 is not None and cur0 is not None:
                total += cur1 - cur0
            cur0, cur1 = a, b
        else:
            cur1 = max(cur1, b)
    if cur0 is not None and cur1 is not None:
        total += cur1 - cur0
    return total


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else (1.0 if not n_true else 0.0)
    r = tp / n_true if n_true else (1.0 if not n_pred else 0.0)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "p90": None}
    v = sorted(values)
    p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
    return {"mean": round(sum(v) / len(v), 3), "median": round(v[len(v) // 2], 3), "p90": round(p90, 3)}


def evaluate(results: Sequence[tuple[ScoredStream, Sequence[dict[str, Any]]]], min_iou: float = 0.3) -> dict[str, Any]:
    """Events of each stream against its truth: precision, recall and F1 at IoU >= ``min_iou`` (overall
    and per action), false alarms (an unmatched event overlapping no segment of any action is an idle
    false alarm; one that overlaps some segment is a wrong-action or duplicate alarm) per hour of idle
    (the time no segment covers), and the latency of the matched events: ``onset`` = event start -
    segment start (where the event says it began), ``detection`` = when the start was emitted - segment
    start (what a user waits)."""
    actions: dict[str, dict[str, int]] = {}
    tp = n_pred = n_true = idle_fa = wrong_fa = 0
    idle_seconds = total_seconds = 0.0
    onset: list[float] = []
    detect: list[float] = []
    for stream, events in results:
        for n in stream.names:
            actions.setdefault(n, {"segments": 0, "events": 0, "tp": 0})
        r = match_events(events, stream.truth, min_iou)
        tp, n_pred, n_true = tp + r["tp"], n_pred + len(events), n_true + len(stream.truth)
        for e in events:
            actions.setdefault(e["action"], {"segments": 0, "events": 0, "tp": 0})["events"] += 1
        for s in stream.truth:
            actions.setdefault(s["action"], {"segments": 0, "events": 0, "tp": 0})["segments"] += 1
        matched = {m["event"]: m["segment"] for m in r["matches"]}
        for i, e in enumerate(events):
            if i in matched:
                seg = stream.truth[matched[i]]
                actions[e["action"]]["tp"] += 1
                onset.append(float(e["start"]) - float(seg["start"]))
                detect.append(float(e.get("detected", e["start"])) - float(seg["start"]))
            elif _overlaps(float(e["start"]), float(e["end"]), [*stream.truth, *stream.other]):
                wrong_fa += 1
            else:
                idle_fa += 1
        total_seconds += stream.duration
        idle_seconds += stream.duration - _covered([*stream.truth, *stream.other], stream.duration)
    idle_hours = idle_seconds / 3600.0
    per_action = {a: {**c, **_prf(c["tp"], c["events"], c["segments"])} for a, c in sorted(actions.items())}
    return {
        "streams": len(results),
        "seconds": round(total_seconds, 2),
        "segments": n_true,
        "events": n_pred,
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_true - tp,
        **_prf(tp, n_pred, n_true),
        "min_iou": min_iou,
        "false_alarms": {
            "idle": idle_fa,
            "wrong_action": wrong_fa,
            "idle_seconds": round(idle_seconds, 2),
            "per_idle_hour": round(idle_fa / idle_hours, 2) if idle_hours > 0 else None,
        },
        "latency": {"onset": _stats(onset), "detection": _stats(detect)},
        "per_action": per_action,
    }


def sweep(
    streams: Sequence[ScoredStream],
    params: Params,
    thresholds: Sequence[float],
    min_iou: float = 0.3,
    per_action: dict[str, Params] | None = None,
    exclusive: bool = False,
) -> list[dict[str, Any]]:
    """Event quality at each threshold, the other parameters as ``params`` (or ``per_action``, each with
    the swept threshold): the precision-recall curve."""
    out = []
    for th in thresholds:
        p = replace(params, threshold=float(th))
        by = {n: replace(per_action[n], threshold=float(th)) for n in per_action} if per_action else p
        res = evaluate([(s, decide(s, by, exclusive=exclusive)) for s in streams], min_iou)
        out.append(
            {
                "threshold": round(float(th), 4),
                "events": res["events"],
                "tp": res["tp"],
                "precision": res["precision"],
                "recall": res["recall"],
                "f1": res["f1"],
                "idle_false_alarms_per_hour": res["false_alarms"]["per_idle_hour"],
            }
        )
    return out
