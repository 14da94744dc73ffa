"""Sampled frames -> window embeddings: the frame encoder, the per-stream rings and the temporal head.

Cache on (default): each new frame goes through the FrameEncoder exactly once (all new frames of
all streams in one batched call), its feature row is kept in the stream's ring, and every ``hop``
frames the TemporalHead runs on the ring's T rows (windows of all streams in one batched call).
Cache off (``cache=False``, for comparison): the ring keeps preprocessed frames instead and each
window re-encodes all T frames.

A window is due once the ring is full and then every ``hop`` frames. A gap in capture time longer
than ``max_gap`` (a reconnected camera) clears the stream's ring, so no window spans the gap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cezsar.backends.base import Runner, run_batched
from edge.sources import Frame
from edge.window import FeatureRing


@dataclass
class Window:
    stream: str
    start: float  # capture time of the first frame
    end: float  # capture time of the last frame
    frames: int
    first_index: int
    last_index: int
    wall: float  # decode wall-clock of the newest frame (latency reference)
    embedding: np.ndarray  # (J,) L2-normalised

    @property
    def center(self) -> float:
        return 0.5 * (self.start + self.end)


class WindowEmbedder:
    def __init__(
        self,
        frame_encoder: Runner,
        temporal_head: Runner,
        window: int,
        hop: int,
        feature_dim: int,
        cache: bool = True,
        max_gap: float | None = None,
        max_batch: int | None = 64,
    ) -> None:
        if window < 1 or hop < 1:
            raise ValueError("window and hop must be >= 1")
        self.frame_encoder = frame_encoder
        self.temporal_head = temporal_head
        self.window = window
        self.hop = hop
        self.feature_dim = feature_dim
        self.cache = cache
        self.max_gap = max_gap
        self.max_batch = max_batch
        self._rings: dict[str, FeatureRing] = {}
        # counters for the status
        self.frames_in = 0
        self.frames_encoded = 0
        self.windows_out = 0
        self.encoder_seconds = 0.0
        self.head_seconds = 0.0

    def reset(self, stream: str) -> None:
        self._rings.pop(stream, None)

    def _ring(self, stream: str, frame: Frame) -> FeatureRing:
        ring = self._rings.get(stream)
        if ring is None:
            shape = (self.feature_dim,) if self.cache else tuple(frame.tensor.shape)
            ring = self._rings[stream] = FeatureRing(self.window, shape)
        return ring

    def _encode(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = run_batched(self.frame_encoder, x, self.max_batch)
        self.encoder_seconds += time.perf_counter() - t0
        self.frames_encoded += len(x)
        return out

    def add(self, frames: Sequence[Frame]) -> list[Window]:
        """Take new sampled frames (any streams, each stream in capture order); return due windows."""
        if not frames:
            return []
        self.frames_in += len(frames)
        rows: np.ndarray
        if self.cache:
            rows = self._encode(np.stack([f.tensor for f in frames]))
        else:
            rows = np.stack([f.tensor for f in frames])
        # (newest frame, rows, capture time and index of the first frame), snapshotted at push time:
        # later frames of the same call may overwrite the ring
        due: list[tuple[Frame, np.ndarray, float, int]] = []
        for f, row in zip(frames, rows, strict=True):
            ring = self._ring(f.stream, f)
            last = ring.last_t
            if last is not None and (f.t < last or (self.max_gap is not None and f.t - last > self.max_gap)):
                ring.clear()
            ring.push(row, f.t, f.wall, f.index)
            if ring.full and (ring.count - ring.size) % self.hop == 0:
                due.append((f, ring.rows(), float(ring.times()[0]), int(ring.indices()[0])))
        if not due:
            return []
        batch = np.stack([r for _, r, _, _ in due])  # (B, T, D), or (B, T, 3, S, S) without the cache
        if not self.cache:
            b, t = batch.shape[:2]
            batch = self._encode(batch.reshape(b * t, *batch.shape[2:])).reshape(b, t, -1)
        t0 = time.perf_counter()
        emb = run_batched(self.temporal_head, np.ascontiguousarray(batch, dtype=np.float32), self.max_batch)
        self.head_seconds += time.perf_counter() - t0
        out = [
            Window(f.stream, t_first, f.t, self.window, i_first, f.index, f.wall, e)
            for (f, _, t_first, i_first), e in zip(due, emb, strict=True)
        ]
        self.windows_out += len(out)
        return out
