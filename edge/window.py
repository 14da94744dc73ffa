"""Per-stream ring buffer of the last T per-frame rows (frame features, or preprocessed frames when
the feature cache is off), with each row's capture time, decode wall-clock and frame index."""

from __future__ import annotations

import numpy as np


class FeatureRing:
    def __init__(self, size: int, row_shape: tuple[int, ...], dtype: type = np.float32) -> None:
        if size < 1:
            raise ValueError("ring size must be >= 1")
        self.size = size
        self._rows: np.ndarray = np.zeros((size, *row_shape), dtype=dtype)
        self._t = np.zeros(size, dtype=np.float64)
        self._wall = np.zeros(size, dtype=np.float64)
        self._index = np.zeros(size, dtype=np.int64)
        self.count = 0  # rows pushed since the last clear

    def clear(self) -> None:
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self.size

    def push(self, row: np.ndarray, t: float, wall: float, index: int) -> None:
        k = self.count % self.size
        self._rows[k] = row
        self._t[k] = t
        self._wall[k] = wall
        self._index[k] = index
        self.count += 1

    def _order(self) -> np.ndarray:
        n = min(self.count, self.size)
        start = self.count - n
        return (np.arange(start, self.count) % self.size).astype(np.int64)

    def rows(self) -> np.ndarray:
        """The buffered rows, oldest first (a copy)."""
        return self._rows[self._order()]

    def times(self) -> np.ndarray:
        return self._t[self._order()]

    def walls(self) -> np.ndarray:
        return self._wall[self._order()]

    def indices(self) -> np.ndarray:
        return self._index[self._order()]

    @property
    def last_t(self) -> float | None:
        return float(self._t[(self.count - 1) % self.size]) if self.count else None
