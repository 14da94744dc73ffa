"""Fixed-rate frame sampling by capture time.

A source delivers frames at its own rate (a camera at 30 fps, a file at its native rate); the
model was trained on frames sampled at ``fps`` (manifest.fps). The sampler keeps the first frame
at or after each tick of a ``1/fps`` grid in capture time. A gap longer than one period (the
consumer or the camera stalled) restarts the grid at the next frame instead of bursting to catch up.
"""

from __future__ import annotations


class Sampler:
    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"sampling fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.period = 1.0 / self.fps
        self._next: float | None = None
        self.taken = 0
        self.skipped = 0

    def reset(self) -> None:
        """Forget the grid (a reconnected source starts a new timeline)."""
        self._next = None

    def want(self, t: float) -> bool:
        """True when the frame captured at ``t`` (seconds) is the next sample."""
        # a small tolerance: a 8 fps file sampled at 4 fps must take every other frame even when
        # frame times are rounded (index / fps) slightly below the grid
        eps = 1e-6 * max(1.0, abs(t))
        if self._next is None or t + eps >= self._next:
            if self._next is None or t - self._next >= self.period:
                self._next = t + self.period
            else:
                self._next += self.period
            self.taken += 1
            return True
        self.skipped += 1
        return False
