"""Zones: named regions of a stream (normalised rectangles or polygons) that actions can require.

One type, :class:`Zone`, serves the site file (``sources[].zones``), the ``--zone`` flag and the
runtime's crop. A zone's crop is recognised as one more stream, ``<stream>@<zone>``
(edge.messages.ZONE_SEP): the runtime crops every frame of the stream to the zone's bounding box (pixels
outside a polygon set to black), preprocesses it like any frame, and hands it to the Recognizer in the
same batch as the full frames, where it gets its own feature ring (the cache and the cross-stream
batching stay as they are). Actions with ``zone: <name>`` are decided only on that crop; the others only
on full frames.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from cezsar.errors import CezsarError
from cezsar.yamlfile import validate_obj, what
from edge.messages import ZONE_SEP, split_stream

__all__ = ["NAME_PATTERN", "Ident", "Zone", "parse_zone_flag", "rect", "split_stream", "zone_stream"]

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # stream and zone names
NAME_RE = re.compile(NAME_PATTERN)
_NUM = r"\s*([0-9]*\.?[0-9]+)\s*"
_ZONE_FLAG = re.compile(rf"^([^:=]+):([^=]+)=({_NUM},{_NUM},{_NUM},{_NUM})$")


def _ident(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a name, got {what(value)}")
    s = str(value).strip()
    if not NAME_RE.match(s):
        raise ValueError(f"invalid name {s!r} (1-64 characters: letters, digits, _ -)")
    return s


# a stream or zone name (an integer such as a camera index is taken as its digits)
Ident = Annotated[str, BeforeValidator(_ident), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})]


class Zone(BaseModel):
    """A named region in normalised coordinates (0..1, x to the right, y down): exactly one of
    ``rect: [x0, y0, x1, y1]`` or ``polygon: [[x, y], ...]`` (3 or more points)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Ident = Field(description="Zone name (actions name it in `zone:`).")
    rect: tuple[float, float, float, float] | None = Field(None, description="[x0, y0, x1, y1], normalised.")
    polygon: tuple[tuple[float, float], ...] | None = Field(
        None, description="[[x, y], ...], normalised, 3 or more points."
    )

    @field_validator("rect")
    @classmethod
    def _rect(cls, v: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if v is None:
            return v
        if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in v):
            raise ValueError(f"coordinates must be normalised to 0..1 (got {list(v)})")
        if not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError(f"x0 must be < x1 and y0 < y1 (got {list(v)})")
        return v

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: tuple[tuple[float, float], ...] | None) -> tuple[tuple[float, float], ...] | None:
        if v is None:
            return v
        if len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 points (got {len(v)})")
        if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for pt in v for c in pt):
            raise ValueError("coordinates must be normalised to 0..1")
        area2 = sum(v[i][0] * v[(i + 1) % len(v)][1] - v[(i + 1) % len(v)][0] * v[i][1] for i in range(len(v)))
        if abs(area2) < 1e-9:
            raise ValueError("the polygon has no area (its points are on one line)")
        return v

    @model_validator(mode="after")
    def _one_shape(self) -> Zone:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("give exactly one of rect: [x0, y0, x1, y1] or polygon: [[x, y], ...]")
        return self

    def points(self) -> list[tuple[float, float]]:
        """The zone as a polygon (a rect as its 4 corners, clockwise from top-left)."""
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        assert self.polygon is not None
        return list(self.polygon)

    @property
    def is_rect(self) -> bool:
        return self.rect is not None

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixel bounding box (x0, y0, x1, y1), at least 2x2, inside the image."""
        pts = self.points()
        xs = [p[0] * width for p in pts]
        ys = [p[1] * height for p in pts]
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
        pts = np.array([[p[0] * w - x0, p[1] * h - y0] for p in self.points()], np.float32)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
        return cv2.bitwise_and(out, out, mask=mask)


def rect(name: str, x0: float, y0: float, x1: float, y1: float) -> Zone:
    """A rectangular zone; raises a one-line CezsarError when it is not a valid one."""
    return validate_obj({"name": name, "rect": [x0, y0, x1, y1]}, Zone, f"zone {name!r}")


def parse_zone_flag(text: str) -> tuple[str, Zone]:
    """``--zone STREAM:NAME=x0,y0,x1,y1`` (normalised) -> (stream, Zone)."""
    m = _ZONE_FLAG.match(text.strip())
    if not m:
        raise CezsarError(f"--zone {text!r}: expected STREAM:NAME=x0,y0,x1,y1 with coordinates in 0..1")
    stream, name = m.group(1).strip(), m.group(2).strip()
    if not NAME_RE.match(stream):
        raise CezsarError(f"--zone {text!r}: invalid stream name {stream!r}")
    coords = [float(m.group(i)) for i in range(4, 8)]
    return stream, validate_obj({"name": name, "rect": coords}, Zone, f"--zone {text!r}")


def zone_stream(stream: str, zone: str) -> str:
    """The Recognizer's name of a zone's crop: ``cam1`` + ``door`` -> ``cam1@door``."""
    return f"{stream}{ZONE_SEP}{zone}"
