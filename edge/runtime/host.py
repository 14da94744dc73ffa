"""The runtime as its HTTP routes, web console and control socket see it (edge/host.py's interfaces):
a few methods over its parts, never the runtime object."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge.actions import ActionStore
from edge.embedder import Window
from edge.recognizer import Recognizer
from edge.runtime.status import StatusReporter
from edge.runtime.streams import StreamManager
from edge.runtime.zoneplan import ZonePlanner
from edge.scorer import Scorer
from edge.text import TextEncoder


class RuntimeHost:
    """Implements :class:`edge.host.ConsoleHost` (and so SourcesHost and StatusHost) and, with a history,
    :class:`edge.host.HistoryHost`."""

    def __init__(
        self,
        store: ActionStore,
        streams: StreamManager,
        text: TextEncoder,
        recognizer: Recognizer,
        reporter: StatusReporter,
        planner: ZonePlanner,
        on_added: Callable[[str], None],
        on_removed: Callable[[str], None],
        history: Any = None,
    ) -> None:
        self._store, self._streams, self._text, self._rec = store, streams, text, recognizer
        self._reporter, self._planner, self._on_added, self._on_removed = reporter, planner, on_added, on_removed
        self._history = history  # edge.history.service.LiveHistory, when the history is on

    @property
    def store(self) -> ActionStore:
        return self._store

    def stream_names(self) -> list[str]:
        return self._streams.names

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self._text.encode(list(texts))

    def forget_text(self, keep: Sequence[str]) -> None:
        self._text.forget(list(keep))

    def latest_windows(self) -> dict[str, Window]:
        return dict(self._rec.latest)

    def scorer(self) -> Scorer | None:
        return self._rec.scorer

    def zones(self) -> dict[str, list[dict[str, Any]]]:
        return {
            stream: [{"name": z.name, "points": [list(p) for p in z.points()]} for z in zs.values()]
            for stream, zs in self._planner.zones.items()
        }

    def list_sources(self) -> dict[str, Any]:
        return self._streams.list_sources()

    def add_source(self, text: str) -> dict[str, Any]:
        return self._streams.add(text, self._on_added)

    def remove_source(self, name: str) -> dict[str, Any]:
        return self._streams.remove(name, self._on_removed)

    def ready(self) -> tuple[bool, list[str]]:
        return self._reporter.ready()

    def status(self) -> dict[str, Any]:
        return self._reporter.message(False).payload

    def streams_health(self) -> dict[str, dict[str, Any]]:
        return self._reporter.streams_health()

    # -- the history (edge.host.HistoryHost) ----------------------------------------------------------
    def _live_history(self) -> Any:
        if self._history is None:
            from cezsar.errors import CezsarError

            raise CezsarError("this runtime keeps no history (start it with --history)")
        return self._history

    def history_events(self, **filters: Any) -> dict[str, Any]:
        return dict(self._live_history().service().events(**filters))

    def history_event(self, event_id: str) -> dict[str, Any]:
        return dict(self._live_history().service().event(event_id))

    def history_thumbnail(self, thumb_id: int) -> bytes | None:
        out = self._live_history().service().thumbnail(thumb_id)
        return None if out is None else bytes(out)

    def history_search(self, text: str, **filters: Any) -> dict[str, Any]:
        return dict(self._live_history().service().search(text, **filters))

    def history_backtest(self, fields: Any, replaces: Any, hours: Any, stream: Any, per_day: Any) -> dict[str, Any]:
        return dict(self._live_history().backtest(fields, replaces, hours, stream, per_day))
