"""The runtime's history writer: recognition never waits on the disk or on PostgreSQL.

The main loop only puts references into one bounded queue (:meth:`HistoryWriter.window` from
Outputs.step, :meth:`publish` as a sink for event and media messages, :meth:`tap` as a frame tap for a
thumbnail every few seconds); a full queue drops the item and counts it. The writer's own thread
quantizes the embeddings, encodes the thumbnails and commits one transaction at least every
``COMMIT_S`` (a ``kill -9`` loses at most that much). When the store is down (PostgreSQL stopped, disk
full) the batch in hand is kept and retried with backoff; the queue fills meanwhile and what no longer
fits is dropped and counted as the gap (``gap_windows``); the runtime goes on. Its counters are the
sink's ``stats()``: the status's ``outputs.history`` and /metrics (``cezsar_sink_messages_total{sink="history"}``).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from edge import messages
from edge.history import codec
from edge.history.retention import Retention, prune
from edge.history.store import (
    Batch,
    HistoryError,
    HistoryStore,
    HistoryUnavailable,
    WindowRow,
    describe_error,
    open_store,
)
from edge.history.url import HistoryURL

log = logging.getLogger("cezsar.history")

COMMIT_S = 0.5  # the longest a queued item waits for its transaction
MAX_BATCH = 2000
BACKOFF = (0.5, 1.0, 2.0, 5.0)
CLOSE_S = 10.0  # how long close() waits for the queue to be written


class _Pending:
    """The bounded queue between the main loop and the writer: a deque that the producers append to
    (no lock, no wake-up per item: the writer takes what is there once per COMMIT_S, or as soon as a
    full batch waits, when ``ready`` is set)."""

    def __init__(self, capacity: int, batch: int = MAX_BATCH) -> None:
        self.capacity, self.batch = int(capacity), min(int(batch), int(capacity))
        self._items: collections.deque[tuple[Any, ...]] = collections.deque()
        self.ready = threading.Event()

    def put_nowait(self, item: tuple[Any, ...]) -> None:
        n = len(self._items)
        if n >= self.capacity:
            raise queue.Full
        self._items.append(item)
        if n + 1 == self.batch:
            self.ready.set()

    def drain(self, most: int) -> list[tuple[Any, ...]]:
        out = []
        pop = self._items.popleft
        for _ in range(min(most, len(self._items))):
            out.append(pop())
        return out

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items


class HistoryWriter:
    name = "history"

    def __init__(
        self,
        where: HistoryURL,
        model_hash: str,
        dim: int,
        *,
        encoding: str = "int8",
        capacity: int = 20000,
        thumbnails: float = 5.0,
        thumbnail_width: int = 160,
        retention: Retention | None = None,
    ) -> None:
        if encoding not in codec.ENCODINGS:
            raise CezsarError(f"history: embedding encoding {encoding!r}: choose {', '.join(codec.ENCODINGS)}")
        self.where, self.model, self.dim, self.encoding = where, model_hash, int(dim), encoding
        self.thumb_every, self.thumb_width = float(thumbnails), int(thumbnail_width)
        self.retention = retention
        self.queue = _Pending(capacity)
        self.store: HistoryStore | None = None
        self.written = {"windows": 0, "events": 0, "media": 0, "thumbnails": 0}
        self.dropped = {"windows": 0, "events": 0, "media": 0, "thumbnails": 0}
        self.gap_windows = 0  # windows dropped while the store was down
        self.outages = 0
        self.failed_writes = 0
        self.unsent = 0  # still queued or in hand when close() gave up
        self.pruned = {"windows": 0, "thumbnails": 0, "events": 0}
        self.last_error: str | None = None
        self.connected = False
        self._down_since: float | None = None
        self._last_thumb: dict[str, float] = {}
        self._scorings: dict[int, tuple[Any, int, list[str]]] = {}  # id(aset) -> (aset, scorings id, names)
        self._offsets: dict[str, float] = {}  # stream -> Unix time of its capture time 0 (media clock)
        self._last_end: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)

    @classmethod
    def from_settings(cls, s: Any, where: HistoryURL, model_hash: str, dim: int) -> HistoryWriter:
        return cls(
            where,
            model_hash,
            dim,
            encoding=s.embedding,
            capacity=s.queue,
            thumbnails=s.thumbnails,
            thumbnail_width=s.thumbnail_width,
            retention=Retention.from_settings(s),
        )

    # -- start / stop ------------------------------------------------------------------------------
    def start(self) -> HistoryWriter:
        """Open the store (a bad SQLite file raises HistoryError here, in one line; a server that is
        down is retried by the thread) and start the thread."""
        try:
            self._open()
        except HistoryUnavailable as e:  # a server down, a disk full: report, retry in the thread
            self._down(e)
        self._thread.start()
        return self

    def _open(self) -> None:
        self.store = open_store(self.where)
        self.store.model_id(self.model, self.dim)
        self._scorings.clear()
        self._up()

    def close(self) -> None:
        """Write what is queued (up to CLOSE_S), then close the store."""
        self._stop.set()
        self.queue.ready.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_S + 5.0)
        self.unsent += self.queue.qsize()
        if self.store is not None:
            self.store.close()

    # -- the main loop's side: references into the queue, never a wait ---------------------------
    def _put(self, kind: str, item: tuple[Any, ...]) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped[kind] += 1
            if kind == "windows" and not self.connected:
                self.gap_windows += 1
            n = sum(self.dropped.values())
            if n & (n - 1) == 0:
                log.warning("history: queue full, %s dropped [%d so far]", kind, n)
            return False

    def window(self, r: Any, aset: Any, clock: str = "wall") -> None:
        """One scored window (edge.recognizer.WindowResult), the action set that scored it and its
        stream's clock (``wall``: capture times are Unix times; ``media``: seconds into a file)."""
        w = r.window
        self._put("windows", ("w", w.stream, w.wall, w.start, w.end, w.embedding, r.scores, aset, clock))

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        """Sink: event and media messages (scores and status are not kept)."""
        kind = payload.get("type")
        if kind == "event":
            return self._put("events", ("e", payload))
        if kind == "media":
            return self._put("media", ("m", payload))
        return False

    def tap(self, stream: str, t: float, bgr: Any) -> None:
        """Frame tap: a reference to one frame per stream every ``thumbnails`` seconds of capture time."""
        if self.thumb_every <= 0:
            return
        last = self._last_thumb.get(stream)
        if last is None or t - last >= self.thumb_every or t < last:
            self._last_thumb[stream] = t
            self._put("thumbnails", ("t", stream, time.time(), bgr))

    def stats(self) -> dict[str, Any]:
        return {
            "where": self.where.redacted(),
            "connected": self.connected,
            "sent": sum(self.written.values()),
            "dropped": sum(self.dropped.values()),
            "unsent": self.unsent,
            "queued": self.queue.qsize(),
            "written": dict(self.written),
            "dropped_by_kind": dict(self.dropped),
            "gap_windows": self.gap_windows,
            "outages": self.outages,
            "failed_writes": self.failed_writes,
            "pruned": dict(self.pruned),
            "error": self.last_error,
        }

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        held: list[tuple[Any, ...]] = []
        backoff = 0
        next_prune = time.monotonic() + 5.0
        stop_at: float | None = None
        while True:
            if self._stop.is_set() and stop_at is None:
                stop_at = time.monotonic() + CLOSE_S
            if stop_at is None and self.queue.qsize() < MAX_BATCH - len(held):
                self.queue.ready.wait(COMMIT_S)  # a batch per COMMIT_S, or at once when one is full, or close
                self.queue.ready.clear()
            held.extend(self.queue.drain(MAX_BATCH - len(held)))
            if held:
                if self._write(held):
                    held, backoff = [], 0
                else:
                    if stop_at is not None and time.monotonic() >= stop_at:
                        self.unsent += len(held)
                        return
                    self._stop.wait(BACKOFF[min(backoff, len(BACKOFF) - 1)])
                    backoff += 1
                    continue
            if stop_at is not None and (self.queue.empty() or time.monotonic() >= stop_at):
                return
            if self.retention is not None and self.connected and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.retention.interval
                self._prune()

    def _write(self, items: list[tuple[Any, ...]]) -> bool:
        try:
            if self.store is None:
                self._open()
            assert self.store is not None
            batch = self._batch(self.store, items)
            self.store.write(batch, self.model, self.dim)
        except HistoryError as e:
            self._down(e)
            return False
        except Exception as e:  # noqa: BLE001 - the store is down: keep the batch, retry
            self._down(e)
            return False
        self._up()
        for key, n in (("windows", len(batch.windows)), ("events", len(batch.events))):
            self.written[key] += n
        self.written["media"] += len(batch.media)
        self.written["thumbnails"] += len(batch.thumbnails)
        return True

    def _down(self, e: BaseException) -> None:
        self.failed_writes += 1
        msg = describe_error(e) if not isinstance(e, CezsarError) else e.message
        if self.connected or self._down_since is None:
            self.outages += 1
            self._down_since = time.time()
            log.warning("history %s: store down (%s); retrying, the runtime goes on", self.where.redacted(), msg)
        self.connected = False
        self.last_error = msg

    def _up(self) -> None:
        if not self.connected and self._down_since is not None:
            log.info("history %s: store back after %.1f s", self.where.redacted(), time.time() - self._down_since)
        self.connected, self._down_since, self.last_error = True, None, None

    def _batch(self, store: HistoryStore, items: list[tuple[Any, ...]]) -> Batch:
        b = Batch()
        wins = [it for it in items if it[0] == "w"]
        blobs = iter(codec.encode_many(np.stack([it[5] for it in wins]), self.encoding) if wins else [])
        split: dict[str, tuple[str, str | None]] = {}
        for it in items:
            if it[0] == "w":
                _, name, wall, start, end, _, scores, aset, clock = it
                stream, zone = split.get(name) or split.setdefault(name, messages.split_stream(name))
                scoring, names = self._scoring(store, aset)
                b.windows.append(
                    WindowRow(
                        stream,
                        zone,
                        self._time(name, float(wall), float(end), clock),
                        float(start),
                        float(end),
                        next(blobs),
                        None if names is None else codec.encode_scores(scores, names),
                        scoring,
                    )
                )
            elif it[0] == "e":
                b.events.append(it[1])
            elif it[0] == "m":
                b.media.append(it[1])
            elif it[0] == "t":
                jpeg = self._jpeg(it[3])
                if jpeg is not None:
                    b.thumbnails.append((it[1], it[2], jpeg))
        b.offsets = dict(self._offsets)
        return b

    def _time(self, name: str, wall: float, end: float, clock: str) -> float:
        """A window's Unix time. A live stream's capture times are Unix times; a file's are seconds into
        it, placed from the wall time of its first window on (played fast or at its pace, the windows
        keep their spacing); a file that starts again (capture time going back) is placed anew."""
        if clock == "wall":
            self._offsets[name] = 0.0
            return end
        last = self._last_end.get(name)
        if name not in self._offsets or (last is not None and end < last):
            self._offsets[name] = wall - end
        self._last_end[name] = end
        return self._offsets[name] + end

    def _scoring(self, store: HistoryStore, aset: Any) -> tuple[int | None, list[str] | None]:
        if aset is None:
            return None, None
        hit = self._scorings.get(id(aset))
        if hit is None or hit[0] is not aset:
            names = aset.names()
            sid = store.scoring_id(self.model, self.dim, aset.to_obj(), names)
            hit = self._scorings[id(aset)] = (aset, sid, names)
            while len(self._scorings) > 64:
                self._scorings.pop(next(iter(self._scorings)))
        return hit[1], hit[2]

    def _jpeg(self, bgr: Any) -> bytes | None:
        import cv2

        try:
            img = np.asarray(bgr)
            h, w = img.shape[:2]
            while w >= 2 * self.thumb_width:  # halvings (a 2x2 mean each: INTER_AREA at 4x costs 4 times more)
                img = cv2.resize(img, (w // 2, max(1, h // 2)), interpolation=cv2.INTER_LINEAR)
                h, w = img.shape[:2]
            if w > self.thumb_width:
                img = cv2.resize(
                    img, (self.thumb_width, max(1, round(h * self.thumb_width / w))), interpolation=cv2.INTER_AREA
                )
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
        except Exception as e:  # noqa: BLE001 - a bad frame: no thumbnail
            log.debug("history: thumbnail failed: %s", e)
            return None
        return buf.tobytes() if ok else None

    def _prune(self) -> None:
        assert self.store is not None and self.retention is not None
        try:
            done = prune(self.store.engine, self.retention)
        except Exception as e:  # noqa: BLE001 - retried at the next pass
            log.warning("history: retention pass failed (%s)", describe_error(e))
            return
        for k, n in done.items():
            self.pruned[k] += n
