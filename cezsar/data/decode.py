"""Seekable, streamed video decoding with PyAV (FFmpeg), torch-free.

:func:`cezsar.video.read_frames` decodes every frame from the start of the file up to the last one it
needs, once per segment. Here a video is opened once for all its segments; for each wanted time the
reader either keeps decoding forward (when the target is close ahead) or seeks to the keyframe at or
before it and decodes forward to the exact frame. Only the sampled frames are converted to arrays.

"Exact frame" follows :func:`cezsar.video.read_frames`: the frame shown at time ``t`` is the one of
index ``floor(t * fps)``, i.e. the last frame whose presentation time is ``<= t``.

PyAV is an optional dependency (the ``train`` extra); it is imported when a reader is opened.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.video import VideoInfo, sample_times

log = logging.getLogger(__name__)

# Forward decoding is preferred to a seek when the target is at most this many seconds ahead.
SEEK_THRESHOLD_S = 2.0


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise CezsarError("streamed decoding needs PyAV: pip install 'cezsar[train]' (or pip install av)") from e
    return av


class VideoReader:
    """One open video file; :meth:`frames_at` decodes the frames shown at given times, seeking as needed.

    Use as a context manager. Every PyAV/FFmpeg failure becomes a :class:`CezsarError` naming the file.
    """

    def __init__(self, path: str | Path, seek_threshold: float = SEEK_THRESHOLD_S) -> None:
        av = _av()
        self.path = Path(path)
        self.seek_threshold = seek_threshold
        if not self.path.is_file():
            raise CezsarError(f"{self.path}: video file not found")
        try:
            self._c = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise CezsarError(f"{self.path}: cannot be opened as a video ({e})") from None
        try:
            if not self._c.streams.video:
                raise CezsarError(f"{self.path}: no video stream")
            self._s = self._c.streams.video[0]
            rate = self._s.average_rate or self._s.guessed_rate or self._s.base_rate
            fps = float(rate) if rate else 0.0
            tb = self._s.time_base
            self._tb = float(tb) if tb else 0.0
            self._t0 = float(self._s.start_time * tb) if self._s.start_time is not None and tb else 0.0
            n = int(self._s.frames or 0)
            if n <= 0:
                dur = float(self._s.duration * tb) if self._s.duration and tb else (self._c.duration or 0) / 1_000_000
                n = int(round(dur * fps))
            w, h = int(self._s.codec_context.width or 0), int(self._s.codec_context.height or 0)
            if fps <= 0 or n <= 0 or w <= 0 or h <= 0 or self._tb <= 0:
                raise CezsarError(f"{self.path}: no usable video stream (fps={fps}, frames={n}, size={w}x{h})")
        except BaseException:
            self._c.close()
            raise
        self.info = VideoInfo(str(self.path), fps, n, w, h)
        self._it: Iterator[Any] | None = None
        self._pos = -1  # index of the last frame decoded (-1: before the first)
        self._cur: Any = None  # that frame
        self.seeks = 0
        self.decoded = 0

    # -- context manager
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._it = None
        self._c.close()

    # -- decoding
    def _index(self, frame: Any) -> int:
        t = (frame.pts * self._tb if frame.pts is not None else float(frame.time or 0.0)) - self._t0
        return int(math.floor(t * self.info.fps + 1e-3))

    def _next(self) -> Any | None:
        av = _av()
        if self._it is None:
            self._it = self._c.decode(self._s)
        try:
            frame = next(self._it)
        except StopIteration:
            return None
        except av.error.FFmpegError as e:
            raise CezsarError(f"{self.path}: decoding failed ({e})") from None
        self.decoded += 1
        return frame

    def _seek(self, index: int) -> None:
        av = _av()
        t = index / self.info.fps + self._t0
        try:
            self._c.seek(int(t / self._tb), stream=self._s, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise CezsarError(f"{self.path}: seek to {t:.3f} s failed ({e})") from None
        self.seeks += 1
        self._it = None
        self._pos, self._cur = -1, None

    def _frame_at(self, index: int) -> Any | None:
        """The decoded frame of ``index`` (or the last one before it when the stream ends early)."""
        # backward, or far ahead (from the start too: _pos is -1 before the first frame): seek
        if index < self._pos or (index - self._pos) / self.info.fps > self.seek_threshold:
            self._seek(index)
        while self._cur is None or self._pos < index:
            frame = self._next()
            if frame is None:
                break
            i = self._index(frame)
            if i > index and self._cur is not None:
                # overshoot (a gap in the timestamps): the frame shown at the target time is the one
                # decoded before; the next request starts from this one
                self._pending = (frame, i)
                break
            self._cur, self._pos = frame, i
        return self._cur

    def frames_at(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """(N, H, W, 3) BGR uint8 frames shown at ``times`` (seconds from the start), in the given order."""
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        idx = np.clip(np.floor(t * self.info.fps).astype(np.int64), 0, self.info.frame_count - 1)
        got: dict[int, np.ndarray] = {}
        for k in sorted(set(idx.tolist())):
            self._pending = None
            frame = self._frame_at(k)
            if frame is None:
                break
            got[k] = frame.to_ndarray(format="bgr24")
            if self._pending is not None:  # continue from the overshooting frame next time
                self._cur, self._pos = self._pending
        if not got:
            raise CezsarError(f"{self.path}: no frame could be decoded (corrupt or truncated video)")
        last = got[max(got)]
        return np.stack([got.get(k, last) for k in idx.tolist()])

    _pending: tuple[Any, int] | None = None


def clip_times(
    start: float | None, end: float | None, duration: float, fps: float, frames: int, max_factor: int = 4
) -> np.ndarray:
    """The times a training clip of one segment samples: up to ``max_factor * frames`` frames at
    ``fps`` (at least ``frames``), centred in [start, end] (the whole video when unset)."""
    s = 0.0 if start is None else max(0.0, float(start))
    e = duration if end is None else min(float(end), duration)
    if e <= s:
        raise CezsarError(f"segment [{s:.2f}, {e:.2f}] s is empty (video lasts {duration:.2f} s)")
    n = int(min(max_factor * frames, max(frames, np.floor((e - s) * fps))))
    return sample_times(s, e, fps, n)


def decode_segments(
    path: str | Path,
    segments: Sequence[tuple[float | None, float | None]],
    fps: float,
    frames: int,
    max_factor: int = 4,
    times: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Decode every segment of one video from one open: a list of (n_i, H, W, 3) BGR uint8 arrays.

    Segments are decoded in time order (so forward decoding is shared) and returned in the given order.
    ``times`` overrides the sampled times per segment.
    """
    with VideoReader(path) as r:
        ts = (
            list(times)
            if times is not None
            else [clip_times(a, b, r.info.duration, fps, frames, max_factor) for a, b in segments]
        )
        order = sorted(range(len(ts)), key=lambda i: float(ts[i][0]) if len(ts[i]) else 0.0)
        out: list[np.ndarray | None] = [None] * len(ts)
        for i in order:
            out[i] = r.frames_at(ts[i])
    return [o for o in out if o is not None]


def decode_from_start(path: str | Path, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reference decoder: decode every frame from the start (no seek) and keep those shown at ``times``.

    What a sequential reader costs; the benchmark compares it with :class:`VideoReader`.
    """
    with VideoReader(path, seek_threshold=math.inf) as r:  # frames_at visits the times in order: no seek
        return r.frames_at(times)
