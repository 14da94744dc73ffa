"""Streams and actions switched off and on while the runtime runs (MQTT commands, Home Assistant's
switches): edge.host.SinkHost over the runtime's streams and action store.

- A **paused stream** keeps its reader (reconnects, health, the live view and the media ring go on),
  but its frames do not reach the Recognizer; its open events end (``stream_paused``) and its
  feature ring restarts when it is switched on again.
- A **disabled action** is not published on any stream: its open events end (``action_disabled``),
  the Recognizer's later events of it are held back (a whole event, start to end, never half of
  one), and it leaves the scores messages. Switched on again, the held-back events are closed
  unseen, so its next event starts fresh.

``set_*`` may be called from any thread (they only record the wish); the main loop applies the
changes between two batches (:meth:`Switches.apply`), so they act within one loop round. The switches
start on at every start of the runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from cezsar.errors import CezsarError
from edge.actions import ActionStore
from edge.decisions import Event
from edge.health import stream_health
from edge.recognizer import WindowResult
from edge.runtime.streams import StreamManager
from edge.sources import Frame

log = logging.getLogger("cezsar.edge")


class Switches:
    """Implements edge.host.SinkHost."""

    def __init__(self, streams: StreamManager, store: ActionStore, notify: threading.Event) -> None:
        self._streams, self._store, self._notify = streams, store, notify
        self._lock = threading.Lock()
        self._paused: set[str] = set()  # wished (any thread)
        self._disabled: set[str] = set()
        self.paused: frozenset[str] = frozenset()  # applied (main loop)
        self.disabled: frozenset[str] = frozenset()
        self._held: set[str] = set()  # ids of open events whose start was held back (main loop)

    # -- any thread (edge.host.SinkHost) -----------------------------------------------------------
    def streams_health(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {s.name: stream_health(s.snapshot(), now) for s in list(self._streams.sources)}

    def switches(self) -> dict[str, dict[str, bool]]:
        with self._lock:
            paused, disabled = set(self._paused), set(self._disabled)
        return {
            "streams": {n: n not in paused for n in self._streams.names},
            "actions": {n: n not in disabled for n in self._store.current.names()},
        }

    def set_stream_enabled(self, name: str, on: bool) -> None:
        if name not in self._streams.names:
            raise CezsarError(f"no stream named {name!r}")
        self._set(self._paused, name, not on)

    def set_action_enabled(self, name: str, on: bool) -> None:
        if name not in self._store.current.names():
            raise CezsarError(f"no action named {name!r}")
        self._set(self._disabled, name, not on)

    def _set(self, where: set[str], name: str, member: bool) -> None:
        with self._lock:
            (where.add if member else where.discard)(name)
        self._notify.set()

    # -- the main loop -----------------------------------------------------------------------------
    def apply(self, end_stream: Callable[[str, str], None], end_action: Callable[[str, str], None]) -> None:
        """Apply what was switched since the last call: ``end_stream(name, reason)`` ends a paused
        stream's open events, ``end_action(name, reason)`` an action's."""
        with self._lock:  # a stream or an action that went away forgets its switch
            self._paused &= set(self._streams.names)
            self._disabled &= set(self._store.current.names())
            paused, disabled = frozenset(self._paused), frozenset(self._disabled)
        if paused == self.paused and disabled == self.disabled:
            return
        for name in sorted(paused - self.paused):
            log.info("stream %s paused: its frames are not recognised until it is switched on", name)
            end_stream(name, "stream_paused")
        for name in sorted(self.paused - paused):
            log.info("stream %s switched on", name)
        newly_off, newly_on = disabled - self.disabled, self.disabled - disabled
        self.paused, self.disabled = paused, disabled
        for name in sorted(newly_off):
            log.info("action %s disabled", name)
            end_action(name, "action_disabled")  # its published events end here
        for name in sorted(newly_on):
            log.info("action %s enabled", name)
            end_action(name, "action_enabled")  # only held-back events are open: they end unseen

    def frames(self, frames: list[Frame]) -> list[Frame]:
        """The frames the Recognizer gets: those of streams not paused."""
        if not self.paused:
            return frames
        return [f for f in frames if f.stream not in self.paused]

    def events(self, events: Iterable[Event]) -> list[Event]:
        """The events to publish: not the starts of disabled actions, nor anything of those events."""
        out: list[Event] = []
        for ev in events:
            if ev.id in self._held:
                if ev.phase == "end":
                    self._held.discard(ev.id)
                continue
            if ev.phase == "start" and ev.action in self.disabled:
                self._held.add(ev.id)
                continue
            out.append(ev)
        return out

    def window(self, r: WindowResult) -> WindowResult:
        """A window's result without the disabled actions (its scores message)."""
        if not self.disabled or not any(a in self.disabled for a in r.scores):
            return r
        off = self.disabled
        return dataclasses.replace(
            r,
            scores={a: v for a, v in r.scores.items() if a not in off},
            cosine={a: v for a, v in r.cosine.items() if a not in off},
            smoothed={a: v for a, v in r.smoothed.items() if a not in off},
        )
