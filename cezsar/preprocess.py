"""Frame preprocessing shared by training, calibration and the edge runtime.

One definition, so that what the model saw in training is exactly what it sees
at the edge: BGR uint8 frames (as OpenCV decodes them) -> RGB, resize the shorter
side to ``resize``, centre-crop ``size`` x ``size``, scale to [0, 1], normalise
with ``mean``/``std``, channels first. Resizing runs per frame; the rest is one
vectorised numpy pass over the whole batch.

``resize_mode`` "squash" instead resizes the whole frame to ``size`` x ``size`` (no crop, aspect
ratio not kept), as SigLIP's processor does. ``interpolation`` "auto" is area when shrinking and
bilinear when enlarging; "bilinear", "bicubic", "nearest", "lanczos", "area" and "hamming" name the
filter a pretrained checkpoint's processor asks for.

``resampler`` says whose resize runs: "opencv" (the synthetic-world models' own preprocessing; no
antialiasing when shrinking with bilinear/bicubic kernels) or "pil" (Pillow's ``Image.resize``, which
antialiases: the resize of the Hugging Face PIL image processors, ``CLIPImageProcessorPil`` and
``SiglipImageProcessorPil``, so pretrained towers see the pixels their processor makes). ``size_rounding``
says how the long side is sized from the short one: "round" (to the nearest pixel) or "truncate" (towards
zero, as transformers' ``get_resize_output_image_size`` does: 224 * 768 / 576 = 298.67 -> 298).

Manifests without these keys load as "shorter" + "auto" + "opencv" + "round", the behaviour before
they existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.opencv import cv2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("shorter", "squash")
RESAMPLERS = ("opencv", "pil")
SIZE_ROUNDINGS = ("round", "truncate")
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}
# Pillow's filter numbers (PIL.Image.Resampling), which are also the ``resample`` values of a Hugging
# Face preprocessor_config.json. "area" is Pillow's BOX filter.
PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "area": 4, "hamming": 5}


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise CezsarError(
            "this model's preprocessing resizes with Pillow (its checkpoint's processor does): pip install pillow "
            "(it comes with cezsar's edge and train extras)"
        ) from None
    return Image


@dataclass(frozen=True)
class Preprocess:
    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    resize_mode: str = "shorter"
    interpolation: str = "auto"
    resampler: str = "opencv"
    size_rounding: str = "round"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r}: expected one of {', '.join(RESIZE_MODES)}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler {self.resampler!r}: expected one of {', '.join(RESAMPLERS)}")
        if self.size_rounding not in SIZE_ROUNDINGS:
            raise ValueError(f"size_rounding {self.size_rounding!r}: expected one of {', '.join(SIZE_ROUNDINGS)}")
        kernels = PIL_FILTERS if self.resampler == "pil" else INTERPOLATIONS
        if not (self.interpolation in kernels or (self.interpolation == "auto" and self.resampler == "opencv")):
            known = ("" if self.resampler == "pil" else "auto or ") + "one of " + ", ".join(kernels)
            raise ValueError(f"interpolation {self.interpolation!r} with resampler {self.resampler}: expected {known}")
        if self.size <= 0 or self.resize <= 0:
            raise ValueError(f"size {self.size} and resize {self.resize} must be positive")
        if self.size_rounding == "truncate" and self.resize_mode == "shorter" and self.size > self.resize:
            raise ValueError(f"crop size {self.size} is larger than the resized shorter side {self.resize}")

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
            resampler=str(d.get("resampler", "opencv")),
            size_rounding=str(d.get("size_rounding", "round")),
        )

    def resized_shape(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) of an ``h`` x ``w`` frame after the resize, before the crop."""
        if self.resize_mode == "squash":
            return self.size, self.size
        if self.size_rounding == "truncate":  # transformers' get_resize_output_image_size
            if w <= h:
                return int(self.resize * h / w), self.resize
            return self.resize, int(self.resize * w / h)
        scale = self.resize / min(h, w)
        return max(self.size, round(h * scale)), max(self.size, round(w * scale))

    def crop_uint8(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Resize + centre-crop one BGR frame; returns RGB uint8 (size, size, 3)."""
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] not in (3, 4) or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got shape {frame_bgr.shape} dtype {frame_bgr.dtype}")
        if frame_bgr.shape[2] == 4:
            frame_bgr = frame_bgr[:, :, :3]
        h, w = frame_bgr.shape[:2]
        nh, nw = self.resized_shape(h, w)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        if self.resampler == "pil":
            return self._pil_crop(frame_bgr, nh, nw, top, left)
        interp = self._interp((self.size if self.resize_mode == "squash" else self.resize) < min(h, w))
        resized = cv2.resize(frame_bgr, (nw, nh), interpolation=interp)
        crop = resized[top : top + self.size, left : left + self.size]
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)

    def _pil_crop(self, frame_bgr: np.ndarray, nh: int, nw: int, top: int, left: int) -> np.ndarray:
        """Pillow's resize of the whole frame (as the Hugging Face PIL processors call it), then the crop; RGB out.

        Channels resample independently, so the BGR frame is resized as it is and flipped at the end."""
        image = _pil()
        img = image.fromarray(np.ascontiguousarray(frame_bgr)).resize(
            (nw, nh), PIL_FILTERS[self.interpolation], reducing_gap=None
        )
        out = np.asarray(img)[top : top + self.size, left : left + self.size, ::-1]
        return np.ascontiguousarray(out)

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
