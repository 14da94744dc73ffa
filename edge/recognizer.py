"""Frames in; windows, scores and events out. No threads, no sockets, no sinks.

    Recognizer.push(frames) -> Step
        swap in a staged action set (the events of removed or reworded actions end)
        -> WindowEmbedder.add (edge/embedder.py): the frame encoder once per new frame (feature
           cache), per-stream rings, the temporal head every ``hop`` frames, batched across streams
        -> Scorer.score (edge/scorer.py): one score per action, a margin over the background, mapped
           to a probability by the deploy folder's score calibration when it has one
        -> Decisions.step (edge/decisions.py): EMA, hysteresis, minimum duration, cooldown, with
           each action's Params (exclusive: only the top action may be on) -> start / update / end events

The runtime (edge/runtime/) feeds it from its reader threads and turns a Step into messages
(edge/messages.py) for its sinks; a test or an offline tool can call it directly on frames
(``edge.sources.Frame.from_image`` preprocesses a decoded image).

Threads: :meth:`Recognizer.set_actions` may run in any thread (the actions watcher, the control
socket): it embeds the new descriptions there and stages the new Scorer as one reference, and the
next :meth:`Recognizer.push` or :meth:`Recognizer.sync` swaps it in, so scoring always uses one
complete set. Everything else belongs to the one thread that calls push(). :meth:`active` may be
read from another thread (it copies).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cezsar.scorecal import ScoreCalibration
from edge.actions import ActionSet
from edge.decisions import Decisions, Event, Params
from edge.embedder import Window, WindowEmbedder
from edge.scorer import Scorer
from edge.sources import Frame
from edge.text import TextEncoder


@dataclass
class WindowResult:
    """One scored window and what it caused."""

    window: Window
    scores: dict[str, float]  # action -> score (rounded to 4 decimals: what the decisions saw)
    cosine: dict[str, float]  # action -> raw cosine between the window and the action
    background: float | None  # best cosine to a background description; None without background
    smoothed: dict[str, float]  # action -> EMA of the scores after this window (what thresholds apply to)
    events: list[Event] = field(default_factory=list)  # events this window caused


@dataclass
class Step:
    """What one push() gave, in the order it happened."""

    ended: list[Event]  # events ended by an action-set change, before these frames
    windows: list[WindowResult]  # the windows that became due, each with its events

    @property
    def events(self) -> list[Event]:
        return [*self.ended, *(ev for r in self.windows for ev in r.events)]


class Recognizer:
    """The recognition pipeline of every stream.

    ``embedder``: frames -> window embeddings (holds the runners, the rings and the cache setting);
    ``text``: the text tower, needed by :meth:`set_actions` (not by :meth:`set_scorer`);
    ``defaults``: the Params of an action the scorer gives none for; ``update_interval``: seconds of
    capture time between two ``update`` events of an open event; ``calibration``: the deploy folder's
    score calibration (:func:`edge.scorer.deploy_calibration`), None for raw margins.
    """

    def __init__(
        self,
        embedder: WindowEmbedder,
        text: TextEncoder | None = None,
        *,
        defaults: Params | None = None,
        update_interval: float = 1.0,
        calibration: ScoreCalibration | None = None,
    ) -> None:
        self.embedder = embedder
        self.text = text
        self.calibration = calibration
        self.decisions = Decisions(update_interval, defaults)
        self.scorer: Scorer | None = None  # the set in use (swapped in by push/sync)
        self._staged: Scorer | None = None  # the newest set (written by set_actions, any thread)
        self.windows_by_stream: dict[str, int] = {}
        self.latest: dict[str, Window] = {}  # stream -> its newest window (the console's "try"; any thread reads)
        self._columns_for: Scorer | None = None
        self._columns_cache: dict[str, list[tuple[int, str]]] = {}

    # -- the action set (any thread) -------------------------------------------------------------
    def set_actions(self, aset: ActionSet) -> None:
        """Embed ``aset``'s descriptions (only new strings go through the text tower) and stage it;
        raises (and stages nothing) when embedding fails. The ActionStore's ``on_change``."""
        if self.text is None:
            raise RuntimeError("this Recognizer has no text encoder: use set_scorer")
        self.set_scorer(Scorer.build(aset, self.text, self.calibration))
        self.text.forget(aset.texts())

    def set_scorer(self, scorer: Scorer) -> None:
        self._staged = scorer

    # -- the pipeline (one thread) ---------------------------------------------------------------
    def sync(self, wall: float | None = None) -> list[Event]:
        """Swap in a staged set. Open events of actions it removed end (``action_removed``), so do
        those of actions whose descriptions changed (``action_changed``); changed thresholds apply to
        open events from the next window. ``wall``: the reference time of those ends (default now)."""
        new, old = self._staged, self.scorer
        if new is None or new is old:
            return []
        ended: list[Event] = []
        if old is not None:
            wall = time.time() if wall is None else wall
            for name in old.names:
                a_old, a_new = old.aset.get(name), new.aset.get(name)
                if a_new is None:
                    ended += self.decisions.end_action(name, "action_removed", wall)
                elif a_old is not None and a_old.descriptions != a_new.descriptions:
                    ended += self.decisions.end_action(name, "action_changed", wall)
        self.scorer = new
        return ended

    def push(self, frames: Sequence[Frame]) -> Step:
        """New sampled frames (any streams, each stream in capture order) -> the windows that became
        due, their scores and the events they caused. Without an action set, windows are embedded but
        not scored (none come out)."""
        ended = self.sync()
        windows = self.embedder.add(frames)
        for w in windows:
            self.latest[w.stream] = w
        scorer = self.scorer
        if not windows or scorer is None:
            return Step(ended, [])
        sc = scorer.score(np.stack([w.embedding for w in windows]))
        out = []
        for i, w in enumerate(windows):
            self.windows_by_stream[w.stream] = self.windows_by_stream.get(w.stream, 0) + 1
            cols = self._columns(scorer, w.stream)
            scores = {n: round(float(sc.scores[i, j]), 4) for j, n in cols}
            events = self.decisions.step(w.stream, w.center, w.wall, scores, scorer.params, scorer.aset.exclusive)
            out.append(
                WindowResult(
                    w,
                    scores,
                    {n: float(sc.cosine[i, j]) for j, n in cols},
                    None if sc.background is None else float(sc.background[i]),
                    self.decisions.smoothed(w.stream),
                    events,
                )
            )
        return Step(ended, out)

    def columns(self, stream: str) -> list[tuple[int, str]]:
        """The (score column, action) pairs decided on ``stream`` by the current scorer."""
        return [] if self.scorer is None else self._columns(self.scorer, stream)

    def _columns(self, scorer: Scorer, stream: str) -> list[tuple[int, str]]:
        """The (column, name) of the actions decided on ``stream`` (``streams:``/``zone:`` of each
        action; a zone's crop is the stream ``<stream>@<zone>``), cached per action set."""
        if self._columns_for is not scorer:
            self._columns_for, self._columns_cache = scorer, {}
        cols = self._columns_cache.get(stream)
        if cols is None:
            cols = []
            for j, n in enumerate(scorer.names):
                a = scorer.aset.get(n)
                if a is None or a.applies(stream):
                    cols.append((j, n))
            self._columns_cache[stream] = cols
        return cols

    def end_stream(self, stream: str, reason: str, wall: float | None = None) -> list[Event]:
        """The stream ended (``stream_end``) or was interrupted (``stream_interrupted``): end its open
        events, forget its decisions and its ring (no window spans the gap)."""
        self.embedder.reset(stream)
        return self.decisions.end_stream(stream, reason, time.time() if wall is None else wall)

    def reset(self, stream: str) -> None:
        """Forget a stream's buffered frames (after a failed batch); its decisions go on."""
        self.embedder.reset(stream)

    def end_all(self, reason: str, wall: float | None = None) -> list[Event]:
        """End every open event (``shutdown``)."""
        return self.decisions.end_all(reason, time.time() if wall is None else wall)

    # -- state -------------------------------------------------------------------------------------
    def active(self) -> list[Event]:
        """The open events (a copy; any thread)."""
        return self.decisions.active()

    def smoothed(self, stream: str) -> dict[str, float]:
        return self.decisions.smoothed(stream)

    @property
    def windows(self) -> int:
        return sum(self.windows_by_stream.values())
