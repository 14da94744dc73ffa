"""The runtime's streams: one reader thread per source, and the changes made while it runs.

:class:`StreamManager` owns the :class:`edge.sources.Source` objects: it starts and stops them, drains
their queues for the main loop, notices reconnects and ends (the runtime then ends that stream's open
events), and applies ``add``/``remove`` requests from other threads (control socket, HTTP) between two
frame batches of the main loop (:meth:`StreamManager.apply_pending`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from cezsar.video import SourceSpec, default_stream_name, parse_source
from edge.settings import RuntimeSettings
from edge.sources import Frame, Source

log = logging.getLogger("cezsar.edge")

CAMERA_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
MAX_SOURCE_TEXT = 2048


class StreamManager:
    def __init__(
        self,
        specs: list[SourceSpec],
        *,
        pre: Preprocess,
        fps: float,
        realtime: bool,
        hop: int,
        notify: threading.Event,
        shutdown_timeout: float,
        runtime_files: Path | None,
    ) -> None:
        self.pre, self.fps, self.realtime, self.notify = pre, fps, realtime, notify
        self.capacity = max(4, 2 * hop)
        self.shutdown_timeout = shutdown_timeout
        self.runtime_files = runtime_files
        # schemes a source added while running may use: the cameras' own, and those the site started with
        self.schemes = CAMERA_SCHEMES | {s.scheme for s in specs if s.scheme}
        self.sources: list[Source] = [self._source(s) for s in specs]
        self.clocks: dict[str, str] = {s.name: "wall" if s.live else "media" for s in specs}
        self.version = 0  # bumped on every add/remove
        self.running: Callable[[], bool] = lambda: False  # set by the runtime: may changes be applied now?
        self._ended: set[str] = set()
        self._reconnects: dict[str, int] = {}
        self._ops: queue.Queue[tuple[Callable[[], dict[str, Any]], Future[dict[str, Any]]]] = queue.Queue()

    @classmethod
    def from_settings(
        cls, specs: list[SourceSpec], s: RuntimeSettings, pre: Preprocess, fps: float, notify: threading.Event
    ) -> StreamManager:
        return cls(
            specs,
            pre=pre,
            fps=fps,
            realtime=s.sampling.realtime,
            hop=s.sampling.hop,
            notify=notify,
            shutdown_timeout=s.run.shutdown_timeout,
            runtime_files=s.runtime_files,
        )

    def _source(self, spec: SourceSpec) -> Source:
        return Source(spec, self.pre, self.fps, self.realtime, self.capacity, self.notify)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def clock(self, stream: str) -> str:
        return self.clocks.get(stream, "media")

    # -- the main loop's side ---------------------------------------------------------------------
    def start(self) -> None:
        for s in self.sources:
            s.start()

    def drain(self) -> list[Frame]:
        frames: list[Frame] = []
        for s in self.sources:
            frames.extend(s.queue.drain())
        return frames

    def gather(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every running stream to have a frame queued (bigger batches
        across unsynchronised streams, at the cost of up to that much latency)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not any(s.stats.state == "running" and len(s.queue) == 0 for s in self.sources):
                return
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))

    def all_finished(self) -> bool:
        return bool(self.sources) and all(s.finished for s in self.sources)

    def failed(self) -> list[str]:
        return [s.name for s in self.sources if s.stats.state == "failed"]

    def check(self, end_stream: Callable[[str, str], None], report: Callable[[str], None]) -> None:
        """Reconnects and ends since the last call: ``end_stream(name, reason)`` ends its open events."""
        for s in self.sources:
            rc = s.stats.reconnects
            if rc != self._reconnects.get(s.name, 0):
                self._reconnects[s.name] = rc
                end_stream(s.name, "stream_interrupted")
                report(f"{s.name}: {s.stats.error or 'reconnecting'}")
            if s.finished and s.name not in self._ended:
                self._ended.add(s.name)
                end_stream(s.name, "stream_end")
                if s.stats.state == "failed":
                    report(f"{s.name}: {s.stats.error}")
                log.info("source %s %s%s", s.name, s.stats.state, f": {s.stats.error}" if s.stats.error else "")

    def stop(self) -> None:
        for s in self.sources:
            s.stop()
        deadline = time.monotonic() + self.shutdown_timeout
        for s in self.sources:  # daemon threads: one stuck in a network read does not hold the exit
            s.join(max(0.0, deadline - time.monotonic()))

    # -- changes from other threads -------------------------------------------------------------
    def list_sources(self) -> dict[str, Any]:
        return {"sources": [{"name": s.name, **s.snapshot()} for s in list(self.sources)]}

    def check_addable(self, text: str) -> SourceSpec:
        """``NAME=URL`` -> its spec, or one line saying why it cannot be added while running: a camera
        index, a URL of a scheme cameras use (``schemes``), or a video file inside --runtime-files;
        never a GStreamer pipeline (it can read and write any file)."""
        if len(text) > MAX_SOURCE_TEXT:
            raise CezsarError(f"source: {len(text)} characters (at most {MAX_SOURCE_TEXT})")
        spec = parse_source(text, default_stream_name(text, len(self.sources), set(self.names)))
        shown = f"{spec.name}={spec.shown}"
        if spec.kind == "gstreamer":
            raise CezsarError(f"source {shown!r}: GStreamer pipelines cannot be added while running (start with them)")
        if spec.kind == "url" and spec.scheme not in self.schemes:
            raise CezsarError(
                f"source {shown!r}: {spec.scheme}:// cannot be added while running "
                f"(allowed: {', '.join(f'{x}://' for x in sorted(self.schemes))}; files: from --runtime-files)"
            )
        if spec.kind == "file":
            base = self.runtime_files
            target = Path(spec.target).resolve()
            if base is None or not target.is_relative_to(base.resolve()):
                raise CezsarError(
                    f"source {shown!r}: video files can be added while running only from the --runtime-files folder"
                    + ("" if base is None else f" ({base})")
                )
            if not target.is_file():
                raise CezsarError(f"source {shown!r}: no such video file in --runtime-files")
        return spec

    def add(self, text: str, on_added: Callable[[str], None], timeout: float = 10.0) -> dict[str, Any]:
        """Start one more stream (``NAME=URL``); any thread. Returns its description once running."""
        spec = self.check_addable(text)

        def apply() -> dict[str, Any]:
            if spec.name in self.names:
                raise CezsarError(f"source {spec.name}: a stream of that name exists")
            src = self._source(spec)
            self.sources.append(src)
            self.clocks[spec.name] = "wall" if spec.live else "media"
            self._ended.discard(spec.name)
            self.version += 1
            on_added(spec.name)
            src.start()
            log.info("source added: %s", spec.describe())
            return {"name": spec.name, "kind": spec.kind}

        return self.on_main_loop(apply, timeout)

    def remove(self, name: str, on_removed: Callable[[str], None], timeout: float = 10.0) -> dict[str, Any]:
        """Stop a stream; ``on_removed(name)`` ends its open events. Any thread."""

        def apply() -> dict[str, Any]:
            src = next((s for s in self.sources if s.name == name), None)
            if src is None:
                raise CezsarError(f"no source named {name!r} (sources: {', '.join(self.names)})")
            src.stop()
            self.sources.remove(src)
            self._ended.add(name)
            on_removed(name)
            self.version += 1
            src.join(self.shutdown_timeout)
            log.info("source removed: %s", name)
            return {"name": name, "sources": self.names}

        return self.on_main_loop(apply, timeout)

    def on_main_loop(self, fn: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Run ``fn`` between two frame batches of the main loop and wait for its result."""
        if not self.running():
            raise CezsarError("the runtime is not running")
        fut: Future[dict[str, Any]] = Future()
        self._ops.put((fn, fut))
        self.notify.set()
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise CezsarError(f"the runtime did not apply the change within {timeout:g} s") from None

    def apply_pending(self) -> None:
        while True:
            try:
                fn, fut = self._ops.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except Exception as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)
