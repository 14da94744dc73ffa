"""The runtime's networks: the backend (with its fallback), the text tower and the Recognizer."""

from __future__ import annotations

import logging
from collections import deque
from contextlib import ExitStack
from typing import Any

import numpy as np

from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import Manifest
from cezsar.errors import CezsarError
from edge.embedder import WindowEmbedder
from edge.recognizer import Recognizer
from edge.scorer import deploy_calibration
from edge.settings import RuntimeSettings
from edge.text import TextEncoder

log = logging.getLogger("cezsar.edge")


def load_models(
    settings: RuntimeSettings, manifest: Manifest, errors: deque[str], stack: ExitStack
) -> tuple[Any, TextEncoder, Recognizer]:
    """(the loaded backend, the text tower, a Recognizer on them); the backend is closed by ``stack``."""
    assert settings.deploy is not None
    loaded = _load_backend(settings, manifest, errors)
    stack.callback(loaded.close)
    text = TextEncoder(settings.deploy, manifest, settings.threads)
    sampling = settings.sampling
    embedder = WindowEmbedder(
        loaded.frame_encoder,
        loaded.temporal_head,
        manifest.window,
        sampling.hop,
        manifest.feature_dim,
        cache=sampling.cache,
        max_gap=sampling.max_gap,
    )
    calibration = deploy_calibration(settings.deploy, manifest)  # issue 21: None (one warning) if absent
    return loaded, text, Recognizer(embedder, text, update_interval=sampling.update_interval, calibration=calibration)


def _load_backend(settings: RuntimeSettings, manifest: Manifest, errors: deque[str]) -> Any:
    deploy = settings.deploy
    assert deploy is not None
    try:
        return load_backend(settings.backend, settings.precision, deploy, manifest, settings.threads)
    except CezsarError as e:
        fallback = settings.fallback_backend
        if not fallback:
            raise
        log.warning("--backend %s cannot run (%s); using --fallback-backend %s", settings.backend, e, fallback)
        loaded = load_backend(fallback, "auto", deploy, manifest, settings.threads)
        loaded.reason = f"fallback: --backend {settings.backend} failed ({e}); {loaded.reason}"
        errors.append(f"backend {settings.backend}: {e}")
        return loaded


def warm_up(loaded: Any, manifest: Manifest, batches: tuple[int, ...]) -> None:
    """Both networks once per batch size on zeros, so the first frames meet warm kernels."""
    for b in batches:
        loaded.frame_encoder(np.zeros((b, 3, manifest.pre.size, manifest.pre.size), np.float32))
        loaded.temporal_head(np.zeros((b, manifest.window, manifest.feature_dim), np.float32))
