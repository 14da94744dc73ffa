"""Recorded footage into the history (``cezsar index VIDEO|FOLDER ...``): the same windows, embeddings
and thumbnails as a live run, as fast as the machine decodes and infers.

Each file is one row of ``recordings`` (path, size, modification time, how far it got). Its windows
and that progress are committed in one transaction per batch, so an interrupted run resumes where the
last commit left it; a file that changed since (size or time) is indexed again from the start, and a
finished one is skipped. A reader thread decodes and preprocesses while the main thread runs the
networks. Unix times: the file's start is its modification time minus its duration (``start``
overrides it), and a window's time is that plus its capture time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError
from edge.history import codec
from edge.history import schema as S
from edge.history.store import Batch, HistoryStore, WindowRow

log = logging.getLogger("cezsar.history")

VIDEO_EXT = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv"}
FRAMES_PER_BATCH = 32
THUMB_EVERY = 5.0


def video_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the video files under each folder (sorted); one line for a missing path."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXT)
        elif p.is_file():
            out.append(p)
        else:
            raise CezsarError(f"index {p}: no such file or folder")
    if not out:
        raise CezsarError(f"index {', '.join(map(str, paths))}: no video files")
    return [f.absolute() for f in out]


@dataclass
class FileJob:
    path: Path
    stream: str
    size: int
    mtime: float
    duration: float
    fps: float
    recording: int = 0
    resume: float = 0.0  # capture time already indexed (windows ending at or before it are stored)
    base: float = 0.0


def _frames(
    job: FileJob, sample_fps: float, pre: Any, skip_to: float, out: queue.Queue[Any], stop: threading.Event
) -> None:
    """Reader thread: decode, sample, preprocess -> ``out`` (None at the end, an exception on failure)."""
    import cv2

    from cezsar.video import open_video
    from edge.sampler import Sampler
    from edge.sources import Frame

    try:
        cap = open_video(job.path, "index ")
        sampler, i, k = Sampler(sample_fps), 0, 0
        try:
            while not stop.is_set():
                t = i / job.fps
                if t < skip_to:
                    if not cap.grab():
                        break
                    i += 1
                    continue
                ok, img = cap.read()
                if not ok or img is None:
                    break
                i += 1
                if sampler.want(t):
                    out.put(Frame.from_image(job.stream, k, t, job.base + t, img, pre))
                    k += 1
        finally:
            cap.release()
        out.put(None)
    except Exception as e:  # noqa: BLE001 - handed to the main thread
        out.put(e)
        del cv2


def _prepare(store: HistoryStore, path: Path, stream: str, model_id: int, start: float | None) -> FileJob | None:
    """The file's recordings row (new, reset or resumed); None when it is already done."""
    import sqlalchemy as sa

    from cezsar.video import probe

    info = probe(path)
    st = path.stat()
    job = FileJob(path, stream, st.st_size, st.st_mtime, info.duration, info.fps)
    r = S.recordings
    sid = store.stream_id(stream)
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(r).where(r.c.path == str(path))).first()
        same = (
            row is not None and row.size == job.size and abs(row.mtime - job.mtime) < 1e-3 and row.model_id == model_id
        )
        if row is not None and same and row.done:
            return None
        base = start if start is not None else job.mtime - job.duration
        if row is not None and not same:  # changed (or another model): its old windows go
            conn.execute(S.windows.delete().where(S.windows.c.recording_id == row.id))
            conn.execute(S.thumbnails.delete().where(S.thumbnails.c.recording_id == row.id))
            conn.execute(r.delete().where(r.c.id == row.id))
            row = None
        if row is None:
            values = dict(
                path=str(path),
                size=job.size,
                mtime=job.mtime,
                stream_id=sid,
                model_id=model_id,
                base_time=base,
                duration=job.duration,
                indexed_until=-1.0,
                windows=0,
                done=False,
            )
            job.recording = int(conn.execute(r.insert().values(**values)).inserted_primary_key[0])
            job.resume, job.base = -1.0, base
        else:
            job.recording, job.resume, job.base = int(row.id), float(row.indexed_until), float(row.base_time)
    return job


