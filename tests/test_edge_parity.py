"""The edge path (OpenCV source -> sampler -> preprocess -> frame encoder -> ring -> temporal head,
onnxruntime) gives the embedding the training path (cezsar.video.read_frames -> CezsarModel,
PyTorch) gives for the same frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import load_manifest
from cezsar.video import probe, read_frames
from edge.embedder import WindowEmbedder
from edge.sources import Source, SourceSpec
from tests.helpers.models import deploy_dir, model_dir


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_edge_windows_match_the_training_path(tmp_path: Path) -> None:
    import torch

    from cezsar.data.synthetic import render_stream
    from training.model import CezsarModel

    video = tmp_path / "v.mp4"
    render_stream(video, [("staying still", 2.0), ("spinning", 3.0), ("moving up", 3.0)], seed=5)
    d = deploy_dir()
    m = load_manifest(d)
    loaded = load_backend("onnxruntime-cpu", "fp32", d, m)
    src = Source(SourceSpec("v", "file", str(video)), m.pre, m.fps, realtime=False, queue_capacity=8)
    src.start()
    emb = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, m.window, 2, m.feature_dim)
    windows = []
    while not src.finished:
        src.queue.notify.wait(0.1)
        src.queue.notify.clear()
        windows += emb.add(src.queue.drain())
    assert len(windows) >= 5
    model = CezsarModel.load(model_dir()).eval()
    info = probe(video)
    for w in windows[::3]:
        times = np.arange(w.first_index, w.last_index + 1) / m.fps + 1e-6  # the sampled frames' own times
        frames = read_frames(video, times, info)
        with torch.no_grad():
            ref = model.encode_video(torch.from_numpy(m.pre(frames))[None]).numpy()[0]
        assert float(ref @ w.embedding) > 1 - 1e-5
