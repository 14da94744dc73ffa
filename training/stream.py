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
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cezsar.data.decode import VideoReader, clip_times
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training.clips import Segment, to_tensor

log = logging.getLogger(__name__)


@dataclass
class VideoClips:
    """Decoded crops of some segments of one video: ``crops[j]`` is (n_j, S, S, 3) RGB uint8 of segment ``ids[j]``."""

    video: str
    ids: list[int]
    crops: list[np.ndarray]
    bad: list[tuple[int, str]] = field(default_factory=list)  # segments of the video that failed: (id, error)


@dataclass
class BadVideo:
    video: str
    ids: list[int]
    error: str


def group_by_video(
    segments: Sequence[Segment], ids: Sequence[int] | None = None, max_per_group: int | None = None
) -> list[tuple[str, list[int]]]:
    """[(video, [segment ids])] in first-appearance order of the videos. ``max_per_group`` splits a video
    with many segments into runs of that many (in time order), so one item's memory stays bounded."""
    groups: dict[str, list[int]] = {}
    for i in range(len(segments)) if ids is None else ids:
        groups.setdefault(str(segments[i].video), []).append(int(i))
    if not max_per_group:
        return list(groups.items())
    out: list[tuple[str, list[int]]] = []
    for video, members in groups.items():
        members = sorted(members, key=lambda j: segments[j].start or 0.0) if len(members) > max_per_group else members
        out.extend((video, members[a : a + max_per_group]) for a in range(0, len(members), max_per_group))
    return out


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
        try:
            reader = VideoReader(video)
        except CezsarError as e:
            return BadVideo(video, ids, str(e))
        out = VideoClips(video, [], [])
        with reader:
            for i in sorted(ids, key=lambda j: self.segments[j].start or 0.0):
                s = self.segments[i]
                try:
                    times = clip_times(s.start, s.end, reader.info.duration, self.fps, self.frames, self.max_factor)
                    frames = reader.frames_at(times)
                except CezsarError as e:  # this segment only (past the end, a damaged stretch)
                    out.bad.append((i, f"{video}: {e}"))
                    continue
                out.ids.append(i)
                out.crops.append(np.stack([self.pre.crop_uint8(f) for f in frames]))
        return out


def _identity(x: object) -> object:
    return x


def video_loader(ds: VideoSegments, workers: int = 0, prefetch: int = 2) -> DataLoader:
    """Videos in order, decoded by ``workers`` processes (0: in this process), ``prefetch`` videos ahead each."""
    # an own generator: creating the iterator must not draw from torch's global RNG (dropout, init)
    kw: dict = {
        "num_workers": workers,
        "batch_size": None,
        "collate_fn": _identity,
        "shuffle": False,
        "generator": torch.Generator().manual_seed(0),
    }
    if workers > 0:
        kw.update(prefetch_factor=prefetch, persistent_workers=False)
    return DataLoader(ds, **kw)


@dataclass(frozen=True)
class WindowDraw:
    """The random generator of sample ``i``'s window in an epoch, keyed by (seed, epoch, i), so the draw
    is the same however the samples are split into batches, ranks or workers; None (centred) when not
    training."""

    seed: int
    epoch: int
    train: bool

    def __call__(self, i: int) -> np.random.Generator | None:
        return np.random.default_rng([self.seed, self.epoch, int(i)]) if self.train else None


@dataclass
class ClipBatch:
    """A training/validation batch decoded in a worker: ``inputs`` (B, T, 3, S, S) normalised float32 of
    the segments ``idx`` that decoded; ``bad`` the videos that did not (their segments are dropped)."""

    idx: np.ndarray
    inputs: torch.Tensor
    bad: list[BadVideo]


class ClipBatches(Dataset):
    """Streamed end-to-end batches: item ``k`` decodes the ``k``-th batch of segment ids.

    The segments of a batch are grouped by video, so each video opens once per batch; only the ``T``
    frames of each segment's window are decoded (seeking). The window is drawn as
    :meth:`training.clips.ClipBank.window` draws it from the same generator, so a streamed run and a
    cached one see the same clips: a random window of ``T`` among the (up to ``max_factor * T``)
    sampled frames when training, the centred one otherwise.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        batches: Sequence[np.ndarray],
        fps: float,
        frames: int,
        pre: Preprocess,
        rng_for: WindowDraw,
        max_factor: int = 4,
    ) -> None:
        self.segments, self.batches = list(segments), list(batches)
        self.fps, self.frames, self.pre, self.max_factor = fps, frames, pre, max_factor
        self.rng_for = rng_for

    def __len__(self) -> int:
        return len(self.batches)

    def _window(self, times: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        slack = len(times) - self.frames
        start = int(rng.integers(0, slack + 1)) if rng is not None and slack > 0 else max(slack, 0) // 2
        w = times[start : start + self.frames]
        return np.concatenate([w, np.repeat(w[-1:], self.frames - len(w))]) if len(w) < self.frames else w

    def __getitem__(self, k: int) -> ClipBatch:
        idx = np.asarray(self.batches[k], dtype=np.int64)
        clips: dict[int, np.ndarray] = {}
        bad: list[BadVideo] = []
        for video, ids in group_by_video(self.segments, idx.tolist()):
            try:
                r = VideoReader(video)
            except CezsarError as e:
                bad.append(BadVideo(video, ids, str(e)))
                continue
            with r:
                for i in sorted(ids, key=lambda j: self.segments[j].start or 0.0):
                    s = self.segments[i]
                    try:
                        times = clip_times(s.start, s.end, r.info.duration, self.fps, self.frames, self.max_factor)
                        frames = r.frames_at(self._window(times, self.rng_for(i)))
                    except CezsarError as e:  # this segment only
                        bad.append(BadVideo(video, [i], str(e)))
                        continue
                    clips[i] = np.stack([self.pre.crop_uint8(f) for f in frames])
        kept = np.array([i for i in idx.tolist() if i in clips], dtype=np.int64)
        if len(kept):
            crops = np.stack([clips[i] for i in kept.tolist()])
            inputs = to_tensor(crops, self.pre)
        else:
            inputs = torch.zeros((0, self.frames, 3, self.pre.size, self.pre.size))
        return ClipBatch(kept, inputs, bad)


def batch_loader(ds: ClipBatches, workers: int = 0, prefetch: int = 2) -> DataLoader:
    """Batches in order, decoded ``prefetch`` batches ahead by each of ``workers`` processes."""
    # an own generator: creating the iterator must not draw from torch's global RNG (dropout, init)
    kw: dict = {
        "num_workers": workers,
        "batch_size": None,
        "collate_fn": _identity,
        "shuffle": False,
        "generator": torch.Generator().manual_seed(0),
    }
    if workers > 0:
        kw.update(prefetch_factor=prefetch)
    return DataLoader(ds, **kw)
