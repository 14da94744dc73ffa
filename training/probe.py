"""Sampling defaults that fit the data, for caption sets without dataset.json.

The fixed fallback (1 fps, 16 frames, 224 px) suits minute-long full-resolution videos. On a folder of
3-second 96-px clips it decodes the same few frames over and over and upsamples every frame 2-3x. The
probe reads the container metadata (OpenCV: fps, frame count, width, height; no decoding) of a sample
of the caption set's videos and chooses:

- the window: the median clip duration (segment length, or the video's length), capped at 16 s;
- T: 16 frames for windows over 8 s, else 8, never more than the clip's distinct frames (at least 2);
- the rate: T frames spread over the window (``fps = T / window``), at most the video's own rate;
- the size: the median shorter side, rounded down to a multiple of 16, between 32 and 224; the
  shorter-side resize keeps the usual 8/7 crop margin only when the videos are big enough for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.video import probe as probe_video

log = logging.getLogger(__name__)

MAX_WINDOW_S = 16.0
MAX_SIZE = 224
MIN_SIZE = 32


@dataclass(frozen=True)
class ProbeResult:
    videos_probed: int
    clip_seconds: float  # median clip (segment) duration
    video_fps: float  # median native frame rate
    short_side: int  # median shorter frame side, pixels
    frames: int
    fps: float
    image_size: int
    resize: int

    def defaults(self) -> dict[str, Any]:
        """The keys of dataset.json that the probe fills in."""
        return {"frames": self.frames, "fps": self.fps, "image_size": self.image_size, "resize": self.resize}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"probed {self.videos_probed} video(s): clips ~{self.clip_seconds:.1f} s at {self.video_fps:.0f} fps, "
            f"shorter side ~{self.short_side} px -> T={self.frames} @ {self.fps:g} fps, "
            f"{self.image_size} px (resize {self.resize})"
        )


def choose(clip_seconds: float, video_fps: float, short_side: int) -> tuple[int, float, int, int]:
    """(frames, fps, image_size, resize) for clips of this duration, native rate and shorter side."""
    window = min(max(clip_seconds, 0.1), MAX_WINDOW_S)
    frames = 16 if window > 8.0 else 8
    distinct = max(2, int(math.floor(window * video_fps)))  # frames the clip actually holds
    frames = min(frames, distinct)
    fps = min(frames / window, video_fps)
    fps = float(f"{fps:.3g}")
    size = max(MIN_SIZE, min(MAX_SIZE, (short_side // 16) * 16))
    margin = int(round(size * 8 / 7))
    resize = margin if short_side >= margin else size
    return frames, fps, size, resize


def probe_clips(
    clips: Sequence[tuple[Path, float | None, float | None]], sample: int = 16, seed: int = 0
) -> ProbeResult:
    """Probe up to ``sample`` distinct videos of (video, start, end) clips and choose the defaults."""
    if not clips:
        raise CezsarError("no clips to probe")
    videos = sorted({Path(c[0]) for c in clips})
    rng = np.random.default_rng(seed)
    chosen = [videos[i] for i in sorted(rng.choice(len(videos), size=min(sample, len(videos)), replace=False))]
    infos = {v: probe_video(v) for v in chosen}
    durations = []
    for video, start, end in clips:
        info = infos.get(Path(video))
        if info is None:
            continue
        s = 0.0 if start is None else start
        e = info.duration if end is None else min(end, info.duration)
        durations.append(max(e - s, 0.0))
    clip_s = float(np.median(durations)) if durations else float(np.median([i.duration for i in infos.values()]))
    native = float(np.median([i.fps for i in infos.values()]))
    short = int(np.median([min(i.width, i.height) for i in infos.values()]))
    frames, fps, size, resize = choose(clip_s, native, short)
    res = ProbeResult(len(infos), round(clip_s, 3), round(native, 3), short, frames, fps, size, resize)
    log.info(res.describe())
    return res
