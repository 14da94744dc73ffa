"""Pretrained towers see their processor's pixels: cezsar.preprocess against transformers' PIL processors.

The reference is transformers' own ``CLIPImageProcessorPil`` / ``SiglipImageProcessorPil`` (Pillow + numpy,
importable without torchvision), built from the published checkpoints' ``preprocessor_config.json``
(training/random_checkpoints.py writes them as published), fed the RGB frame. The project's side is the
whole road a frame takes: ``preprocess_from_folder`` reads the same file into a ``Preprocess``, which gets
the BGR frame as OpenCV decodes it. Frames are photo-like (smooth colour fields, hard-edged objects, fine
stripes and sensor noise: the content where antialiasing and the long side's rounding show) in 4:3, 16:9,
portrait and odd sizes, and one smaller than the model input (enlarged).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cezsar.opencv import cv2
from cezsar.preprocess import Preprocess

SIZES = [(480, 640), (576, 768), (528, 720), (720, 1280), (1080, 1920), (640, 480), (1280, 720), (199, 301), (120, 160)]


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """A BGR uint8 frame with what photographs have: gradients, edges, fine texture, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    img = np.stack([128 + 90 * np.sin(6.28 * (rng.uniform(0.3, 2) * xx + rng.uniform(0.3, 2) * yy + rng.uniform()))
                    for _ in range(3)], axis=-1)  # fmt: skip
    low = rng.uniform(0, 255, (h // 40 + 2, w // 40 + 2, 3)).astype(np.float32)
    img = 0.5 * img + 0.5 * cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(10):  # hard-edged objects
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        if rng.uniform() < 0.5:
            cv2.rectangle(
                img, (x0, y0), (x0 + int(rng.integers(5, w // 3)), y0 + int(rng.integers(5, h // 3))), colour, -1
            )
        else:
            cv2.circle(img, (x0, y0), int(rng.integers(3, max(4, min(h, w) // 5))), colour, -1)
    y0, x0 = h // 3, w // 3  # 1-2 px stripes: what aliases when shrinking without antialiasing
    img[y0 : y0 + h // 4, x0 : x0 + w // 4] = np.where((np.arange(w // 4) // (1 + seed % 2)) % 2, 230.0, 25.0)[
        None, :, None
    ]
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


FRAMES = [photo(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]


def _folder(tmp_path: Path, kind: str) -> Path:
    from training.random_checkpoints import clip_processor_config, siglip_processor_config

    folder = tmp_path / kind
    folder.mkdir()
    cfg = clip_processor_config(224) if kind == "clip" else siglip_processor_config(224)
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    return folder


def _reference(folder: Path, kind: str):  # type: ignore[no-untyped-def]
    if kind == "clip":
        from transformers import CLIPImageProcessorPil as Processor
    else:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as Processor
    return Processor.from_pretrained(str(folder))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_pixels_equal_the_transformers_pil_processor(tmp_path: Path, kind: str) -> None:
    from training.pretrained import preprocess_from_folder

    folder = _folder(tmp_path, kind)
    pre = preprocess_from_folder(folder)
    assert (pre.resampler, pre.size_rounding, pre.interpolation) == ("pil", "truncate", "bicubic")
    assert pre.resize_mode == ("shorter" if kind == "clip" else "squash")
    proc = _reference(folder, kind)
    mean, std = np.asarray(proc.image_mean, np.float64), np.asarray(proc.image_std, np.float64)
    old = Preprocess(**{**pre.__dict__, "resampler": "opencv", "size_rounding": "round"})  # before issue 24
    worst_old = 0.0
    for bgr in FRAMES:
        ref = np.asarray(proc(images=bgr[:, :, ::-1].copy())["pixel_values"][0], np.float64)  # (3, 224, 224)
        levels = (ref.transpose(1, 2, 0) * std + mean) * 255.0  # back to 0..255, before normalisation
        ours = pre.crop_uint8(bgr).astype(np.float64)
        assert ours.shape == levels.shape == (224, 224, 3)
        # the criterion is <= 1/255 before normalisation; the pixels are in fact the same integers
        assert np.abs(levels - ours).max() < 0.01, f"{bgr.shape}: max {np.abs(levels - ours).max():.3f} levels"
        assert np.abs(pre(bgr[None])[0] - ref).max() < 1e-5  # and normalised, as the model gets them
        worst_old = max(worst_old, float(np.abs(levels - old.crop_uint8(bgr)).max()))
    assert worst_old > 10  # OpenCV's kernel without antialiasing (and the rounded long side) did differ


def test_long_side_is_truncated_as_transformers_does() -> None:
    pre = Preprocess(size=224, resize=224, interpolation="bicubic", resampler="pil", size_rounding="truncate")
    assert pre.resized_shape(576, 768) == (224, 298)  # 298.67: the project rounded to 299 before
    assert pre.resized_shape(768, 576) == (298, 224)
    assert pre.resized_shape(224, 224) == (224, 224)
    assert Preprocess(size=224, resize=224).resized_shape(576, 768) == (224, 299)  # opencv models keep theirs


def test_manifest_keys_and_old_manifests() -> None:
    pre = Preprocess(size=32, resize=32, interpolation="hamming", resampler="pil", size_rounding="truncate")
    d = pre.to_dict()
    assert (d["resampler"], d["size_rounding"]) == ("pil", "truncate") and Preprocess.from_dict(d) == pre
    old = {"size": 64, "resize": 72, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert Preprocess.from_dict(old).resampler == "opencv" and Preprocess.from_dict(old).size_rounding == "round"
    with pytest.raises(ValueError, match="interpolation 'auto' with resampler pil"):
        Preprocess(resampler="pil")
    with pytest.raises(ValueError, match="interpolation 'hamming' with resampler opencv"):
        Preprocess(interpolation="hamming")
    with pytest.raises(ValueError, match="resampler 'skimage'"):
        Preprocess.from_dict({**old, "resampler": "skimage"})
    with pytest.raises(ValueError, match="larger than the resized shorter side"):
        Preprocess(size=64, resize=32, interpolation="bicubic", resampler="pil", size_rounding="truncate")


def test_pil_path_keeps_frame_forms() -> None:
    """Grey and BGRA frames, and the channel order: a pure-blue BGR frame comes out blue in RGB."""
    pre = Preprocess(size=16, resize=16, interpolation="bicubic", resampler="pil", size_rounding="truncate")
    blue = np.zeros((30, 40, 3), np.uint8)
    blue[..., 0] = 200
    out = pre.crop_uint8(blue)
    assert out.shape == (16, 16, 3) and (out[..., 2] == 200).all() and (out[..., :2] == 0).all()
    assert pre.crop_uint8(np.full((30, 40), 7, np.uint8)).shape == (16, 16, 3)
    assert (pre.crop_uint8(np.dstack([blue, np.full((30, 40), 255, np.uint8)])) == out).all()