def _commit(store: HistoryStore, job: FileJob, batch: Batch, model: tuple[str, int], until: float, done: bool) -> None:
    """The batch and the file's progress in one transaction: an interrupted run resumes from here."""
    mid = store.prepare(batch, *model)
    with store.engine.begin() as conn:
        store.write_in(conn, batch, mid)
        values: dict[str, Any] = {"done": done, "windows": S.recordings.c.windows + len(batch.windows)}
        if until > job.resume:
            values["indexed_until"] = until
        conn.execute(S.recordings.update().where(S.recordings.c.id == job.recording).values(**values))


def _jpeg(img: Any, width: int = 160) -> bytes | None:
    import cv2

    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return buf.tobytes() if ok else None


def index_file(
    store: HistoryStore, embedder: Any, manifest: Any, job: FileJob, encoding: str, tick: Callable[[float], None]
) -> int:
    """Index one prepared file; returns its new windows. ``tick(seconds)``: capture time done."""
    window_s = manifest.window / manifest.fps
    skip_to = max(0.0, job.resume - window_s - 1.0 / manifest.fps) if job.resume > 0 else 0.0
    frames: queue.Queue[Any] = queue.Queue(maxsize=4 * FRAMES_PER_BATCH)
    stop = threading.Event()
    reader = threading.Thread(
        target=_frames, args=(job, manifest.fps, manifest.pre, skip_to, frames, stop), name="index-reader", daemon=True
    )
    reader.start()
    embedder.reset(job.stream)
    model = (manifest.model_hash, manifest.joint_dim)
    done_t, last_thumb, added = skip_to, -1e9, 0
    tick(skip_to)
    try:
        for chunk in _chunks(frames):
            batch = Batch(recording=job.recording)
            for f in chunk:
                if f.t - last_thumb >= THUMB_EVERY:
                    last_thumb = f.t
                    jpeg = _jpeg(f.image)
                    if jpeg is not None:
                        batch.thumbnails.append((job.stream, job.base + f.t, jpeg))
            until = job.resume
            for w in embedder.add(chunk):
                if w.end <= job.resume + 1e-9:
                    continue
                batch.windows.append(
                    WindowRow(
                        job.stream,
                        None,
                        job.base + w.end,
                        w.start,
                        w.end,
                        codec.encode_embedding(w.embedding, encoding),
                        recording=job.recording,
                    )
                )
                until = max(until, w.end)
            _commit(store, job, batch, model, until, False)
            job.resume = max(job.resume, until)
            added += len(batch.windows)
            tick(chunk[-1].t - done_t)
            done_t = chunk[-1].t
        _commit(store, job, Batch(recording=job.recording), model, job.resume, True)
        tick(max(0.0, job.duration - done_t))
    finally:
        stop.set()
        while reader.is_alive():
            try:
                frames.get_nowait()
            except queue.Empty:
                reader.join(0.1)
    return added


def _chunks(frames: queue.Queue[Any]) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    while True:
        item = frames.get()
        if isinstance(item, Exception):
            raise item
        if item is None:
            if chunk:
                yield chunk
            return
        chunk.append(item)
        if len(chunk) >= FRAMES_PER_BATCH:
            yield chunk
            chunk = []


def index_footage(
    store: HistoryStore,
    files: Sequence[Path],
    embedder: Any,
    manifest: Any,
    *,
    stream: str | None = None,
    start: float | None = None,
    encoding: str = "int8",
    tick: Callable[[float], None] = lambda s: None,
) -> dict[str, Any]:
    """Index ``files`` (see the module); returns what was done."""
    mid = store.model_id(manifest.model_hash, manifest.joint_dim)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"files": 0, "skipped": 0, "windows": 0, "seconds": 0.0, "video_seconds": 0.0}
    for path in files:
        job = _prepare(store, path, stream or _stream_name(path), mid, start)
        if job is None:
            out["skipped"] += 1
            continue
        out["windows"] += index_file(store, embedder, manifest, job, encoding, tick)
        out["files"] += 1
        out["video_seconds"] += job.duration
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _stream_name(path: Path) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)[:64] or "video"
