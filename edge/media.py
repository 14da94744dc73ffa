"""Evidence per event: a JPEG snapshot of its highest-scoring frame and an MP4 clip from a pre-roll
to its end, cut from a ring of recent frames (no second decode), written off the caller's thread.

How the runtime uses it (every call is cheap and never waits for a disk)::

    rec = MediaRecorder(settings.outputs.media, base_url="http://127.0.0.1:8080/media",
                        on_written=publish_update)
    rec.add_frame("cam1", t, frame_bgr)          # every frame kept for inference (capture time t)
    rec.event_start(ev_id, "cam1", start)        # on an event's "start" message
    res = rec.event_end(ev_id, end, peak_time)   # on its "end": res.as_message() -> {"snapshot", "clip"}
    ...
    rec.close()

Times are the capture times of the event messages (media time for files, Unix time for live
sources), so ``start``/``end``/``peak_time`` of an event select its frames directly.

- **Ring.** Per stream, the frames of the last ``pre_roll + start_delay`` seconds: ``start_delay``
  covers the time between an event's ``start`` (the centre of its first window) and the moment its
  start message is sent (window length, smoothing, ``min_duration``).
- **Collecting.** From ``event_start`` on, the event keeps the ring's frames from
  ``start - pre_roll`` and every later frame of its stream, up to ``max_clip`` seconds (then the
  clip is cut there). Frames are kept by reference, shared by the ring and the open events: the
  caller must not modify a frame after handing it over (or pass ``copy=True``). Memory is bounded by
  the stream's frame rate x max(``max_clip``, ring seconds) x frame size.
- **Writing.** ``event_end`` returns at once with the paths (or URLs with ``base_url``) the files
  will have, and queues the job for one worker thread (queue of ``queue_size`` jobs; full: the
  event's media are dropped and counted in ``dropped``, the caller never waits). The clip is
  resampled onto a constant frame rate (``clip_fps``, default the stream's median frame interval),
  so its duration is ``end - first frame`` to within one frame interval even when frames were
  dropped. Both files are written to a temporary name in the same folder and renamed
  (cezsar/atomic.py), so a reader never sees half a file. ``on_written(result)`` is called from the
  worker when both are on disk (to publish an ``update``), with ``result.error`` set on failure.
- **Retention.** After each write (and once at start) files older than ``max_age`` seconds are
  removed, then the oldest until the folder holds at most ``max_bytes`` (the files just written are
  never removed). Layout: ``DIR/<stream>/<event id>.jpg`` and ``.mp4``. Retention only ever removes
  files this recorder wrote: those of its naming scheme (a 32-hex event id, ``.jpg``/``.mp4``, one level
  below a folder marked as cezsar's by the file ``.cezsar-media``) and its own stale temporaries. A
  photo someone keeps in the same folder is never touched, whatever the limits.
- **Pairs.** An event's snapshot and clip are kept together: when the clip cannot be written (a full
  disk), the snapshot is removed again and the result says why (``error``).
"""

from __future__ import annotations

import bisect
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cezsar import atomic
from cezsar.errors import CezsarError
from edge.worker import STOP, stop_worker

if TYPE_CHECKING:
    from edge.settings import MediaSettings

log = logging.getLogger(__name__)

DEFAULT_START_DELAY = 5.0
MARKER = ".cezsar-media"  # marks a folder as this recorder's; retention works only below a marked folder
OWN_FILE = re.compile(r"^[0-9a-f]{32}\.(jpg|mp4)$")  # an event id (uuid4().hex) + the suffix this writes
OWN_TEMP = re.compile(r"^\.[0-9a-f]{32}\.(jpg|mp4)\.[A-Za-z0-9_]+\.(jpg|mp4)$")  # cezsar/atomic.py temporaries


@dataclass
class MediaResult:
    """Where one event's evidence goes. ``snapshot``/``clip`` are URLs with a base URL, else paths."""

    event_id: str
    stream: str
    snapshot: str
    clip: str
    snapshot_path: Path
    clip_path: Path
    frames: int  # frames collected for the clip
    truncated: bool = False  # longer than max_clip: cut
    written: bool = False
    error: str | None = None

    def as_message(self) -> dict[str, Any]:
        """The fields to add to the event's message: ``{"snapshot": ..., "clip": ...}``."""
        return {"snapshot": self.snapshot, "clip": self.clip}


@dataclass
class _Open:
    stream: str
    start: float
    t0: float
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    truncated: bool = False


@dataclass
class _Job:
    result: MediaResult
    frames: list[tuple[float, np.ndarray]]
    end: float
    peak_time: float | None


