"""Training at scale on the synthetic world: streamed end2end clips, the frozen feature store, corrupt
videos inside a dataset (skipped, named, the run completes)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from cezsar.data.synthset import synthesize  # noqa: E402
from training.recipe import TrainConfig, model_config  # noqa: E402
from training.train import train  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sworld") / "w"
    synthesize(out, seed=5, train_clips_per_class=2, eval_clips_per_class=1)
    return out


@pytest.fixture(scope="module")
def broken_world(world, tmp_path_factory) -> Path:
    """The world plus two captions of a corrupt video."""
    out = tmp_path_factory.mktemp("bworld") / "w"
    shutil.copytree(world, out)
    (out / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    with open(out / "captions.jsonl", "a") as f:
        for cap in ("a broken clip", "another broken clip"):
            f.write(json.dumps({"video": "videos/broken.mp4", "start": 0.0, "end": 3.0, "caption": cap}) + "\n")
    return out


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, lr=1e-3, threads=1, batch_size=8)
    base.update(kw)
    return TrainConfig(model=model_config(frames=4, fps=2.0, image_size=32, resize=32, d_model=32), **base)


def test_streamed_end2end_sees_the_same_clips_as_the_cached_bank(world, tmp_path, monkeypatch):
    monkeypatch.setenv("CEZSAR_CACHE", str(tmp_path / "cache"))
    cached = train(world, tmp_path / "a", cfg(stream=False, loss="infonce"), progress=False)
    streamed = train(world, tmp_path / "b", cfg(stream=True, workers=1, loss="infonce"), progress=False)
    a, b = cached.history[0], streamed.history[0]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


@pytest.mark.parametrize("mode,stream", [("frozen", None), ("end2end", True)])
def test_corrupt_video_is_skipped_and_named(broken_world, tmp_path, monkeypatch, mode, stream):
    monkeypatch.setenv("CEZSAR_CACHE", str(tmp_path / "cache"))
    res = train(broken_world, tmp_path / "m", cfg(mode=mode, stream=stream), progress=False)
    assert [s["video"] for s in res.skipped] == [str((broken_world / "videos" / "broken.mp4").resolve())]
    assert res.skipped[0]["captions"] == 2 and "broken.mp4" in res.skipped[0]["error"]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert meta["skipped_videos"] == res.skipped
    assert np.isfinite(res.history[0]["train_loss"])


def test_frozen_second_run_extracts_nothing(world, tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("CEZSAR_CACHE", str(tmp_path / "cache"))
    train(world, tmp_path / "a", cfg(mode="frozen"), progress=False)
    stores = list((tmp_path / "cache").glob("features-*/shard-*.npy"))
    assert stores
    stamp = {p: p.stat().st_mtime_ns for p in stores}
    with caplog.at_level(logging.INFO, logger="training.featstore"):
        train(world, tmp_path / "b", cfg(mode="frozen"), progress=False)
    assert "nothing to extract" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in stores} == stamp
