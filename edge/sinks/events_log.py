"""``--events-log FILE`` (``outputs.events_log``): every event message appended as one JSON line, with
its topic and schema (edge.messages.log_line). Other topics are ignored.

A line is whole or absent: it goes to the file in one ``write`` on a descriptor opened with
``O_APPEND``; when the write fails or comes back short (a full disk), the file is cut back to where it
was, the failure is counted (``errors``) and logged, and the runtime goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from edge import messages
from edge.sinks import SinkContext, register_sink

log = logging.getLogger(__name__)


@register_sink("events_log")
class EventsLog:
    name = "events_log"

    @classmethod
    def from_settings(cls, path: Path, ctx: SinkContext) -> EventsLog:
        return cls(path)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.written = 0
        self.errors = 0

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        if not topic.startswith(messages.TOPIC_EVENT + ".") or self._fd is None:
            return False
        line = (messages.log_line(messages.Message(topic, payload)) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            n = os.write(self._fd, line)
            if n != len(line):
                raise OSError(f"short write ({n} of {len(line)} bytes)")
        except OSError as e:
            self.errors += 1
            try:
                os.ftruncate(self._fd, size)  # no half line
            except OSError:
                pass
            if self.errors & (self.errors - 1) == 0:
                log.warning("events log %s: a line was not written (%s) [%d so far]", self.path, e, self.errors)
            return False
        self.written += 1
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