class MediaRecorder:
    """See the module docstring. Counters: ``written`` (events whose files are on disk), ``dropped``
    (events whose media were not written because the queue was full), ``errors``, ``removed`` (files
    removed by retention)."""

    def __init__(
        self,
        settings: MediaSettings,
        *,
        start_delay: float = DEFAULT_START_DELAY,
        clip_fps: float | None = None,
        base_url: str | None = None,
        queue_size: int = 8,
        jpeg_quality: int = 90,
        copy: bool = False,
        on_written: Callable[[MediaResult], None] | None = None,
    ) -> None:
        """``settings``: the ``outputs.media`` section (folder, pre-roll, longest clip, retention); the
        rest is how the runtime drives it."""
        directory, pre_roll, max_clip = settings.dir, settings.pre_roll, settings.max_clip
        max_bytes, max_age = int(settings.max_bytes), settings.max_age
        if pre_roll < 0 or start_delay < 0 or max_clip <= 0:
            raise CezsarError(f"media: pre_roll ({pre_roll}) and start_delay must be >= 0, max_clip > 0")
        if max_bytes <= 0 or max_age <= 0:
            raise CezsarError(f"media: max_bytes ({max_bytes}) and max_age ({max_age}) must be > 0")
        if clip_fps is not None and not 0 < clip_fps <= 120:
            raise CezsarError(f"media: clip_fps {clip_fps} must be in (0, 120]")
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CezsarError(f"media dir {self.dir}: cannot create ({e.strerror})") from None
        if not os.access(self.dir, os.W_OK):
            raise CezsarError(f"media dir {self.dir}: not writable")
        self._mark()
        self.pre_roll, self.start_delay, self.max_clip = float(pre_roll), float(start_delay), float(max_clip)
        self.clip_fps = clip_fps
        self.max_bytes, self.max_age = int(max_bytes), float(max_age)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.jpeg_quality = int(jpeg_quality)
        self.copy = copy
        self.on_written = on_written

        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.removed = 0
        self.closed = False

        self._lock = threading.Lock()
        self._rings: dict[str, deque[tuple[float, np.ndarray]]] = {}
        self._open: dict[str, _Open] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._worker = threading.Thread(target=self._run, name="media-writer", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ caller side (never waits)

    def add_frame(self, stream: str, t: float, frame: np.ndarray) -> None:
        """One frame of ``stream`` at capture time ``t`` (BGR uint8 HxWx3)."""
        if self.copy:
            frame = frame.copy()
        item = (float(t), frame)
        keep = self.pre_roll + self.start_delay
        with self._lock:
            ring = self._rings.get(stream)
            if ring is None:
                ring = self._rings[stream] = deque()
            elif ring and item[0] < ring[-1][0]:  # time went backwards (a file restarted): a new timeline
                ring.clear()
            ring.append(item)
            while ring and ring[0][0] < item[0] - keep:
                ring.popleft()
            for ev in self._open.values():
                if ev.stream != stream or ev.truncated:
                    continue
                if item[0] - ev.t0 > self.max_clip:
                    ev.truncated = True
                elif item[0] >= ev.t0:
                    ev.frames.append(item)

    def event_start(self, event_id: str, stream: str, start: float) -> None:
        """Begin collecting ``event_id`` (its capture-time ``start``) with the ring's pre-roll."""
        t0 = float(start) - self.pre_roll
        with self._lock:
            ring = self._rings.get(stream, ())
            frames = [f for f in ring if f[0] >= t0]
            self._open[event_id] = _Open(stream, float(start), t0, frames)

    def event_end(self, event_id: str, end: float, peak_time: float | None = None) -> MediaResult | None:
        """Stop collecting and queue the files; returns where they will be, or None (unknown event,
        no frame collected, or the writer queue full: ``dropped`` + 1)."""
        with self._lock:
            ev = self._open.pop(event_id, None)
        if ev is None:
            return None
        frames = [f for f in ev.frames if f[0] <= float(end) + 1e-9]
        if not frames:
            log.debug("media: event %s has no frames", event_id)
            return None
        name = _safe_name(event_id)
        snap_path = self.dir / ev.stream / f"{name}.jpg"
        clip_path = self.dir / ev.stream / f"{name}.mp4"
        result = MediaResult(
            event_id=event_id,
            stream=ev.stream,
            snapshot=self._locate(snap_path),
            clip=self._locate(clip_path),
            snapshot_path=snap_path,
            clip_path=clip_path,
            frames=len(frames),
            truncated=ev.truncated,
        )
        if self.closed:
            return None
        try:
            clip_end = frames[-1][0] if ev.truncated else float(end)  # a cut clip ends with its last frame
            self._queue.put_nowait(_Job(result, frames, clip_end, peak_time))
        except queue.Full:
            self.dropped += 1
            log.warning("media: writer busy, event %s gets no snapshot/clip (dropped %d)", event_id, self.dropped)
            return None
        return result

    def discard(self, event_id: str) -> None:
        """Forget an open event without writing anything."""
        with self._lock:
            self._open.pop(event_id, None)

    def open_events(self) -> int:
        with self._lock:
            return len(self._open)

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "removed": self.removed,
            "queued": self._queue.qsize(),
            "open": self.open_events(),
        }

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued job is written (tests, shutdown). True when the queue is empty."""
        end = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (open events are not written), then stop the worker."""
        if self.closed:
            return
        self.closed = True
        stop_worker(self._queue, self._worker, timeout)

    def _locate(self, path: Path) -> str:
        if self.base_url is None:
            return str(path)
        return f"{self.base_url}/{path.relative_to(self.dir).as_posix()}"

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        self._prune(keep=())
        while True:
            job = self._queue.get()
            try:
                if job is STOP:
                    return
                self._write(job)
            finally:
                self._queue.task_done()

    def _write(self, job: _Job) -> None:
        res = job.result
        try:
            res.snapshot_path.parent.mkdir(parents=True, exist_ok=True)
            self._write_snapshot(job)
            self._write_clip(job)
            res.written = True
            self.written += 1
        except Exception as e:
            res.error = f"{type(e).__name__}: {e}"
            self.errors += 1
            for p in (res.snapshot_path, res.clip_path):  # both or neither
                self._remove(p, count=False)
            log.warning("media: event %s: cannot write its files: %s", res.event_id, res.error)
        try:
            self._prune(keep=(res.snapshot_path, res.clip_path))
        except OSError as e:
            log.warning("media: retention: %s", e)
        if self.on_written is not None:
            try:
                self.on_written(res)
            except Exception as e:
                log.warning("media: on_written callback failed: %s", e)

    def _write_snapshot(self, job: _Job) -> None:
        frames = job.frames
        # the peak's capture time (the centre of the highest-scoring window); without one, the middle frame
        target = float(job.peak_time) if job.peak_time is not None else frames[len(frames) // 2][0]
        times = [f[0] for f in frames]
        i = bisect.bisect_left(times, float(target))
        if i > 0 and (i == len(times) or abs(times[i - 1] - target) <= abs(times[i] - target)):
            i -= 1
        ok, buf = cv2.imencode(".jpg", _bgr(frames[i][1]), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        atomic.write_bytes(job.result.snapshot_path, buf.tobytes())

    def _write_clip(self, job: _Job) -> None:
        frames = job.frames
        fps = self.clip_fps or _estimate_fps(frames)
        t_begin = frames[0][0]
        t_end = max(job.end, t_begin)
        n = int(np.floor((t_end - t_begin) * fps + 1e-6)) + 1
        first = _bgr(frames[0][1])
        h, w = first.shape[:2]
        with atomic.atomic_path(job.result.clip_path) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
            if not writer.isOpened():
                raise RuntimeError("OpenCV cannot open an mp4v VideoWriter")
            try:
                j = 0
                for k in range(n):  # constant-rate grid: the latest frame at or before each slot
                    slot = t_begin + k / fps
                    while j + 1 < len(frames) and frames[j + 1][0] <= slot + 1e-9:
                        j += 1
                    img = _bgr(frames[j][1])
                    if img.shape[:2] != (h, w):
                        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                    writer.write(img)
            finally:
                writer.release()
            if tmp.stat().st_size == 0:
                raise RuntimeError("the clip is empty")

    def _prune(self, keep: tuple[Path, ...]) -> None:
        """Retention: older than max_age, then oldest first down to max_bytes; stale temporaries too."""
        if not (self.dir / MARKER).is_file():
            return
        now = time.time()
        files = []
        for p in self.dir.glob("*/*"):  # <stream>/<file>: the only level this recorder writes
            own, temporary = OWN_FILE.match(p.name), OWN_TEMP.match(p.name)
            if not (own or temporary) or not p.is_file() or p.is_symlink():
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            if temporary:  # a temporary left by a crash (live ones are minutes old at most)
                if now - st.st_mtime > 3600:
                    self._remove(p)
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort(key=lambda x: (x[0], str(x[2])))
        keep_set = {k.resolve() for k in keep}
        total = sum(size for _, size, _ in files)
        for mtime, size, p in files:
            too_old = now - mtime > self.max_age
            if not too_old and total <= self.max_bytes:
                break
            if p.resolve() in keep_set:
                continue
            if self._remove(p):
                total -= size
        if total > self.max_bytes:
            log.warning(
                "media: %s holds %d bytes, over max_bytes %d (the newest event alone)", self.dir, total, self.max_bytes
            )

    def _mark(self) -> None:
        """Mark the folder as this recorder's (retention works only below a marked folder)."""
        marker = self.dir / MARKER
        if marker.is_file():
            return
        if any(p.name != MARKER for p in self.dir.iterdir()):
            log.warning("media: %s holds files that are not cezsar's; retention leaves them alone", self.dir)
        try:
            atomic.write_text(marker, "cezsar media folder: retention removes only <stream>/<event id>.jpg|.mp4\n")
        except OSError as e:
            log.warning("media: cannot mark %s (%s); retention is off", self.dir, e)

    def _remove(self, p: Path, count: bool = True) -> bool:
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning("media: cannot remove %s: %s", p, e)
            return False
        self.removed += count
        return True


def _safe_name(event_id: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in event_id)[:96]
    if not name:
        raise CezsarError(f"media: event id {event_id!r} has no usable character")
    return name


def _bgr(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _estimate_fps(frames: list[tuple[float, np.ndarray]]) -> float:
    if len(frames) < 2:
        return 1.0
    dt = float(np.median(np.diff([f[0] for f in frames])))
    if dt <= 0:
        return 1.0
    return float(min(60.0, max(1.0, round(1.0 / dt, 3))))
