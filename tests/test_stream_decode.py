"""Seekable streamed decoding (PyAV), the per-video DataLoader dataset and the sharded feature store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
torch = pytest.importorskip("torch")

from cezsar.data.decode import VideoReader, clip_times, decode_from_start, decode_segments  # noqa: E402
from cezsar.errors import CezsarError  # noqa: E402
from cezsar.preprocess import Preprocess  # noqa: E402
from cezsar.video import probe, read_frames, write_video  # noqa: E402
from training.clips import Segment  # noqa: E402
from training.featstore import ShardedBank, frozen_features  # noqa: E402
from training.stream import BadVideo, VideoClips, VideoSegments, video_loader  # noqa: E402


def _video(path: Path, n: int = 240, fps: float = 24.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        f = rng.integers(0, 30, (48, 64, 3), dtype=np.uint8)
        f[:, : (i % 64)] += 120  # a bar whose width encodes the frame index
        frames.append(f)
    write_video(path, frames, fps)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("vids")
    vs = [_video(d / f"v{i}.mp4", seed=i) for i in range(3)]
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return [*vs, d / "corrupt.mp4"]


def test_seeking_reader_returns_the_frames_of_the_sequential_decoder(videos):
    v = videos[0]
    times = np.array([9.5, 0.0, 0.3, 4.01, 4.02, 9.9, 2.0, 7.3])  # out of order, repeats, far jumps
    ref = read_frames(v, times, probe(v))
    with VideoReader(v, seek_threshold=0.5) as r:
        got = r.frames_at(times)
        assert r.seeks >= 2  # backward and far jumps seek
        assert r.decoded < 240  # and do not decode the whole file
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    assert np.array_equal(decode_from_start(v, times), ref)
    with VideoReader(v, seek_threshold=float("inf")) as r:  # what decode_from_start does: no seek at all
        assert np.array_equal(r.frames_at(times), ref) and r.seeks == 0 and r.decoded >= 0.99 * 240


def test_decode_segments_serves_all_segments_from_one_open(videos):
    v = videos[1]
    spans = [(6.0, 9.0), (0.0, 2.0), (2.5, 3.0)]
    clips = decode_segments(v, spans, fps=4.0, frames=4)
    dur = probe(v).duration
    for (a, b), c in zip(spans, clips, strict=True):
        t = clip_times(a, b, dur, 4.0, 4)
        assert np.array_equal(c, read_frames(v, t))


def test_corrupt_video_is_one_clear_error(videos):
    with pytest.raises(CezsarError, match="corrupt.mp4"):
        VideoReader(videos[3])


def test_dataset_groups_segments_by_video_and_reports_bad_videos(videos):
    segs = [Segment(videos[0], 0.0, 3.0), Segment(videos[3], 0.0, 2.0), Segment(videos[0], 5.0, 8.0)]
    ds = VideoSegments(segs, fps=2.0, frames=4, pre=Preprocess(size=32, resize=32))
    assert [ids for _, ids in ds.groups] == [[0, 2], [1]]
    items = list(video_loader(ds, workers=1))
    assert isinstance(items[0], VideoClips) and items[0].ids == [0, 2]
    assert items[0].crops[0].shape[1:] == (32, 32, 3)
    assert isinstance(items[1], BadVideo) and "corrupt.mp4" in items[1].video


def test_a_bad_segment_does_not_lose_the_other_segments_of_its_video(videos):
    segs = [Segment(videos[0], 0.0, 3.0), Segment(videos[0], 50.0, 60.0)]  # the video lasts 10 s
    (item,) = list(video_loader(VideoSegments(segs, fps=2.0, frames=4, pre=Preprocess(size=32, resize=32))))
    assert isinstance(item, VideoClips) and item.ids == [0]
    assert [i for i, _ in item.bad] == [1] and "empty" in item.bad[0][1]


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8))


def test_store_is_reused_and_skips_corrupt_videos(videos, tmp_path):
    segs = [Segment(v, a, a + 3.0) for v in videos for a in (0.0, 4.0)]
    pre = Preprocess(size=32, resize=32)
    bank, st = frozen_features(_encoder(), segs, pre, 2.0, 4, cache_dir=tmp_path, shard_segments=2, progress=False)
    assert st.extracted == 4 and st.reused == 0
    assert [b["video"] for b in st.bad] == [str(videos[3])]
    assert sorted(bank.available.tolist()) == [0, 1, 2, 3, 4, 5]
    assert isinstance(bank.arrays[0], np.memmap)
    w = bank.batch([0, 5], 4)
    assert w.shape == (2, 4, 8)
    bank2, st2 = frozen_features(_encoder(), segs, pre, 2.0, 4, cache_dir=tmp_path, shard_segments=2, progress=False)
    assert st2.extracted == 0 and np.array_equal(bank2.batch([0, 5], 4), w)
    # another sampling is another store
    _, st3 = frozen_features(_encoder(), segs, pre, 3.0, 4, cache_dir=tmp_path, shard_segments=2, progress=False)
    assert st3.extracted == 4


SLOW_EXTRACT = """
import sys, time, torch
from pathlib import Path
from cezsar.preprocess import Preprocess
from training.clips import Segment
from training.featstore import FeatureStore

class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8))
    def forward(self, x):
        time.sleep(float(sys.argv[3]))
        return self.f(x)

vids = sys.argv[2].split(",")
segs = [Segment(Path(v), a, a + 2.0) for v in vids for a in (0.0, 3.0, 6.0)]
pre = Preprocess(size=32, resize=32)
store = FeatureStore(segs, Slow(), pre, 2.0, 4, cache_dir=Path(sys.argv[1]), shard_segments=3)
st = store.extract(progress=False)
store.finalize()
print("EXTRACTED", st.extracted, "REUSED", st.reused)
"""


def test_killed_extraction_resumes_without_redoing_finished_shards(videos, tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(SLOW_EXTRACT)
    vids = ",".join(str(v) for v in videos[:3])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(script), str(cache), vids, "0.4"], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(cache.glob("features-*/shard-00000.json")):
            time.sleep(0.05)
        assert proc.poll() is None, "extraction finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (root,) = list(cache.glob("features-*"))
    done = sorted(p.name for p in root.glob("shard-*.json"))
    assert "shard-00000.json" in done and len(done) < 3 and not (root / "index.json").exists()
    first = (root / "shard-00000.npy").stat()
    out = subprocess.run(
        [sys.executable, str(script), str(cache), vids, "0"], env=env, capture_output=True, text=True, check=True
    )
    assert f"EXTRACTED {3 - len(done)} REUSED {len(done)}" in out.stdout
    again = (root / "shard-00000.npy").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    index = json.loads((root / "index.json").read_text())
    assert index["shards"] == 3 and index["dim"] == 8
    assert len(ShardedBank(root, 9, 3).available) == 9
