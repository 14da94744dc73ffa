"""Zones: named regions of a stream (normalised rectangles or polygons) that actions can require.

A zone's crop is recognised as one more stream, ``<stream>@<zone>`` (edge.actions.ZONE_SEP): the
runtime crops every frame of the stream to the zone's bounding box (pixels outside a polygon set to
black), preprocesses it like any frame, and hands it to the Recognizer in the same batch as the
full frames, where it gets its own feature ring (the cache and the cross-stream batching stay as
they are). Actions with ``zone: <name>`` are decided only on that crop; the others only on full
frames.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cezsar.errors import CezsarError
from edge.actions import STREAM_RE
from edge.messages import ZONE_SEP

_NUM = r"\s*([0-9]*\.?[0-9]+)\s*"
_ZONE_FLAG = re.compile(rf"^([^:=]+):([^=]+)=({_NUM},{_NUM},{_NUM},{_NUM})$")


@dataclass(frozen=True)
class Zone:
    name: str
    points: tuple[tuple[float, float], ...]  # normalised (x, y), x to the right, y down

    def __post_init__(self) -> None:
        if not STREAM_RE.match(self.name):
            raise CezsarError(f"zone {self.name!r}: invalid name (1-64 characters: letters, digits, _ -)")
        if len(self.points) < 3 or any(not (0.0 <= c <= 1.0) for p in self.points for c in p):
            raise CezsarError(f"zone {self.name}: needs 3 or more points with coordinates in 0..1")

    @property
    def is_rect(self) -> bool:
        xs, ys = {p[0] for p in self.points}, {p[1] for p in self.points}
        return len(self.points) == 4 and len(xs) == 2 and len(ys) == 2

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixel bounding box (x0, y0, x1, y1), at least 2x2, inside the image."""
        xs = [p[0] * width for p in self.points]
        ys = [p[1] * height for p in self.points]
        x0, y0 = max(0, int(np.floor(min(xs)))), max(0, int(np.floor(min(ys))))
        x1, y1 = min(width, int(np.ceil(max(xs)))), min(height, int(np.ceil(max(ys))))
        return x0, y0, max(x1, min(width, x0 + 2)), max(y1, min(height, y0 + 2))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The zone's part of a BGR image (a polygon: its bounding box with the outside black)."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self.box(w, h)
        out = image[y0:y1, x0:x1]
        if self.is_rect:
            return out
        mask = np.zeros(out.shape[:2], np.uint8)
        pts = np.array([[p[0] * w - x0, p[1] * h - y0] for p in self.points], np.float32)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        return cv2.bitwise_and(out, out, mask=mask)


def rect(name: str, x0: float, y0: float, x1: float, y1: float) -> Zone:
    if not (x0 < x1 and y0 < y1):
        raise CezsarError(f"zone {name}: rect needs x0 < x1 and y0 < y1 (got {x0}, {y0}, {x1}, {y1})")
    return Zone(name, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


def parse_zone_flag(text: str) -> tuple[str, Zone]:
    """``--zone STREAM:NAME=x0,y0,x1,y1`` (normalised) -> (stream, Zone)."""
    m = _ZONE_FLAG.match(text.strip())
    if not m:
        raise CezsarError(f"--zone {text!r}: expected STREAM:NAME=x0,y0,x1,y1 with coordinates in 0..1")
    stream, name = m.group(1).strip(), m.group(2).strip()
    if not STREAM_RE.match(stream):
        raise CezsarError(f"--zone {text!r}: invalid stream name {stream!r}")
    x0, y0, x1, y1 = (float(m.group(i)) for i in range(4, 8))
    try:
        return stream, rect(name, x0, y0, x1, y1)
    except CezsarError as e:
        raise CezsarError(f"--zone {text!r}: {e}") from None


def zone_stream(stream: str, zone: str) -> str:
    return f"{stream}{ZONE_SEP}{zone}"


def split_stream(name: str) -> tuple[str, str | None]:
    """``cam1@door`` -> (``cam1``, ``door``); ``cam1`` -> (``cam1``, None)."""
    base, _, zone = name.partition(ZONE_SEP)
    return base, zone or None


def zones_by_stream(items: Sequence[tuple[str, Zone]]) -> dict[str, dict[str, Zone]]:
    out: dict[str, dict[str, Zone]] = {}
    for stream, z in items:
        if z.name in out.setdefault(stream, {}):
            raise CezsarError(f"zone {stream}:{z.name} is defined twice")
        out[stream][z.name] = z
    return out
