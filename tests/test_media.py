"""Event snapshots and clips: real files, read back with OpenCV."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from cezsar.errors import CezsarError
from edge.media import MARKER, MediaRecorder, MediaResult
from edge.settings import MediaSettings, settings_from

FPS = 10.0


def frame(i: int) -> np.ndarray:
    """Frame i is black with one white 8x8 square at block i mod 192, so a decoded frame (even after lossy
    compression) tells which one it was."""
    img = np.zeros((96, 128, 3), np.uint8)
    b = i % 192
    y, x = (b // 16) * 8, (b % 16) * 8
    img[y : y + 8, x : x + 8] = 255
    return img


def feed(rec: MediaRecorder, first: int, last: int, skip: range = range(0)) -> None:
    for i in range(first, last + 1):
        if i not in skip:
            rec.add_frame("cam1", i / FPS, frame(i))


def which(img: np.ndarray) -> int:
    blocks = img.mean(axis=2).reshape(12, 8, 16, 8).mean(axis=(1, 3))
    return int(np.argmax(blocks))


def read_clip(path: Path) -> tuple[float, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return fps, frames


def test_snapshot_and_clip_from_pre_roll_to_end(tmp_path: Path) -> None:
    rec = MediaRecorder(MediaSettings(dir=tmp_path / "media", pre_roll=3.0))
    try:
        feed(rec, 0, 50)  # 0 .. 5.0 s
        rec.event_start("e1", "cam1", 5.0)
        feed(rec, 51, 85, skip=range(61, 70))  # 5.1 .. 8.5 s with 0.9 s of frames lost on the way
        res = rec.event_end("e1", end=8.0, peak_time=6.4)
        assert isinstance(res, MediaResult) and not res.written
        assert res.as_message() == {"snapshot": res.snapshot, "clip": res.clip}
        assert res.snapshot == str(tmp_path / "media" / "cam1" / "e1.jpg")
        assert rec.flush(30)
    finally:
        rec.close()
    assert res.written and res.error is None and rec.written == 1
    snap = cv2.imread(str(res.snapshot_path))
    assert snap is not None and snap.shape == (96, 128, 3)
    assert which(snap) == 60  # 6.4 s lies in the gap: the nearest kept frame is 6.0 s (frame 60)

    fps, frames = read_clip(res.clip_path)
    assert fps == pytest.approx(FPS)
    duration = len(frames) / fps
    expected = 8.0 - (5.0 - 3.0)  # pre-roll before the start, to the end
    assert abs(duration - expected) <= 1 / FPS + 1e-9, (duration, expected)
    assert which(frames[0]) == 20  # 2.0 s
    assert which(frames[-1]) == 80  # 8.0 s
    assert which(frames[45]) == 60  # 6.5 s: the gap holds the last frame before it
    assert which(frames[50]) == 70  # 7.0 s: frames again
    # written atomically: no temporary left beside them
    assert sorted(p.name for p in (tmp_path / "media" / "cam1").iterdir()) == ["e1.jpg", "e1.mp4"]


def test_urls_with_a_base_url_and_unknown_or_empty_events(tmp_path: Path) -> None:
    with_url = MediaRecorder(MediaSettings(dir=tmp_path), base_url="http://127.0.0.1:8080/media/")
    try:
        assert with_url.event_end("never-started", 1.0) is None
        with_url.event_start("e2", "cam1", 1.0)  # no frame at all
        assert with_url.event_end("e2", 2.0) is None
        feed(with_url, 0, 20)
        with_url.event_start("e3", "cam1", 1.5)
        res = with_url.event_end("e3", 2.0)
        assert res is not None
        assert res.snapshot == "http://127.0.0.1:8080/media/cam1/e3.jpg"
        assert res.clip == "http://127.0.0.1:8080/media/cam1/e3.mp4"
    finally:
        with_url.close()
    assert res.clip_path.is_file()


def test_ring_and_clip_stay_bounded(tmp_path: Path) -> None:
    rec = MediaRecorder(MediaSettings(dir=tmp_path, pre_roll=1.0, max_clip=2.0), start_delay=1.0)
    try:
        feed(rec, 0, 300)
        assert len(rec._rings["cam1"]) <= 2.0 * FPS + 1
        rec.event_start("long", "cam1", 30.0)
        feed(rec, 301, 600)
        res = rec.event_end("long", 60.0)
        assert res is not None and res.truncated and res.frames <= 2.0 * FPS + 1
    finally:
        rec.close()
    fps, frames = read_clip(res.clip_path)
    assert len(frames) / fps <= 2.0 + 1 / FPS + 1e-9


def _event(rec: MediaRecorder, name: str, first: int) -> MediaResult:
    feed(rec, first, first + 20)
    rec.event_start(name, "cam1", (first + 10) / FPS)
    res = rec.event_end(name, (first + 20) / FPS)
    assert res is not None
    return res


def test_retention_removes_oldest_and_expired_and_only_its_own_files(tmp_path: Path) -> None:
    month = time.time() - 30 * 86400
    old = tmp_path / "cam0" / f"{'0' * 31}1.mp4"  # an expired file of this recorder's naming scheme
    old.parent.mkdir()
    old.write_bytes(b"x" * 100)
    # a user's own files in the same folder: old and large, never this recorder's to remove
    mine = [tmp_path / "beach.jpg", tmp_path / "cam0" / "wedding.mp4", tmp_path / "cam1" / "e1.mp4"]
    for p in mine:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"y" * 200_000)
        os.utime(p, (month, month))
    (tmp_path / "cam0" / "link.mp4").symlink_to(mine[0])
    rec = MediaRecorder(MediaSettings(dir=tmp_path, pre_roll=1.0, max_age=7 * 86400, max_bytes=1))
    try:
        a = _event(rec, uuid.uuid4().hex, 0)
        assert rec.flush(30)
        assert not old.exists()  # expired at start
        assert (tmp_path / MARKER).is_file()
        size = a.snapshot_path.stat().st_size + a.clip_path.stat().st_size
        rec.max_bytes = int(2.5 * size)  # room for two events (same frames, same sizes), not three
        b = _event(rec, uuid.uuid4().hex, 0)
        assert rec.flush(30)
        c = _event(rec, uuid.uuid4().hex, 0)
        assert rec.flush(30)
    finally:
        rec.close()
    assert not a.snapshot_path.exists() and not a.clip_path.exists()
    assert all(p.exists() for p in (b.snapshot_path, b.clip_path, c.snapshot_path, c.clip_path))
    assert rec.removed == 3
    assert all(p.read_bytes() == b"y" * 200_000 for p in mine) and (tmp_path / "cam0" / "link.mp4").is_symlink()


def test_writing_never_blocks_the_caller_and_overload_drops(tmp_path: Path) -> None:
    entered, gate = threading.Event(), threading.Event()

    def slow_consumer(res: MediaResult) -> None:  # holds the worker, as a slow disk would
        entered.set()
        gate.wait(30)

    rec = MediaRecorder(MediaSettings(dir=tmp_path, pre_roll=1.0), queue_size=1, on_written=slow_consumer)
    results: list[MediaResult | None] = []
    try:
        results.append(_event(rec, "e1", 0))
        assert entered.wait(30)  # the worker is busy with e1

        def caller() -> None:  # the runtime's loop: must get through even though the writer is stuck
            for name in ("e2", "e3"):
                feed(rec, 0, 20)
                rec.event_start(name, "cam1", 1.0)
                results.append(rec.event_end(name, 2.0))

        t = threading.Thread(target=caller)
        t.start()
        t.join(20)
        assert not t.is_alive(), "event_end waited for the writer"
        assert results[1] is not None and results[2] is None  # e2 queued, e3 dropped (queue of 1)
        assert rec.dropped == 1
        gate.set()
        assert rec.flush(30)
    finally:
        gate.set()
        rec.close()
    assert rec.written == 2 and results[1] is not None and results[1].clip_path.is_file()
    assert not (tmp_path / "cam1" / "e3.mp4").exists()


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CezsarError, match=r"^--media-max-bytes '0': Input should be greater than 0$"):
        settings_from(media=tmp_path, media_max_bytes="0")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CezsarError, match="cannot create"):
        MediaRecorder(MediaSettings(dir=blocker / "sub"))
