"""Video sources read through OpenCV, one reader thread each.

Source specs (``[NAME=]SRC``: camera index, URL, GStreamer pipeline or file) are parsed and opened
by cezsar/video.py (:func:`cezsar.video.parse_sources`, :func:`cezsar.video.open_capture`).

The reader thread decodes continuously, samples frames by capture time (``edge.sampler``),
preprocesses the kept ones and hands them to a :class:`FrameQueue`. In real-time mode the queue
holds one frame and a new frame replaces an unconsumed one (counted as dropped): a slow consumer
never builds a backlog. In ``--no-realtime`` mode (files only) the reader waits for the consumer,
so every sampled frame is processed.

Capture times: media time (frame index / fps) for files, Unix wall-clock for live sources. Every
frame also records the wall-clock time it was decoded, the reference for capture->publish latency.

Failures: a live source that cannot be opened or stops delivering is reopened with exponential
backoff (0.5 s doubling to 10 s), forever, with its state in the status; a file that cannot be opened
fails; a file that ends finishes. Other streams are unaffected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from cezsar.redact import scrub
from cezsar.video import Capture, SourceSpec, open_capture
from edge.sampler import Sampler

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 10.0


def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own warnings (every failed reconnect) out of the log; the source
    status reports failures once, in words. Call before the first capture is opened."""
    import os

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old OpenCV builds
        pass


