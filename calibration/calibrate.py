"""INT8 calibration sets: frames spread over time and scenes, preprocessed exactly as the runtime does.

Sources:
- a video file: frames uniform over its whole duration;
- a folder: its videos (and still images) balanced across files, each file's share uniform over its
  duration; a file that cannot be decoded is skipped and named in the metadata;
- a camera index (``0``) or stream URL (``rtsp://...``): one frame every ``interval`` seconds.

The result is an ``.npz`` with ``frames`` float32 [N, 3, S, S] (the deploy folder's Preprocess) and
metadata: ``sources`` (JSON list), ``preprocess`` (JSON), ``model_hash``, per-frame ``source_index``
and ``times`` (seconds; -1 for still images and camera frames).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess

log = logging.getLogger("cezsar.calibrate")

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_FRAMES = 512
MIN_FRAMES = 32
SEEK_ABOVE = 3000  # videos with more frames are read by seeking (fast, not frame-exact: fine for calibration)


@dataclass
class CalibrationSet:
    frames: np.ndarray  # float32 [N, 3, S, S]
    sources: list[str]
    source_index: np.ndarray  # int32 [N]
    times: np.ndarray  # float32 [N]
    preprocess: dict[str, Any]
    model_hash: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path) -> Path:
        from cezsar import __version__
        from cezsar.atomic import atomic_path

        path = Path(path)
        if path.suffix != ".npz":
            raise CezsarError(f"{path}: the calibration set is an .npz file; name it *.npz")
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(
                tmp,
                frames=self.frames.astype(np.float32, copy=False),
                source_index=self.source_index.astype(np.int32),
                times=self.times.astype(np.float32),
                sources=np.asarray(json.dumps(self.sources)),
                preprocess=np.asarray(json.dumps(self.preprocess)),
                model_hash=np.asarray(self.model_hash),
                skipped=np.asarray(json.dumps(self.skipped)),
                cezsar_version=np.asarray(__version__),
            )
        return path


def load_calibration(path: str | Path, pre: Preprocess | None = None, model_hash: str | None = None) -> CalibrationSet:
    """Read a calibration .npz; with ``pre``, refuse frames of another size or preprocessing."""
    path = Path(path)
    if not path.is_file():
        raise CezsarError(f"{path}: calibration file not found (create it with `cezsar calibrate`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "frames" not in z.files:
                raise CezsarError(f"{path}: not a cezsar calibration set (no 'frames' array)")
            frames = z["frames"]
            n = len(frames)
            meta = {k: str(z[k]) for k in ("sources", "preprocess", "model_hash", "skipped") if k in z.files}
            source_index = z["source_index"] if "source_index" in z.files else np.zeros(n, np.int32)
            times = z["times"] if "times" in z.files else np.full(n, -1.0, np.float32)
    except (OSError, ValueError) as e:
        raise CezsarError(f"{path}: not a readable .npz file ({e})") from None
    if frames.dtype != np.float32 or frames.ndim != 4 or frames.shape[1] != 3:
        raise CezsarError(f"{path}: frames must be float32 [N, 3, S, S], got {frames.dtype} {list(frames.shape)}")
    pre_dict = json.loads(meta["preprocess"]) if "preprocess" in meta else {}
    if pre is not None:
        s = pre.size
        if frames.shape[2:] != (s, s):
            raise CezsarError(
                f"{path}: calibration frames are {frames.shape[2]}x{frames.shape[3]}, the model takes {s}x{s}; "
                "rebuild the set with `cezsar calibrate --deploy` for this deploy folder"
            )
        if pre_dict:
            try:
                theirs = Preprocess.from_dict(pre_dict)
            except (KeyError, TypeError, ValueError):
                theirs = None
            if theirs is not None and (
                theirs.resize != pre.resize
                or theirs.resize_mode != pre.resize_mode
                or not np.allclose(theirs.mean, pre.mean)
                or not np.allclose(theirs.std, pre.std)
            ):
                raise CezsarError(
                    f"{path}: frames were preprocessed differently from the deploy folder "
                    f"({theirs} vs {pre}); rebuild the set with `cezsar calibrate --deploy`"
                )
    if not np.all(np.isfinite(frames)):
        raise CezsarError(f"{path}: frames contain NaN or infinite values")
    mh = meta.get("model_hash", "")
    if model_hash and mh and mh != model_hash:
        log.info("%s: built for another model (%s...); preprocessing matches, using it", path, mh[:12])
    return CalibrationSet(
        frames=frames,
        sources=json.loads(meta.get("sources", "[]")),
        source_index=np.asarray(source_index, np.int32),
        times=np.asarray(times, np.float32),
        preprocess=pre_dict,
        model_hash=mh,
        skipped=json.loads(meta.get("skipped", "[]")),
    )


# -- frame collection ---------------------------------------------------------------------------


def _is_camera(source: str) -> bool:
    return source.isdigit() or source.startswith(("rtsp://", "rtmp://", "http://", "https://", "/dev/video"))


def _list_files(folder: Path) -> list[Path]:
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTS | IMAGE_EXTS
    ]
    return files


def _share(total: int, capacities: Sequence[int]) -> list[int]:
    """Split ``total`` frames over files as evenly as their capacities allow (water filling)."""
    quota = [0] * len(capacities)
    left = total
    open_idx = [i for i, c in enumerate(capacities) if c > 0]
    while left > 0 and open_idx:
        each, extra = divmod(left, len(open_idx))
        given = 0
        still = []
        for k, i in enumerate(open_idx):
            want = each + (1 if k < extra else 0)
            take = min(want, capacities[i] - quota[i])
            quota[i] += take
            given += take
            if quota[i] < capacities[i]:
                still.append(i)
        left -= given
        if given == 0:
            break
        open_idx = still
    return quota


def _uniform_times(duration: float, k: int) -> np.ndarray:
    return (np.arange(k) + 0.5) * (duration / k)


def _read_seek(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    try:
        for i in indices:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, frame = cap.read()
            if ok and frame is not None:
                out.append(frame)
    finally:
        cap.release()
    return out


def _video_frames(path: Path, k: int) -> tuple[list[np.ndarray], list[float]]:
    from cezsar.video import probe, read_frames

    info = probe(path)
    k = min(k, info.frame_count)
    times = _uniform_times(info.duration, k)
    if info.frame_count > SEEK_ABOVE:
        frames = _read_seek(path, [int(t * info.fps) for t in times])
        if len(frames) == k:
            return frames, times.tolist()
    arr = read_frames(path, times, info)  # sequential decode: exact frames
    return list(arr), times.tolist()


def _image_frame(path: Path) -> np.ndarray | None:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


def _capacity(path: Path) -> int:
    if path.suffix.lower() in IMAGE_EXTS:
        return 1
    from cezsar.video import probe

    return probe(path).frame_count


def _from_files(files: list[Path], n: int) -> tuple[list[np.ndarray], list[int], list[float], list[str], list[str]]:
    usable, caps, skipped = [], [], []
    for f in files:
        try:
            c = _capacity(f)
        except CezsarError as e:
            log.warning("skipping %s", e)
            skipped.append(str(f))
            continue
        usable.append(f)
        caps.append(c)
    quota = _share(n, caps)
    frames: list[np.ndarray] = []
    index: list[int] = []
    times: list[float] = []
    sources: list[str] = []
    for f, q in zip(usable, quota, strict=True):
        if q <= 0:
            continue
        if f.suffix.lower() in IMAGE_EXTS:
            img = _image_frame(f)
            got, ts = ([img], [-1.0]) if img is not None else ([], [])
        else:
            try:
                got, ts = _video_frames(f, q)
            except CezsarError as e:
                log.warning("skipping %s", e)
                got, ts = [], []
        if not got:
            skipped.append(str(f))
            continue
        sources.append(str(f))
        frames.extend(got)
        index.extend([len(sources) - 1] * len(got))
        times.extend(ts)
    return frames, index, times, sources, skipped


def _from_camera(source: str, n: int, interval: float, timeout: float) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        cap.release()
        raise CezsarError(f"camera {source}: cannot be opened (no such device, busy, or no permission)")
    frames: list[np.ndarray] = []
    start = time.monotonic()
    last = -float("inf")
    try:
        while len(frames) < n and time.monotonic() - start < timeout:
            ok = cap.grab()
            if not ok:
                if frames:
                    break
                time.sleep(0.05)
                continue
            now = time.monotonic()
            if now - last >= interval:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    frames.append(frame)
                    last = now
    finally:
        cap.release()
    return frames


def build_calibration_set(
    source: str | Path,
    out: str | Path | None = None,
    deploy_dir: str | Path | None = None,
    preprocess: Preprocess | None = None,
    frames: int = DEFAULT_FRAMES,
    min_frames: int = MIN_FRAMES,
    interval: float = 0.5,
    timeout: float | None = None,
) -> CalibrationSet:
    """Collect up to ``frames`` frames from ``source``, preprocess them as the runtime does, save to ``out``.

    Preprocessing comes from ``deploy_dir``'s manifest (or ``preprocess``). Refuses (CezsarError)
    when fewer than ``min_frames`` frames are found; nothing is written then.
    """
    model_hash = ""
    if deploy_dir is not None:
        from cezsar.manifest import load_manifest

        m = load_manifest(deploy_dir)
        preprocess = m.pre
        model_hash = m.model_hash
    if preprocess is None:
        raise CezsarError("calibration needs the deploy folder (--deploy) to preprocess frames as the runtime does")
    if frames < 1 or min_frames < 1:
        raise CezsarError(f"--frames {frames} / --min-frames {min_frames}: must be >= 1")
    if frames < min_frames:
        raise CezsarError(f"--frames {frames} is below the minimum of {min_frames} calibration frames")
    src = str(source)
    skipped: list[str] = []
    if _is_camera(src) and not Path(src).exists():
        raw = _from_camera(src, frames, interval, timeout if timeout is not None else interval * frames + 10.0)
        index, times, sources = [0] * len(raw), [-1.0] * len(raw), [f"camera:{src}"]
    else:
        p = Path(src)
        if p.is_dir():
            files = _list_files(p)
            if not files:
                raise CezsarError(f"{p}: no video or image files in this folder")
        elif p.is_file():
            files = [p]
        else:
            raise CezsarError(f"{p}: calibration source not found (a video, a folder, or a camera index)")
        raw, index, times, sources, skipped = _from_files(files, frames)
    if len(raw) < min_frames:
        raise CezsarError(
            f"{src}: found {len(raw)} usable frames, need at least {min_frames} for INT8 calibration "
            "(add footage, or lower --min-frames at your own risk)"
        )
    try:
        x = preprocess(raw)
    except ValueError as e:
        raise CezsarError(f"{src}: a frame cannot be preprocessed ({e})") from None
    cal = CalibrationSet(
        frames=x,
        sources=sources,
        source_index=np.asarray(index, np.int32),
        times=np.asarray(times, np.float32),
        preprocess=preprocess.to_dict(),
        model_hash=model_hash,
        skipped=skipped,
    )
    if out is not None:
        cal.save(out)
    log.info("calibration: %d frames from %d source(s), %d skipped", len(cal), len(sources), len(skipped))
    return cal
