"""Video decoding and fixed-rate frame sampling with OpenCV.

Sampling follows the paper: T frames at a fixed rate (default 1 fps x 16). When a
segment is shorter than T / rate, the T frames are spread uniformly over it
instead of padding with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cezsar.errors import CezsarError
from cezsar.opencv import cv2


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def _open(path: str | Path) -> cv2.VideoCapture:
    p = Path(path)
    if not p.is_file():
        raise CezsarError(f"{p}: video file not found")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise CezsarError(f"{p}: cannot be decoded as a video (unreadable, corrupt or no video stream)")
    return cap


def probe(path: str | Path) -> VideoInfo:
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        cap.release()
    if fps <= 0 or n <= 0 or w <= 0 or h <= 0:
        raise CezsarError(f"{path}: no usable video stream (fps={fps}, frames={n}, size={w}x{h})")
    return VideoInfo(str(path), fps, n, w, h)


def sample_times(start: float, end: float, fps: float, frames: int, offset: float = 0.5) -> np.ndarray:
    """Times (seconds) of ``frames`` samples at ``fps`` inside [start, end].

    A segment longer than the window places the window at ``offset`` (0 = start,
    0.5 = centred, 1 = end) of the slack; a shorter one spreads the frames uniformly.
    """
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if fps <= 0:
        raise ValueError("fps must be > 0")
    length = max(0.0, end - start)
    window = frames / fps
    if length >= window:
        t0 = start + (length - window) * min(max(offset, 0.0), 1.0)
        return t0 + (np.arange(frames) + 0.5) / fps
    return start + (np.arange(frames) + 0.5) * (length / frames)


def read_frames(path: str | Path, times: np.ndarray, info: VideoInfo | None = None) -> np.ndarray:
    """Decode the frames nearest to ``times`` (seconds); returns (T, H, W, 3) BGR uint8.

    Decodes sequentially (grab, retrieve only what is needed): seeking is not
    frame-accurate for every codec OpenCV reads.
    """
    info = info or probe(path)
    idx = np.clip(np.floor(np.asarray(times) * info.fps).astype(int), 0, info.frame_count - 1)
    wanted = sorted(set(idx.tolist()))
    got: dict[int, np.ndarray] = {}
    cap = _open(path)
    try:
        i = 0
        last: np.ndarray | None = None
        last_i = -1
        for target in wanted:
            while i <= target:
                if not cap.grab():
                    break
                if i == target:
                    ok, frame = cap.retrieve()
                    if ok:
                        last, last_i = frame, i
                i += 1
            if last is not None and last_i == target:
                got[target] = last
            elif last is not None:
                got[target] = last  # the container reported more frames than it holds: repeat the last one
    finally:
        cap.release()
    if not got:
        raise CezsarError(f"{path}: no frame could be decoded (corrupt or truncated video)")
    out = []
    for k in idx.tolist():
        out.append(got.get(k, got[max(got)]))
    return np.stack(out)


def sample_clip(
    path: str | Path,
    fps: float,
    frames: int,
    start: float | None = None,
    end: float | None = None,
    offset: float = 0.5,
) -> np.ndarray:
    """Sample T frames at ``fps`` from [start, end] of a video (the whole video by default)."""
    info = probe(path)
    s = 0.0 if start is None else max(0.0, float(start))
    e = info.duration if end is None else min(float(end), info.duration)
    if e <= s:
        raise CezsarError(f"{path}: segment [{s:.2f}, {e:.2f}] s is empty (video lasts {info.duration:.2f} s)")
    return read_frames(path, sample_times(s, e, fps, frames, offset), info)


def write_video(path: str | Path, frames: np.ndarray | list[np.ndarray], fps: float) -> None:
    """Write BGR uint8 frames as an MP4 (mp4v) file, atomically."""
    from cezsar.atomic import atomic_path

    frames = list(frames)
    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    with atomic_path(path, suffix=".mp4") as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
        if not vw.isOpened():
            raise CezsarError(f"{path}: OpenCV cannot write MP4 video here")
        try:
            for f in frames:
                vw.write(f)
        finally:
            vw.release()