def as_bgr(image: Any) -> np.ndarray:
    """A decoded frame as HxWx3 uint8 BGR (grey and BGRA are converted); ValueError for anything else."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"frame is a {type(image).__name__}, not an image array")
    if image.dtype != np.uint8:
        raise ValueError(f"frame has dtype {image.dtype} (expected uint8), shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame has shape {image.shape} (expected HxW, HxWx3 or HxWx4)")
    if min(image.shape[:2]) < 2 or max(image.shape[:2]) > 16384:
        raise ValueError(f"frame has an unusable size {image.shape[1]}x{image.shape[0]}")
    return image


@dataclass
class Frame:
    stream: str
    index: int  # sampled-frame sequence number in this stream
    t: float  # capture time, seconds (media time for files, Unix time for live sources)
    wall: float  # time.time() when decoded: the reference for latency
    image: np.ndarray  # BGR uint8, as decoded
    tensor: np.ndarray  # (3, S, S) float32, preprocessed

    @classmethod
    def from_image(cls, stream: str, index: int, t: float, wall: float, image: Any, pre: Preprocess) -> Frame:
        """A decoded image -> a Frame, preprocessed as in training; ValueError/cv2.error for an unusable image."""
        image = as_bgr(image)
        return cls(stream, index, t, wall, image, pre.normalize(pre.crop_uint8(image)[None])[0])


class FrameQueue:
    """Hand-off between one reader thread and the consumer.

    ``drop=True``: at most ``capacity`` frames, a new one evicts the oldest (counted in ``dropped``).
    ``drop=False``: ``put`` waits while full (back-pressure; nothing is lost).
    ``notify`` is set on every put so one consumer can wait on many queues.
    """

    def __init__(self, capacity: int = 1, drop: bool = True, notify: threading.Event | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.drop = drop
        self.notify = notify or threading.Event()
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event | None = None) -> bool:
        """False when the queue was closed (or ``stop`` set) while waiting."""
        with self._cond:
            if self.drop:
                while len(self._items) >= self.capacity:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.capacity and not self._closed:
                    if stop is not None and stop.is_set():
                        return False
                    self._cond.wait(0.1)
            if self._closed:
                return False
            self._items.append(frame)
        self.notify.set()
        return True

    def drain(self) -> list[Frame]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        return items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.notify.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class SourceStats:
    state: str = "starting"  # starting | connecting | running | reconnecting | finished | failed | stopped
    error: str | None = None
    frames: int = 0  # decoded (grabbed) frames
    sampled: int = 0  # frames kept by the sampler and handed to the queue
    bad_frames: int = 0  # decoded frames that could not be used (wrong type or shape), skipped
    reconnects: int = 0
    last_frame_wall: float | None = None
    since: float = field(default_factory=time.time)  # when ``state`` last changed (Unix time)
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def input_fps(self) -> float:
        r = self._recent
        if len(r) < 2 or r[-1] <= r[0]:
            return 0.0
        return (len(r) - 1) / (r[-1] - r[0])


class Source:
    """One stream: a reader thread that opens, decodes, samples, preprocesses and queues frames."""

    def __init__(
        self,
        spec: SourceSpec,
        pre: Preprocess,
        fps: float,
        realtime: bool = True,
        queue_capacity: int = 2,
        notify: threading.Event | None = None,
        opener: Callable[[SourceSpec], Capture] = open_capture,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.pre = pre
        self.sampler = Sampler(fps)
        # live sources are always real time: their frames come when they come
        self.realtime = realtime or spec.live
        self.queue = FrameQueue(1 if self.realtime else max(1, queue_capacity), drop=self.realtime, notify=notify)
        self.opener = opener
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.stats = SourceStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
        self._index = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread (again: no effect)."""
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None:  # never started: nothing to wait for
            self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        """No more frames will come (file ended, failed or stopped) and the queue is empty."""
        return self.stats.state in ("finished", "failed", "stopped") and len(self.queue) == 0

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def _set(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if state != self.stats.state:
                self.stats.since = time.time()
            self.stats.state = state
            if error is not None or state == "running":
                self.stats.error = error

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            s = self.stats
            return {
                "kind": self.spec.kind,
                "state": s.state,
                "error": s.error,
                "frames": s.frames,
                "sampled": s.sampled,
                "bad_frames": s.bad_frames,
                "dropped": self.queue.dropped,
                "reconnects": s.reconnects,
                "input_fps": round(s.input_fps(), 2),
                "since": round(s.since, 3),
                "last_frame": None if s.last_frame_wall is None else round(s.last_frame_wall, 3),
            }

    # -- reader thread ----------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.backoff_start
        try:
            while not self._stop.is_set():
                self._set("connecting")
                err: str | None
                try:
                    cap: Capture | None = self.opener(self.spec)
                except CezsarError as e:
                    log.error("%s", e)
                    self._set("failed", scrub(str(e)))
                    return
                except Exception as e:  # noqa: BLE001 - a backend failure is reported, not fatal
                    cap, err = None, scrub(f"{type(e).__name__}: {e}")
                else:
                    err = f"cannot open {self.spec.kind} {self.spec.shown}"
                if cap is not None and cap.isOpened():
                    delay = self.backoff_start
                    self._set("running")
                    self.sampler.reset()
                    try:
                        err = self._read(cap)
                    except Exception as e:  # noqa: BLE001 - a decoder failure is the stream's fault, not fatal
                        err = scrub(f"reading failed ({type(e).__name__}: {e})")
                        log.warning("source %s: %s", self.name, err)
                    finally:
                        cap.release()
                elif cap is not None:
                    cap.release()
                if self._stop.is_set():
                    break
                if not self.spec.live:
                    if err is None:
                        self._set("finished")
                    else:
                        self._set("failed", err)
                    return
                with self._lock:
                    self.stats.reconnects += 1
                self._set("reconnecting", err or "stream ended")
                log.warning("source %s: %s; reconnecting in %.1f s", self.name, err or "stream ended", delay)
                if self._stop.wait(delay):
                    break
                delay = min(self.backoff_max, delay * 2)
            self._set("stopped")
        finally:
            if self.stats.state not in ("finished", "failed", "stopped"):
                self._set("stopped")
            self.queue.close()  # no more frames; those already queued stay readable

    def _file_end(self, cap: Capture, decoded: int) -> str | None:
        """At the end of a file: an error when nothing could be decoded; a note when it ended early."""
        if decoded == 0:
            return "no video frame could be decoded (corrupt, truncated or not a video)"
        try:
            expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        except Exception:  # noqa: BLE001 - a property a backend cannot give is no problem
            expected = 0
        if expected > 0 and decoded < expected - max(2, expected // 50):
            why = f"file ended after {decoded} of {expected} frames (truncated or corrupt)"
            log.warning("source %s: %s", self.name, why)
            with self._lock:
                self.stats.error = why
        return None

    def _bad_frame(self, why: str) -> None:
        with self._lock:
            self.stats.bad_frames += 1
            n = self.stats.bad_frames
            self.stats.error = f"skipped {n} unusable frame(s): {why}"
        if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: the log is not flooded by a source that sends only bad frames
            log.warning("source %s: skipped an unusable frame (%d so far): %s", self.name, n, why)

    def _read(self, cap: Capture) -> str | None:
        """Decode until the stream ends or stops; returns an error string for live sources, None at EOF."""
        native_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if not self.spec.live else 0.0
        t0_wall = time.time()
        i = 0
        while not self._stop.is_set():
            if not self.spec.live and self.realtime:
                t_media = i / native_fps if native_fps > 0 else 0.0
                wait = t0_wall + t_media - time.time()
                if wait > 0 and self._stop.wait(wait):
                    return None
            if not cap.grab():
                if self.spec.live:
                    return "stream stopped delivering frames"
                return self._file_end(cap, i)
            wall = time.time()
            if self.spec.live:
                t = wall
            elif native_fps > 0:
                t = i / native_fps
            else:
                t = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
            i += 1
            with self._lock:
                self.stats.frames += 1
                self.stats.last_frame_wall = wall
                self.stats._recent.append(wall)
            if not self.sampler.want(t):
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            try:
                frame = Frame.from_image(self.name, self._index, t, wall, image, self.pre)
            except (ValueError, cv2.error) as e:
                self._bad_frame(str(e))
                continue
            self._index += 1
            if not self.queue.put(frame, self._stop):
                return None
            with self._lock:
                self.stats.sampled += 1
        return None
