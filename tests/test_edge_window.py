from __future__ import annotations

import numpy as np
import pytest

from cezsar.backends.base import Runner
from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import load_manifest
from edge.embedder import WindowEmbedder
from edge.sources import Frame
from edge.window import FeatureRing
from tests.helpers.models import deploy_dir


class RecordingRunner(Runner):
    """Passes through to a real runner and records which frames (by their tag pixel) it saw."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls: list[list[int]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append([int(round(float(v))) for v in x[:, 0, 0, 0]])
        return self.inner(x)


@pytest.fixture(scope="module")
def runners():  # type: ignore[no-untyped-def]
    d = deploy_dir()
    m = load_manifest(d)
    loaded = load_backend("onnxruntime", "fp32", d, m)
    return m, loaded


def make_frame(stream: str, i: int, size: int, rng: np.random.Generator) -> Frame:
    tensor = rng.standard_normal((3, size, size)).astype(np.float32)
    tensor[0, 0, 0] = 1000 * (1 if stream == "a" else 2) + i  # tag: stream and index
    return Frame(stream, i, i / 4.0, 100.0 + i, np.zeros((4, 4, 3), np.uint8), tensor)


def test_ring_keeps_the_last_rows_in_order() -> None:
    r = FeatureRing(3, (2,))
    for i in range(5):
        r.push(np.full(2, i, np.float32), t=float(i), wall=0.0, index=i)
    assert r.full and r.rows()[:, 0].tolist() == [2, 3, 4] and r.times().tolist() == [2, 3, 4]
    r.clear()
    assert not r.full and r.last_t is None


def test_cache_encodes_each_frame_exactly_once_batched_across_streams(runners) -> None:  # type: ignore[no-untyped-def]
    m, loaded = runners
    rec = RecordingRunner(loaded.frame_encoder)
    T, hop = m.window, 2
    emb = WindowEmbedder(rec, loaded.temporal_head, T, hop, m.feature_dim, cache=True)
    rng = np.random.default_rng(0)
    windows = []
    n = T + 3 * hop
    for i in range(n):  # one new frame per stream per step, as the runtime's loop sees them
        windows += emb.add([make_frame("a", i, m.pre.size, rng), make_frame("b", i, m.pre.size, rng)])
    seen = [tag for call in rec.calls for tag in call]
    assert sorted(seen) == sorted([1000 + i for i in range(n)] + [2000 + i for i in range(n)])
    assert len(seen) == len(set(seen))  # every frame exactly once
    assert all(len(c) == 2 for c in rec.calls)  # one call per step, both streams batched together
    # a window once the ring is full, then every hop frames
    a = [w for w in windows if w.stream == "a"]
    assert [w.last_index for w in a] == [T - 1 + k * hop for k in range(4)]
    assert [w.first_index for w in a] == [k * hop for k in range(4)]
    assert a[0].start == 0.0 and a[0].end == (T - 1) / 4.0 and a[0].wall == 100.0 + T - 1
    assert all(abs(np.linalg.norm(w.embedding) - 1) < 1e-4 for w in windows)


def test_no_cache_reencodes_whole_windows_with_the_same_result(runners) -> None:  # type: ignore[no-untyped-def]
    m, loaded = runners
    T, hop = m.window, 2
    rng = np.random.default_rng(1)
    frames = [make_frame("a", i, m.pre.size, rng) for i in range(T + 2 * hop)]
    rec = RecordingRunner(loaded.frame_encoder)
    cached = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, T, hop, m.feature_dim, cache=True)
    plain = WindowEmbedder(rec, loaded.temporal_head, T, hop, m.feature_dim, cache=False)
    w1, w2 = [], []
    for f in frames:
        w1 += cached.add([f])
        w2 += plain.add([f])
    assert len(w1) == len(w2) == 3
    for a, b in zip(w1, w2, strict=True):
        assert np.allclose(a.embedding, b.embedding, atol=1e-5)
    assert plain.frames_encoded == 3 * T and cached.frames_encoded == len(frames)


def test_several_frames_of_one_stream_in_one_call(runners) -> None:  # type: ignore[no-untyped-def]
    m, loaded = runners
    T = m.window
    emb = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, T, 1, m.feature_dim)
    rng = np.random.default_rng(2)
    out = emb.add([make_frame("a", i, m.pre.size, rng) for i in range(T + 2)])
    assert [(w.first_index, w.last_index) for w in out] == [(0, T - 1), (1, T), (2, T + 1)]


def test_time_jump_clears_the_ring(runners) -> None:  # type: ignore[no-untyped-def]
    m, loaded = runners
    T = m.window
    emb = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, T, 1, m.feature_dim, max_gap=5.0)
    rng = np.random.default_rng(3)
    frames = [make_frame("a", i, m.pre.size, rng) for i in range(T - 1)]
    late = make_frame("a", T - 1, m.pre.size, rng)
    late.t += 60.0  # a reconnect gap
    assert emb.add(frames) == [] and emb.add([late]) == []
