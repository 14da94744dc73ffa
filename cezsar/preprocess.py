"""Frame preprocessing shared by training, calibration and the edge runtime.

One definition, so that what the model saw in training is exactly what it sees
at the edge: BGR uint8 frames (as OpenCV decodes them) -> RGB, resize the shorter
side to ``resize``, centre-crop ``size`` x ``size``, scale to [0, 1], normalise
with ``mean``/``std``, channels first. Resizing runs per frame in OpenCV; the
rest is one vectorised numpy pass over the whole batch.

``resize_mode`` "squash" instead resizes the whole frame to ``size`` x ``size`` (no crop, aspect
ratio not kept), as SigLIP's processor does. ``interpolation`` "auto" is area when shrinking and
bilinear when enlarging; "bilinear", "bicubic", "nearest", "lanczos" and "area" name the kernel a
pretrained checkpoint's processor asks for (OpenCV's kernels: on strong downscaling they do not
antialias as PIL does, so pixels can differ slightly from the Hugging Face processor's). Manifests
without these keys load as "shorter" + "auto", the behaviour before they existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cezsar.opencv import cv2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("shorter", "squash")
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}


@dataclass(frozen=True)
class Preprocess:
    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    resize_mode: str = "shorter"
    interpolation: str = "auto"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")
        if self.interpolation != "auto" and self.interpolation not in INTERPOLATIONS:
            known = ", ".join(INTERPOLATIONS)
            raise ValueError(f"interpolation {self.interpolation!r}: expected auto or one of {known}")
        if self.size <= 0 or self.resize <= 0:
            raise ValueError(f"size {self.size} and resize {self.resize} must be positive")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["color"] = "RGB"
        d["layout"] = "NCHW"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            size=int(d["size"]),
            resize=int(d["resize"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            resize_mode=str(d.get("resize_mode", "shorter")),
            interpolation=str(d.get("interpolation", "auto")),
        )

    def crop_uint8(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Resize + centre-crop one BGR frame; returns RGB uint8 (size, size, 3)."""
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] not in (3, 4) or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got shape {frame_bgr.shape} dtype {frame_bgr.dtype}")
        if frame_bgr.shape[2] == 4:
            frame_bgr = frame_bgr[:, :, :3]
        h, w = frame_bgr.shape[:2]
        if self.resize_mode == "squash":
            shrink = self.size < min(h, w)
            resized = cv2.resize(frame_bgr, (self.size, self.size), interpolation=self._interp(shrink))
            return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        scale = self.resize / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        interp = self._interp(scale < 1)
        resized = cv2.resize(frame_bgr, (nw, nh), interpolation=interp)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        crop = resized[top : top + self.size, left : left + self.size]
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)

    def _interp(self, shrink: bool) -> int:
        if self.interpolation == "auto":
            return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return INTERPOLATIONS[self.interpolation]

    def normalize(self, crops_rgb: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32 normalised, in one vectorised pass."""
        scale = np.asarray([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        shift = np.asarray([m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=np.float32)
        x = crops_rgb.astype(np.float32) * scale - shift
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, frames_bgr: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """BGR uint8 frames (any size) -> (N, 3, size, size) float32."""
        if len(frames_bgr) == 0:
            return np.zeros((0, 3, self.size, self.size), dtype=np.float32)
        crops = np.stack([self.crop_uint8(f) for f in frames_bgr])
        return self.normalize(crops)
