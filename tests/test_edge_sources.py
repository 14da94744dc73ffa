from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from cezsar.video import SourceSpec, parse_source
from edge.sources import Frame, FrameQueue, Source
from tests.helpers.video import FakeCamera, frame_index, write_index_video

PRE = Preprocess(size=32, resize=32)


def frame_id(f: Frame) -> int:
    return frame_index(f.image)


def test_parse_source_kinds_and_names(tmp_path: Path) -> None:
    assert parse_source("0", "s0") == SourceSpec("s0", "camera", "0")
    assert parse_source("door=rtsp://10.0.0.5/live?a=b", "s1") == SourceSpec("door", "url", "rtsp://10.0.0.5/live?a=b")
    assert parse_source("rtsp://h/x?a=b", "s1").kind == "url" and parse_source("rtsp://h/x?a=b", "s1").name == "s1"
    gst = parse_source("videotestsrc ! video/x-raw,width=64 ! appsink", "s2")
    assert gst.kind == "gstreamer" and gst.name == "s2"
    assert parse_source("cam1=videotestsrc ! appsink", "x").name == "cam1"
    f = tmp_path / "a=b.mp4"
    f.write_bytes(b"")
    assert parse_source(str(f), "s3") == SourceSpec("s3", "file", str(f))  # an existing path wins over NAME=
    with pytest.raises(CezsarError, match="stream name"):
        parse_source("x", "bad name")


def test_queue_drops_oldest_and_counts() -> None:
    q = FrameQueue(1, drop=True)
    for i in range(5):
        q.put(Frame("s", i, float(i), 0.0, None, None))  # type: ignore[arg-type]
    got = q.drain()
    assert [f.index for f in got] == [4] and q.dropped == 4


def test_queue_backpressure_waits_for_the_consumer() -> None:
    q = FrameQueue(2, drop=False)
    done = threading.Event()

    def produce() -> None:
        for i in range(6):
            q.put(Frame("s", i, float(i), 0.0, None, None))  # type: ignore[arg-type]
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set() and len(q) == 2  # blocked on a full queue
    seen: list[int] = []
    while len(seen) < 6:
        seen += [f.index for f in q.drain()]
        time.sleep(0.01)
    assert seen == list(range(6)) and q.dropped == 0


def test_slow_consumer_gets_only_the_newest_frame() -> None:
    cam = FakeCamera(rate=200.0)
    src = Source(SourceSpec("cam", "camera", "0"), PRE, fps=50.0, opener=lambda s: cam)
    src.start()
    try:
        time.sleep(0.5)  # a consumer that did not look for half a second
        got = src.queue.drain()
        assert len(got) == 1  # no backlog
        assert src.dropped > 5
        newest = got[0]
        assert frame_id(newest) >= FakeCamera.counter - 8  # and it is (nearly) the latest frame
        assert newest.tensor.shape == (3, 32, 32)
        assert abs(newest.t - time.time()) < 1.0  # live: wall-clock capture time
    finally:
        src.stop()
        src.join(2)


def test_live_source_reconnects_with_backoff() -> None:
    opens: list[float] = []

    def opener(spec: SourceSpec) -> FakeCamera:
        opens.append(time.monotonic())
        if len(opens) <= 2:
            return FakeCamera(opened=False)  # camera not there yet
        return FakeCamera(rate=100.0, fail_after=5 if len(opens) == 3 else None)  # then it stops once

    src = Source(SourceSpec("cam", "camera", "0"), PRE, fps=20.0, opener=opener, backoff_start=0.05, backoff_max=0.2)
    src.start()
    try:
        deadline = time.time() + 5
        while time.time() < deadline and not (len(opens) >= 4 and src.stats.state == "running"):
            time.sleep(0.02)
            src.queue.drain()
        assert len(opens) >= 4 and src.stats.state == "running"
        assert src.stats.reconnects >= 3
        assert opens[1] - opens[0] >= 0.04 and opens[2] - opens[1] >= 0.09  # backoff doubles
    finally:
        src.stop()
        src.join(2)
    assert src.stats.state == "stopped"


def test_file_no_realtime_delivers_every_sampled_frame_with_media_time(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.avi", 40, fps=8.0)
    src = Source(SourceSpec("f", "file", str(video)), PRE, fps=4.0, realtime=False, queue_capacity=2)
    src.start()
    got: list[Frame] = []
    deadline = time.time() + 10
    while not src.finished and time.time() < deadline:
        time.sleep(0.05)  # a slow consumer: the reader must wait, not drop
        got += src.queue.drain()
    got += src.queue.drain()
    assert src.stats.state == "finished"
    assert [f.t for f in got] == [i / 8.0 for i in range(0, 40, 2)]
    assert [frame_id(f) for f in got] == list(range(0, 40, 2))
    assert src.dropped == 0


def test_file_realtime_plays_at_its_pace_and_drops(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.avi", 24, fps=8.0)  # 3 s
    src = Source(SourceSpec("f", "file", str(video)), PRE, fps=8.0, realtime=True)
    t0 = time.time()
    src.start()
    got: list[Frame] = []
    while not src.finished and time.time() - t0 < 10:
        time.sleep(0.4)  # slower than the stream
        got += src.queue.drain()
    elapsed = time.time() - t0
    assert 2.5 <= elapsed <= 6
    assert src.dropped > 5 and len(got) + src.dropped == 24
    assert [f.t for f in got] == sorted(f.t for f in got)


def test_missing_file_fails_and_other_streams_go_on(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "v.avi", 16, fps=8.0)
    bad = Source(SourceSpec("bad", "file", str(tmp_path / "nope.mp4")), PRE, fps=4.0, realtime=False)
    good = Source(SourceSpec("good", "file", str(video)), PRE, fps=4.0, realtime=False)
    bad.start()
    good.start()
    got: list[Frame] = []
    deadline = time.time() + 10
    while not (bad.finished and good.finished) and time.time() < deadline:
        time.sleep(0.02)
        got += good.queue.drain()
    assert bad.stats.state == "failed" and "not found" in (bad.stats.error or "")
    assert good.stats.state == "finished" and len(got) == 8
