"""``--events-log FILE``: every event message appended as one JSON line (line-buffered), with its
topic and schema (edge.messages.log_line). Other topics are ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge import messages
from edge.sinks import SinkContext, register_sink


@register_sink("events_log")
class EventsLog:
    name = "events_log"

    @classmethod
    def from_settings(cls, path: Path, ctx: SinkContext) -> EventsLog:
        return cls(path)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
        self.written = 0

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        if not topic.startswith(messages.TOPIC_EVENT + ".") or self._file.closed:
            return False
        self._file.write(messages.log_line(messages.Message(topic, payload)) + "\n")
        self.written += 1
        return True

    def close(self) -> None:
        self._file.close()
