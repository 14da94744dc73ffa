"""INT8 calibration sets on disk: preprocessed frames plus where they came from.

An ``.npz`` with ``frames`` float32 [N, 3, S, S] (the deploy folder's Preprocess) and metadata:
``sources`` (JSON list), ``preprocess`` (JSON), ``model_hash``, per-frame ``source_index`` and ``times``
(seconds; -1 for still images and camera frames). ``cezsar calibrate`` (calibration/) writes it,
``cezsar quantize`` (converter/) reads it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess

log = logging.getLogger("cezsar.calibrate")


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
            pixels = ("resize", "resize_mode", "interpolation", "resampler", "size_rounding")  # all that moves pixels
            if theirs is not None and (
                any(getattr(theirs, k) != getattr(pre, k) for k in pixels)
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
