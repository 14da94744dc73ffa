from __future__ import annotations

import pytest

from edge.sampler import Sampler


def test_halves_an_8fps_stream_at_4fps() -> None:
    s = Sampler(4.0)
    kept = [i for i in range(16) if s.want(i / 8.0)]
    assert kept == [0, 2, 4, 6, 8, 10, 12, 14]


def test_30fps_camera_at_4fps_keeps_about_4_per_second() -> None:
    s = Sampler(4.0)
    kept = [i / 30.0 for i in range(300) if s.want(100.0 + i / 30.0)]
    assert 39 <= len(kept) <= 41
    gaps = [b - a for a, b in zip(kept, kept[1:], strict=False)]
    assert all(0.2 <= g <= 0.3 + 1e-9 for g in gaps)


def test_gap_restarts_the_grid_instead_of_bursting() -> None:
    s = Sampler(4.0)
    assert s.want(0.0)
    assert s.want(10.0)  # 10 s later: kept, and the grid restarts there
    assert not s.want(10.1)
    assert s.want(10.25)


def test_rejects_bad_rate() -> None:
    with pytest.raises(ValueError):
        Sampler(0)
