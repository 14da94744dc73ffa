"""The test deploy folder: a real deploy folder made by converter.export.export_model, cached on disk
by the code and weights hash (the demo's cache layout). The model is the trained demo model when
there is one ($CEZSAR_TEST_MODEL, else cezsar/assets/demo_model), else a small random-init model
(64 px, T=8 at 4 fps); tests that check detection quality run only with a trained model.
``CEZSAR_TEST_DEPLOY=DIR`` uses an already exported deploy folder instead."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
    if os.environ.get("CEZSAR_TEST_DEPLOY"):
        return Path(os.environ["CEZSAR_TEST_DEPLOY"])
    with _lock:
        if _deploy is None:
            from cezsar.app.demo import ensure_deploy

            _deploy = ensure_deploy(model_dir(), CACHE)
        return _deploy
