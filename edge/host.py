"""What the runtime offers to its HTTP routes, the web console and the control socket: small typed
interfaces, never the runtime object itself (edge/runtime/host.py implements them).

- :class:`SourcesHost`: list, add and remove streams while running (``/sources``, control socket);
- :class:`ConsoleHost`: the action store, the stream names, the text tower, the newest window of
  every stream and the scorer in use (the console's live view, editor and "try");
- :class:`StatusHost`: readiness and the status payload;
- :class:`SinkHost`: what an output may call (the MQTT sink: camera health for Home Assistant's
  availability, and the commands that switch a camera or an action off and on).
- :class:`HistoryHost`: the history's review, search and backtest (``/api/history``, ``/api/search``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from edge.actions import ActionStore
    from edge.embedder import Window
    from edge.scorer import Scorer


class SourcesHost(Protocol):
    def list_sources(self) -> dict[str, Any]: ...

    def add_source(self, text: str) -> dict[str, Any]: ...

    def remove_source(self, name: str) -> dict[str, Any]: ...


class StatusHost(Protocol):
    def ready(self) -> tuple[bool, list[str]]: ...

    def status(self) -> dict[str, Any]: ...

    def streams_health(self) -> dict[str, dict[str, Any]]:
        """Every stream's health (edge/health.py), by name."""
        ...


class ConsoleHost(SourcesHost, StatusHost, Protocol):
    @property
    def store(self) -> ActionStore: ...

    def stream_names(self) -> list[str]: ...

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm text embeddings (the text tower, cached)."""
        ...

    def forget_text(self, keep: Sequence[str]) -> None:
        """Drop cached text embeddings but ``keep``'s."""
        ...

    def latest_windows(self) -> dict[str, Window]:
        """The newest window of every stream (and zone stream)."""
        ...

    def scorer(self) -> Scorer | None: ...

    def zones(self) -> dict[str, list[dict[str, Any]]]:
        """stream -> its zones as ``{"name", "points": [[x, y], ...]}`` (0..1 of the image)."""
        ...


class SinkHost(Protocol):
    """Any thread. A paused stream keeps its reader (and the live view) but its frames are not
    recognised; a disabled action is not scored or decided on any stream. Both apply from the main
    loop's next round; their open events end (``stream_paused``, ``action_disabled``)."""

    def streams_health(self) -> dict[str, dict[str, Any]]:
        """Every stream's health (edge/health.py), by name."""
        ...

    def switches(self) -> dict[str, dict[str, bool]]:
        """``{"streams": {name: on}, "actions": {name: on}}`` for every stream and action."""
        ...

    def set_stream_enabled(self, name: str, on: bool) -> None:
        """Raises CezsarError for an unknown stream."""
        ...

    def set_action_enabled(self, name: str, on: bool) -> None:
        """Raises CezsarError for an unknown action."""
        ...


class HistoryHost(Protocol):
    """The history of the running runtime (edge/history): what its router may ask. Each method raises
    CezsarError with one line on bad input or when the store cannot be reached."""

    def history_events(self, **filters: Any) -> dict[str, Any]:
        """A page of stored events (stream, action, since, until, page, per_page)."""
        ...

    def history_event(self, event_id: str) -> dict[str, Any]:
        """One event, its phases and its scores around it."""
        ...

    def history_thumbnail(self, thumb_id: int) -> bytes | None: ...

    def history_search(self, text: str, **filters: Any) -> dict[str, Any]:
        """The best moments for a sentence (since, until, stream, limit)."""
        ...

    def history_backtest(self, fields: Any, replaces: Any, hours: Any, stream: Any, per_day: Any) -> dict[str, Any]:
        """One action (new or edited, as the editor sends it) replayed over the last ``hours``."""
        ...
