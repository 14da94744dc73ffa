"""Event snapshots for MQTT: which file a ``media.<stream>`` message names, and its JPEG bytes bounded
in size (a bigger picture is scaled down and encoded again, as Frigate's MQTT snapshots are).

The media recorder (edge/media.py) writes ``DIR/<stream>/<event id>.jpg`` and names it in the message
as a path, or as a URL ending in ``/<stream>/<event id>.jpg``; only a file of that form inside the
media folder the runtime was given is ever read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from edge.sinks.mqtt.naming import STREAM_LEVEL

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}\.jpg$")
_SHRINK_TRIES = 5


def snapshot_file(media_dir: Path, stream: str, named: str | None) -> Path | None:
    """The snapshot file of stream ``stream`` that a media message names (path or URL), when it is a
    ``<stream>/<name>.jpg`` inside ``media_dir``; else None."""
    if not named or not STREAM_LEVEL.match(stream):
        return None
    name = named.rsplit("/", 1)[-1]
    if not _NAME.match(name):
        return None
    base = media_dir.resolve()
    path = (base / stream / name).resolve()
    return path if path.is_relative_to(base) and path.parent.name == stream else None


def bounded_jpeg(data: bytes, max_bytes: int) -> bytes | None:
    """``data`` when it is at most ``max_bytes``, else the picture scaled down (and re-encoded) until it
    is; None when it cannot be decoded or does not fit."""
    if len(data) <= max_bytes:
        return data
    import numpy as np

    from cezsar.opencv import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    size = len(data)
    for _ in range(_SHRINK_TRIES):
        scale = min(0.9, (max_bytes / size) ** 0.5 * 0.9)
        h, w = img.shape[:2]
        if min(h, w) * scale < 8:
            return None
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        size = len(buf)
        if size <= max_bytes:
            return bytes(buf.tobytes())
    return None
