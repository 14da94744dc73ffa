"""Video sources and files with OpenCV: what a source string means, how it is opened, and
fixed-rate frame sampling of files.

A source spec (``cezsar run --source``, calibration) is one of, optionally prefixed ``NAME=`` to
name the stream:

- a camera index: ``0``, ``1`` ...
- a URL: ``rtsp://...``, ``rtsp(s)/http(s)/udp/tcp://...``
- a GStreamer pipeline (contains ``!``; needs an OpenCV built with GStreamer)
- a video file path, or a ``file://`` URL (a file named ``a=b.mp4`` is given as ``NAME=a=b.mp4``)

Secrets in a URL (user info, password-like query values) are registered with cezsar.redact when the
spec is parsed; ``SourceSpec.shown`` is the URL as logs, status and errors may show it.

:func:`parse_source` reads one, :func:`open_capture` opens it and :func:`open_video` opens a video
file: the one place that turns a path into a ``cv2.VideoCapture``.

Sampling follows the paper: T frames at a fixed rate (default 1 fps x 16). When a
segment is shorter than T / rate, the T frames are spread uniformly over it
instead of padding with zeros.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import numpy as np

from cezsar.errors import CezsarError
from cezsar.opencv import cv2
from cezsar.redact import SECRETS, redact_url

STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str  # "camera" | "url" | "gstreamer" | "file"
    target: str

    @property
    def live(self) -> bool:
        return self.kind != "file"

    @property
    def shown(self) -> str:
        """The target as it may be shown: no user info, no password-like query values."""
        return redact_url(self.target)

    @property
    def scheme(self) -> str | None:
        return self.target.split("://", 1)[0].lower() if self.kind == "url" else None

    def describe(self) -> str:
        return f"{self.name}: {self.kind} {self.shown}"


def is_url(text: str) -> bool:
    """``scheme://...`` (rtsp, http, file ...): a URL, never a file path."""
    return bool(_URL.match(text))


def source_kind(target: str) -> str:
    """What a source target is: ``camera`` (an index), ``url``, ``gstreamer`` (has ``!``) or ``file``."""
    if target.isdigit():
        return "camera"
    if is_url(target):
        return "url"
    if "!" in target:
        return "gstreamer"
    return "file"


def parse_source(text: str, default_name: str) -> SourceSpec:
    """``[NAME=]SPEC`` -> SourceSpec (see the module docstring). Reads nothing from the disk: whether a
    file exists is checked where files are opened or allowed."""
    raw = text.strip()
    if not raw:
        raise CezsarError("--source: empty source")
    name = default_name
    head, sep, rest = raw.partition("=")
    if sep and STREAM_NAME.match(head) and rest:
        name, raw = head, rest.strip()
    SECRETS.add_url(raw)
    if not STREAM_NAME.match(name):
        raise CezsarError(f"--source {redact_url(text)!r}: stream name {name!r} must be 1-64 of A-Z a-z 0-9 _ -")
    if raw.lower().startswith("file://"):  # a local file, paced and checked as a file
        return SourceSpec(name, "file", unquote(urlsplit(raw).path) or raw)
    return SourceSpec(name, source_kind(raw), raw)


def default_stream_name(spec_text: str, index: int, taken: set[str]) -> str:
    """A readable default name: the file stem, ``cam<N>``, or ``s<index>``; made unique."""
    raw = spec_text.strip()
    if raw.isdigit():
        base = f"cam{raw}"
    elif not _URL.match(raw) and "!" not in raw:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", Path(raw).stem)[:48] or f"s{index}"
    else:
        base = f"s{index}"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def parse_sources(texts: Sequence[str]) -> list[SourceSpec]:
    """Every ``--source`` of a run: default names, unique names, files that exist."""
    if not texts:
        raise CezsarError("give at least one --source")
    taken: set[str] = set()
    specs = []
    for i, text in enumerate(texts):
        spec = parse_source(text, default_stream_name(text, i, taken))
        if spec.name in taken:
            raise CezsarError(f"--source {redact_url(text)!r}: stream name {spec.name!r} is used twice")
        if spec.kind == "file" and not Path(spec.target).is_file():
            raise CezsarError(f"--source {text!r}: {spec.target}: video file not found")
        taken.add(spec.name)
        specs.append(spec)
    return specs


class Capture(Protocol):
    """The part of cv2.VideoCapture a source uses (the boundary a test fake replaces)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name
    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


def open_video(path: str | Path, what: str = "") -> cv2.VideoCapture:
    """Open a video file; CezsarError (prefixed ``what``, e.g. ``source cam1: ``) when it is missing
    or OpenCV cannot decode it."""
    p = Path(path)
    if not p.is_file():
        raise CezsarError(f"{what}{p}: video file not found")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise CezsarError(f"{what}{p}: cannot be decoded as a video (unreadable, corrupt or no video stream)")
    return cap


def open_capture(spec: SourceSpec) -> Capture:
    """Open a spec with OpenCV. Raises CezsarError for what retrying cannot fix; a camera or URL that
    is not there (yet) comes back not opened."""
    if spec.kind == "camera":
        cap = cv2.VideoCapture(int(spec.target))
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
    if spec.kind == "url":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    if spec.kind == "gstreamer":
        if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise CezsarError(
                f"source {spec.name}: this OpenCV build has no GStreamer support "
                "(install an OpenCV built with GStreamer to use pipelines)"
            )
        return cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
    return open_video(spec.target, f"source {spec.name}: ")


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


def probe(path: str | Path) -> VideoInfo:
    cap = open_video(path)
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
    cap = open_video(path)
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
