"""Shared helpers for the edge tests (no tests here).

- ``deploy_dir()``: a real deploy folder made by converter.export.export_model, cached on disk by
  model weights hash (the demo's cache layout). The model is the trained demo model when there is
  one ($CEZSAR_TEST_MODEL, else cezsar/assets/demo_model), else a small random-init model (64 px,
  T=8 at 4 fps); tests that check detection quality run only with a trained model.
- ``FakeCamera``: a stand-in for cv2.VideoCapture at the true boundary (no camera on CI).
- ``write_index_video``: a small video whose frame i encodes i in its pixels.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the model code, the exporter and the deploy contract: a change to any of them means a fresh export
CODE = (
    "training/model.py",
    "training/backbones.py",
    "converter/export.py",
    "converter/common.py",
    "cezsar/deploy/manifest.py",
    "cezsar/deploy/layout.py",
    "cezsar/preprocess.py",
)


def _code_hash() -> str:
    h = hashlib.sha256()
    for rel in CODE:
        p = ROOT / rel
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()[:12]


CACHE = Path(os.environ.get("CEZSAR_TEST_CACHE", Path(tempfile.gettempdir()) / "cezsar-edge-tests")) / _code_hash()
_lock = threading.Lock()
_deploy: Path | None = None


def trained_model_dir() -> Path | None:
    """The trained demo model: $CEZSAR_TEST_MODEL (to try a candidate), else the bundled one."""
    from cezsar.app.demo import bundled_model_dir

    d = Path(os.environ["CEZSAR_TEST_MODEL"]) if os.environ.get("CEZSAR_TEST_MODEL") else bundled_model_dir()
    return d if (d / "config.json").is_file() and (d / "model.safetensors").is_file() else None


def random_model_dir() -> Path:
    d = CACHE / "random-model"
    if not (d / "model.safetensors").is_file():
        import torch

        from cezsar.preprocess import Preprocess
        from training.model import CezsarModel, ModelConfig

        torch.manual_seed(0)
        cfg = ModelConfig(frames=8, fps=4.0, preprocess=Preprocess(size=64, resize=72).to_dict())
        CezsarModel(cfg).save(d)
    return d


def model_dir() -> Path:
    return trained_model_dir() or random_model_dir()


def deploy_dir() -> Path:
    """The test deploy folder (exported once, then reused across runs while the weights are the same)."""
    global _deploy
    with _lock:
        if _deploy is None:
            from cezsar.app.demo import ensure_deploy

            _deploy = ensure_deploy(model_dir(), CACHE)
        return _deploy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def index_frame(i: int, size: int = 64) -> np.ndarray:
    """A BGR frame whose 8x8-pixel cells spell ``i`` in binary (16 bits, black/white: survives JPEG)."""
    f = np.full((size, size, 3), 128, dtype=np.uint8)
    for b in range(16):
        r, c = divmod(b, 8)
        f[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = 255 if (i >> b) & 1 else 0
    return f


def frame_index(image: np.ndarray) -> int:
    """Inverse of index_frame (on the decoded, not preprocessed, image)."""
    i = 0
    for b in range(16):
        r, c = divmod(b, 8)
        if image[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].mean() > 127:
            i |= 1 << b
    return i


def write_index_video(path: Path, n: int, fps: float = 8.0, size: int = 64) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (size, size))
    assert vw.isOpened()
    for i in range(n):
        vw.write(index_frame(i, size))
    vw.release()
    return path


class FakeCamera:
    """Fake cv2.VideoCapture of a live camera: ``rate`` frames per second, failing after ``fail_after``
    frames (the stream stops delivering), frames encode a global counter."""

    counter = 0

    def __init__(self, rate: float = 100.0, fail_after: int | None = None, opened: bool = True) -> None:
        self.rate = rate
        self.fail_after = fail_after
        self.opened = opened
        self.grabbed = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def grab(self) -> bool:
        if self.fail_after is not None and self.grabbed >= self.fail_after:
            return False
        time.sleep(1.0 / self.rate)
        self.grabbed += 1
        FakeCamera.counter += 1
        self._last = FakeCamera.counter
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return True, index_frame(self._last)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True
