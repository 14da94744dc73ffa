"""Frozen-backbone feature store: per-frame features on disk in shards, read back memory-mapped.

Layout of one store (``CACHE/features-KEY/``)::

    shard-00000.npy    (rows, D) float32 features of the frames of the shard's segments, in order
    shard-00000.json   {"ids": [segment ids], "offsets": [...], "bad": [{video, error, ids}]}
    ...
    index.json         written last: {"key", "dim", "n_segments", "shards": n, "bad": [...]}

``KEY`` hashes the frame encoder's weights, the preprocessing, the sampling (fps, frames, max factor)
and the segment list (paths, sizes, times), so a second run with the same settings finds ``index.json``
and extracts nothing. A shard is made of whole videos (all of a video's segments decode from one open);
its ``.json`` is written after its ``.npy``, atomically, so a killed extraction resumes at the first
shard without one. Memory stays bounded by one shard of features plus the videos in flight in the
DataLoader, whatever the dataset size. Under torch.distributed, rank r extracts shards r, r + W, ...
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cezsar.atomic import atomic_path, write_json
from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json
from cezsar.preprocess import Preprocess
from training.clips import Segment, default_cache_dir, to_tensor
from training.stream import BadVideo, VideoSegments, group_by_video, video_loader

log = logging.getLogger(__name__)

VERSION = "featstore-v1"
DEFAULT_SHARD_SEGMENTS = 512
MAX_SEGMENTS_PER_ITEM = 32  # a video with more segments is decoded in runs of this many (bounded memory)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def store_key(
    encoder: torch.nn.Module, pre: Preprocess, fps: float, frames: int, max_factor: int, segments: Sequence[Segment]
) -> str:
    segs = []
    for s in segments:
        try:
            st = s.video.stat()
            stamp: list[Any] = [st.st_size, int(st.st_mtime)]
        except OSError:
            stamp = [-1, -1]
        segs.append([str(s.video), s.start, s.end, *stamp])
    blob = json.dumps(
        [VERSION, weights_digest(encoder), pre.to_dict(), float(fps), int(frames), int(max_factor), segs],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def plan_shards(segments: Sequence[Segment], shard_segments: int) -> list[list[tuple[str, list[int]]]]:
    """Videos (runs of at most MAX_SEGMENTS_PER_ITEM of their segments), in first-appearance order, packed
    into shards of about ``shard_segments`` segments."""
    shards: list[list[tuple[str, list[int]]]] = [[]]
    count = 0
    for video, ids in group_by_video(segments, max_per_group=MAX_SEGMENTS_PER_ITEM):
        if count and count + len(ids) > shard_segments:
            shards.append([])
            count = 0
        shards[-1].append((video, ids))
        count += len(ids)
    return shards if shards[0] else []


class ShardedBank:
    """Per-frame features of many segments, one memory-mapped array per shard (the ClipBank interface)."""

    def __init__(self, root: Path, n_segments: int, n_shards: int) -> None:
        self.root = root
        self.arrays: list[np.ndarray] = []
        self.where = np.full((n_segments, 3), -1, dtype=np.int64)  # shard, row start, row end
        self.bad: list[dict[str, Any]] = []
        for s in range(n_shards):
            meta = read_json(root / f"shard-{s:05d}.json")
            arr = np.load(root / f"shard-{s:05d}.npy", mmap_mode="r")
            off = meta["offsets"]
            for j, i in enumerate(meta["ids"]):
                self.where[i] = (s, off[j], off[j + 1])
            self.arrays.append(arr)
            self.bad.extend(meta["bad"])

    def __len__(self) -> int:
        return len(self.where)

    def has(self, i: int) -> bool:
        return bool(self.where[i, 0] >= 0)

    @property
    def available(self) -> np.ndarray:
        return np.flatnonzero(self.where[:, 0] >= 0)

    def window(self, i: int, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
        s, a, b = (int(x) for x in self.where[i])
        if s < 0:
            raise CezsarError(f"segment {i} has no features (its video could not be decoded)")
        slack = (b - a) - t
        start = a + (int(rng.integers(0, slack + 1)) if rng is not None and slack > 0 else max(slack, 0) // 2)
        return np.asarray(self.arrays[s][start : start + t])

    def batch(self, idx: Sequence[int] | np.ndarray, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return np.stack([self.window(int(i), t, rng) for i in idx])


@dataclass
class ExtractStats:
    key: str
    root: str
    shards: int
    extracted: int = 0  # shards written by this call
    reused: int = 0  # shards found done
    rows: int = 0
    seconds: float = 0.0
    bad: list[dict[str, Any]] = field(default_factory=list)


class FeatureStore:
    def __init__(
        self,
        segments: Sequence[Segment],
        encoder: torch.nn.Module,
        pre: Preprocess,
        fps: float,
        frames: int,
        max_factor: int = 4,
        cache_dir: Path | None = None,
        shard_segments: int = DEFAULT_SHARD_SEGMENTS,
    ) -> None:
        self.segments = list(segments)
        self.encoder, self.pre, self.fps, self.frames, self.max_factor = encoder, pre, fps, frames, max_factor
        self.key = store_key(encoder, pre, fps, frames, max_factor, self.segments)
        self.root = (cache_dir or default_cache_dir()) / f"features-{self.key}"
        self.plan = plan_shards(self.segments, shard_segments)

    def _shard(self, s: int) -> Path:
        return self.root / f"shard-{s:05d}"

    def is_done(self, s: int) -> bool:
        return self._shard(s).with_suffix(".json").is_file() and self._shard(s).with_suffix(".npy").is_file()

    @property
    def complete(self) -> bool:
        return (self.root / "index.json").is_file()

    @torch.no_grad()
    def extract(
        self,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        batch: int = 256,
        progress: bool = True,
        on_shard: Callable[[int], None] | None = None,
    ) -> ExtractStats:
        """Write this rank's missing shards; returns what was done. ``on_shard(s)`` runs after each write."""
        from rich.progress import Progress

        t0 = time.time()
        stats = ExtractStats(self.key, str(self.root), len(self.plan))
        self.root.mkdir(parents=True, exist_ok=True)
        mine = [s for s in range(len(self.plan)) if s % world == rank]
        todo = [s for s in mine if not self.is_done(s)]
        stats.reused = len(mine) - len(todo)
        if not todo:
            stats.seconds = round(time.time() - t0, 2)
            return stats
        groups = [g for s in todo for g in self.plan[s]]
        shard_of = [s for s in todo for _ in self.plan[s]]
        ds = VideoSegments(self.segments, self.fps, self.frames, self.pre, self.max_factor, groups=groups)
        self.encoder.eval()
        dev = next((p.device for p in self.encoder.parameters()), torch.device("cpu"))
        pending: dict[str, Any] = {}
        remaining = {s: len(self.plan[s]) for s in todo}

        def flush(s: int) -> None:
            feats = pending.pop("feats")
            arr = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
            with atomic_path(self._shard(s).with_suffix(".npy"), suffix=".npy") as tmp:
                np.save(tmp, arr)
            offsets = np.concatenate([[0], np.cumsum(pending.pop("lengths"))]).astype(int).tolist()
            write_json(
                self._shard(s).with_suffix(".json"),
                {"ids": pending.pop("ids"), "offsets": offsets, "bad": pending.pop("bad")},
            )
            stats.extracted += 1
            stats.rows += len(arr)
            if on_shard is not None:
                on_shard(s)

        with Progress(disable=not progress) as bar:
            task = bar.add_task("extracting features", total=len(groups))
            for k, item in enumerate(video_loader(ds, workers)):
                s = shard_of[k]
                if not pending:
                    pending.update(feats=[], lengths=[], ids=[], bad=[])
                if isinstance(item, BadVideo):
                    log.warning("skipping %s: %s", item.video, item.error)
                    rec = {"video": item.video, "error": item.error, "ids": item.ids}
                    pending["bad"].append(rec)
                    stats.bad.append(rec)
                else:
                    for i, err in item.bad:
                        log.warning("skipping segment %d: %s", i, err)
                        rec = {"video": item.video, "error": err, "ids": [i]}
                        pending["bad"].append(rec)
                        stats.bad.append(rec)
                    for i, crops in zip(item.ids, item.crops, strict=True):
                        out = [
                            self.encoder(to_tensor(crops[a : a + batch], self.pre).to(dev)).float().cpu().numpy()
                            for a in range(0, len(crops), batch)
                        ]
                        f = np.concatenate(out).astype(np.float32)
                        pending["feats"].append(f)
                        pending["lengths"].append(len(f))
                        pending["ids"].append(i)
                remaining[s] -= 1
                if remaining[s] == 0:
                    flush(s)
                bar.advance(task)
        stats.seconds = round(time.time() - t0, 2)
        return stats

    def finalize(self) -> None:
        """Write index.json once every shard is done (rank 0, after the others finished)."""
        missing = [s for s in range(len(self.plan)) if not self.is_done(s)]
        if missing:
            raise CezsarError(f"{self.root}: shards {missing[:5]} are not extracted; cannot finalise the store")
        dim = 0
        bad: list[dict[str, Any]] = []
        for s in range(len(self.plan)):
            arr = np.load(self._shard(s).with_suffix(".npy"), mmap_mode="r")
            if arr.size:
                dim = int(arr.shape[1])
            bad.extend(read_json(self._shard(s).with_suffix(".json"))["bad"])
        write_json(
            self.root / "index.json",
            {
                "format": VERSION,
                "key": self.key,
                "dim": dim,
                "n_segments": len(self.segments),
                "shards": len(self.plan),
                "fps": self.fps,
                "frames": self.frames,
                "max_factor": self.max_factor,
                "preprocess": self.pre.to_dict(),
                "bad": bad,
            },
        )

    def open(self) -> ShardedBank:
        if not self.complete:
            raise CezsarError(f"{self.root}: feature store is incomplete (no index.json)")
        bank = ShardedBank(self.root, len(self.segments), len(self.plan))
        if not len(bank.available):
            raise CezsarError("no video of the dataset could be decoded; nothing to train on")
        return bank


def frozen_features(
    encoder: torch.nn.Module,
    segments: Sequence[Segment],
    pre: Preprocess,
    fps: float,
    frames: int,
    max_factor: int = 4,
    cache_dir: Path | None = None,
    workers: int = 0,
    shard_segments: int = DEFAULT_SHARD_SEGMENTS,
    progress: bool = True,
) -> tuple[ShardedBank, ExtractStats]:
    """The frozen-mode hook of training: extract what is missing (split across torch.distributed ranks),
    then open the store memory-mapped."""
    import torch.distributed as dist

    store = FeatureStore(segments, encoder, pre, fps, frames, max_factor, cache_dir, shard_segments)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if store.complete:
        log.info("feature store %s is complete; nothing to extract", store.root)
        stats = ExtractStats(store.key, str(store.root), len(store.plan), reused=len(store.plan))
    else:
        stats = store.extract(rank, world, workers=workers, progress=progress and rank == 0)
        if distributed:
            dist.barrier()
        if rank == 0:
            store.finalize()
        if distributed:
            dist.barrier()
    bank = store.open()
    stats.bad = bank.bad
    return bank, stats
