"""Small helpers shared by export, quantize, calibration and the engine checks (numpy, OpenCV and ONNX protos).

onnxruntime sessions and batched runs come from cezsar.backends (one session factory for the project).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def onnx_opset(model: Any, default: int = 0) -> int:
    """The ONNX (default-domain) opset an onnx ModelProto imports; ``default`` when it imports none."""
    return int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, ...) arrays, computed in float64."""
    a2 = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b2 = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a2.shape != b2.shape:
        raise ValueError(f"shape mismatch {a2.shape} vs {b2.shape}")
    num = (a2 * b2).sum(axis=1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    both_zero = den == 0
    out = np.where(both_zero, 1.0, num / np.where(both_zero, 1.0, den))
    return np.clip(out, -1.0, 1.0)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cosine similarity (0 = same direction)."""
    return 1.0 - cosine_rows(a, b)


def synthetic_frames(n: int, height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """``n`` real-looking BGR uint8 frames: smooth backgrounds with moving coloured shapes and mild noise.

    Used where no footage is at hand (export parity checks, tests); natural images have strong
    spatial correlation, which random normal tensors lack.
    """
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    c0 = rng.uniform(30, 220, size=3)
    c1 = rng.uniform(30, 220, size=3)
    shapes = [
        (
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(-6, 6),
            rng.uniform(-4, 4),
            int(rng.uniform(8, 30)),
            tuple(int(v) for v in rng.uniform(0, 255, size=3)),
            int(rng.integers(2)),
        )
        for _ in range(3)
    ]
    for i in range(n):
        if i and i % 16 == 0:  # a new "scene" every 16 frames
            c0, c1 = rng.uniform(30, 220, size=3), rng.uniform(30, 220, size=3)
        t = (xx / width + yy / height) / 2.0
        img = (c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]).astype(np.float32)
        img += rng.normal(0, 4, size=img.shape).astype(np.float32)
        frame = np.clip(img, 0, 255).astype(np.uint8)
        for x0, y0, vx, vy, r, color, kind in shapes:
            cx, cy = int((x0 + vx * i) % width), int((y0 + vy * i) % height)
            if kind:
                cv2.circle(frame, (cx, cy), r, color, -1)
            else:
                cv2.rectangle(frame, (cx - r, cy - r), (cx + r, cy + r), color, -1)
        frames.append(frame)
    return np.stack(frames)
