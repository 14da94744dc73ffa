"""Optional annotated output video (``--output``): the sampled frames of a stream with its scores
and open events drawn on them, written at the sampling rate. One file per stream (with several
sources, ``out.mp4`` becomes ``out.<stream>.mp4``); each is written to a temporary name and renamed
when closed, so a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge.sources import Frame

log = logging.getLogger(__name__)

MAX_SIDE = 640


def output_path(base: Path, stream: str, several: bool) -> Path:
    return base if not several else base.with_name(f"{base.stem}.{stream}{base.suffix or '.mp4'}")


def draw(image: np.ndarray, lines: list[tuple[str, bool]]) -> np.ndarray:
    """Copy of ``image`` (scaled to at most 640 px) with text lines; active lines in red."""
    h, w = image.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    img = cv2.resize(image, (round(w * scale), round(h * scale))) if scale < 1 else image.copy()
    fs = max(0.35, img.shape[0] / 600)
    y = int(18 * fs / 0.5)
    for text, active in lines:
        color = (0, 0, 255) if active else (255, 255, 255)
        cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, fs, color, 1, cv2.LINE_AA)
        y += int(22 * fs / 0.5)
    if any(a for _, a in lines):
        cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), (0, 0, 255), 3)
    return img


class AnnotatedWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self.tmp = self.path.with_name(f".{self.path.name}.part{self.path.suffix or '.mp4'}")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(self.fps), (w, h))
            if not self._writer.isOpened():
                log.error("%s: OpenCV cannot write MP4 here; no annotated output", self.path)
        if self._size is not None and (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size)
        if self._writer is not None and self._writer.isOpened():
            self._writer.write(image)
            self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.frames and self.tmp.exists():
                os.replace(self.tmp, self.path)
            elif self.tmp.exists():
                self.tmp.unlink()


class Annotator:
    """``--output``: one AnnotatedWriter per stream (created at its first frame); each sampled frame
    gets the stream's top four smoothed scores, open events in red."""

    def __init__(self, base: Path, fps: float, several: bool) -> None:
        self.base = Path(base)
        self.fps = fps
        self.several = several
        self.writers: dict[str, AnnotatedWriter] = {}

    def write(
        self,
        frames: Sequence[Frame],
        active: Collection[tuple[str, str]],
        smoothed: Callable[[str], dict[str, float]],
    ) -> None:
        """``active``: the (stream, action) pairs with an open event; ``smoothed(stream)``: action -> score."""
        for f in frames:
            w = self.writers.get(f.stream)
            if w is None:
                w = self.writers[f.stream] = AnnotatedWriter(output_path(self.base, f.stream, self.several), self.fps)
            top = sorted(smoothed(f.stream).items(), key=lambda kv: -kv[1])[:4]
            lines = [(f"{f.stream} t={f.t:.2f}s", False)]
            lines += [(f"{a}: {s:+.3f}", (f.stream, a) in active) for a, s in top]
            w.write(draw(f.image, lines))

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
