"""Decoded, preprocessed training clips cached on disk, and per-frame features of a frozen backbone.

Each caption record becomes a short run of frames sampled at the model's rate over its segment
(up to ``4 * T`` frames, at least ``T``); training takes a random contiguous window of ``T`` of them
(temporal augmentation), evaluation the centred one. Frames are stored as RGB uint8 crops, so
decoding and resizing happen once per dataset, not once per epoch. In frozen-backbone mode the
crops are turned into per-frame features once, and head training never touches pixels again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cezsar.atomic import atomic_path
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from cezsar.video import sample_clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    video: Path
    start: float | None
    end: float | None


@dataclass
class ClipBank:
    """Frames (or features) of many clips, concatenated; clip i is data[offsets[i]:offsets[i+1]]."""

    data: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def window(self, i: int, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        slack = (b - a) - t
        start = a + (int(rng.integers(0, slack + 1)) if rng is not None and slack > 0 else max(slack, 0) // 2)
        return self.data[start : start + t]

    def batch(self, idx: Sequence[int] | np.ndarray, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return np.stack([self.window(i, t, rng) for i in idx])


def default_cache_dir() -> Path:
    return Path(os.environ.get("CEZSAR_CACHE", Path.home() / ".cache" / "cezsar"))


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def frames_for(seg: Segment, fps: float, t: int, pre: Preprocess, max_factor: int = 4) -> np.ndarray:
    from cezsar.video import probe

    info = probe(seg.video)
    start = 0.0 if seg.start is None else seg.start
    end = info.duration if seg.end is None else min(seg.end, info.duration)
    n = int(min(max_factor * t, max(t, np.floor((end - start) * fps))))
    frames = sample_clip(seg.video, fps, n, start, end)
    return np.stack([pre.crop_uint8(f) for f in frames])


def build_bank(
    segments: Sequence[Segment],
    fps: float,
    t: int,
    pre: Preprocess,
    cache_dir: Path | None = None,
    max_factor: int = 4,
    progress: bool = True,
) -> ClipBank:
    """Decode and crop every segment (cached on disk by content key)."""
    stats = [(str(s.video), s.start, s.end, s.video.stat().st_size if s.video.exists() else -1) for s in segments]
    key = _key("frames-v1", stats, fps, t, pre.to_dict(), max_factor)
    cache = (cache_dir or default_cache_dir()) / f"clips-{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return ClipBank(z["data"], z["offsets"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable clip cache %s", cache)

    def work(seg: Segment) -> np.ndarray:
        return frames_for(seg, fps, t, pre, max_factor)

    chunks: list[np.ndarray] = []
    from rich.progress import Progress

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex, Progress(disable=not progress) as bar:
        task = bar.add_task("decoding clips", total=len(segments))
        for arr in ex.map(work, segments):
            chunks.append(arr)
            bar.advance(task)
    if not chunks:
        raise CezsarError("no clips to decode")
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
    bank = ClipBank(np.concatenate(chunks), offsets)
    try:
        with atomic_path(cache, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, data=bank.data, offsets=bank.offsets)
    except OSError as e:
        log.warning("could not write clip cache %s: %s", cache, e)
    return bank


def to_tensor(crops: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """(..., S, S, 3) uint8 RGB crops -> (..., 3, S, S) float32 normalised tensor."""
    lead = crops.shape[:-3]
    flat = crops.reshape(-1, *crops.shape[-3:])
    return torch.from_numpy(pre.normalize(flat)).view(*lead, 3, pre.size, pre.size)


def shift_clips(x: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
    """Translate each clip of ``x`` (B, T, 3, S, S) by its own ``shifts[b] = (dy, dx)`` pixels, every frame
    of a clip alike (motion directions and speeds are kept); uncovered borders repeat the edge pixels."""
    b, t, c, size = x.shape[0], x.shape[1], x.shape[2], x.shape[-1]
    pad = int(np.abs(shifts).max()) if len(shifts) else 0
    if pad == 0:
        return x
    padded = torch.nn.functional.pad(x.reshape(b, t * c, size, size), (pad, pad, pad, pad), mode="replicate")
    crops = [padded[i, :, pad - dy : pad - dy + size, pad - dx : pad - dx + size] for i, (dy, dx) in enumerate(shifts)]
    return torch.stack(crops).view(b, t, c, size, size)


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module, bank: ClipBank, pre: Preprocess, batch: int = 256, progress: bool = True
) -> ClipBank:
    """Run a frozen frame encoder once over every cached frame."""
    from rich.progress import Progress

    encoder.eval()
    out = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("extracting features", total=len(bank.data))
        for i in range(0, len(bank.data), batch):
            out.append(encoder(to_tensor(bank.data[i : i + batch], pre)).float().numpy())
            bar.advance(task, len(out[-1]))
    return ClipBank(np.concatenate(out), bank.offsets)
