"""Streamed clip loading for torch DataLoaders: segments grouped by video, decoded by seeking.

:class:`VideoSegments` is a map-style dataset whose item is one *video*: all the segments of it that
the run needs, decoded from one open with :mod:`cezsar.data.decode` and cropped by the model's
preprocessing. Decoding happens in the DataLoader's worker processes. A video that cannot be
decoded comes back as a :class:`BadVideo` (never an exception), so one corrupt file does not end a
run; the caller logs and reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Dataset

from cezsar.data.decode import decode_segments
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training.clips import Segment

log = logging.getLogger(__name__)


@dataclass
class VideoClips:
    """Decoded crops of some segments of one video: ``crops[j]`` is (n_j, S, S, 3) RGB uint8 of segment ``ids[j]``."""

    video: str
    ids: list[int]
    crops: list[np.ndarray]


@dataclass
class BadVideo:
    video: str
    ids: list[int]
    error: str


def group_by_video(segments: Sequence[Segment], ids: Sequence[int] | None = None) -> list[tuple[str, list[int]]]:
    """[(video, [segment ids])] in first-appearance order of the videos."""
    groups: dict[str, list[int]] = {}
    for i in range(len(segments)) if ids is None else ids:
        groups.setdefault(str(segments[i].video), []).append(int(i))
    return list(groups.items())


class VideoSegments(Dataset):
    """Item ``k``: the segments of the ``k``-th video group, decoded and cropped (or a :class:`BadVideo`)."""

    def __init__(
        self,
        segments: Sequence[Segment],
        fps: float,
        frames: int,
        pre: Preprocess,
        max_factor: int = 4,
        groups: list[tuple[str, list[int]]] | None = None,
    ) -> None:
        self.segments = list(segments)
        self.fps, self.frames, self.pre, self.max_factor = fps, frames, pre, max_factor
        self.groups = groups if groups is not None else group_by_video(self.segments)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, k: int) -> VideoClips | BadVideo:
        video, ids = self.groups[k]
        spans = [(self.segments[i].start, self.segments[i].end) for i in ids]
        try:
            clips = decode_segments(video, spans, self.fps, self.frames, self.max_factor)
        except CezsarError as e:
            return BadVideo(video, ids, str(e))
        return VideoClips(video, ids, [np.stack([self.pre.crop_uint8(f) for f in c]) for c in clips])


def _identity(x: object) -> object:
    return x


def video_loader(ds: VideoSegments, workers: int = 0, prefetch: int = 2) -> DataLoader:
    """Videos in order, decoded by ``workers`` processes (0: in this process), ``prefetch`` videos ahead each."""
    kw: dict = {"num_workers": workers, "batch_size": None, "collate_fn": _identity, "shuffle": False}
    if workers > 0:
        kw.update(prefetch_factor=prefetch, persistent_workers=False)
    return DataLoader(ds, **kw)
