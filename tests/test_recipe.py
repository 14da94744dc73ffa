"""training.recipe.resolve: which of flag, dataset.json, probe and recipe wins, setting by setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cezsar.errors import CezsarError
from training.recipe import TrainConfig, model_config, resolve


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four 3-s clips at 10 fps, 96x128: the probe chooses T=8 at ~2.67 fps and 96-px crops of 96."""
    from cezsar.video import write_video

    root = tmp_path_factory.mktemp("recipe") / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        write_video(root / f"v{i}.mp4", rng.integers(0, 255, size=(30, 96, 128, 3), dtype=np.uint8), 10.0)
        lines.append(json.dumps({"video": f"v{i}.mp4", "caption": f"clip number {i} of a thing moving"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _with_dataset_json(clips: Path, tmp_path: Path, values: dict) -> Path:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(clips, data)
    (data / "dataset.json").write_text(json.dumps(values))
    return data


def test_flag_over_dataset_json_over_probe_over_recipe(clips: Path, tmp_path: Path) -> None:
    data = _with_dataset_json(clips, tmp_path, {"fps": 5.0, "image_size": 64, "lr": 0.002, "neg_max": 0.7})
    said: list[str] = []
    cfg = resolve(data, "paper", {"fps": 3.0, "loss": "infonce", "neg_min": 0.1, "epochs": None}, report=said.append)
    m = cfg.model
    assert m.fps == 3.0  # flag over dataset.json
    assert m.pre.size == 64 and cfg.lr == 0.002  # dataset.json over the probe (96 px) and the default (1e-4)
    assert m.frames == 8 and m.pre.resize == 96  # the probe fills what neither gives
    assert len(said) == 1 and said[0].startswith("no dataset.json sampling settings; probed 4 video(s)")
    assert "'frames': 8" in said[0] and "fps" not in said[0].split("using")[1]  # only what it filled is named
    assert cfg.loss == "infonce"  # flag over the paper recipe's triplet
    assert cfg.margin == 1.0 and cfg.schedule == "constant" and m.text_input == "pooled"  # the paper recipe's
    assert m.temporal == "joint" and cfg.augment_shift == 0.0  # the reference design's head, no shift
    assert cfg.negatives.count == 10 and not cfg.share_negatives  # the recipe, then the train command's fallback
    assert cfg.negatives.min_distance == 0.1  # flag over the recipe's 0.0
    assert cfg.negatives.max_distance == 0.7  # dataset.json over the recipe's 0.8
    assert cfg.epochs == 40  # None is "not given": the default
    flagged = resolve(data, "paper", {"neg_max": 0.5, "lr": 0.01, "image_size": 48, "schedule": "cosine"})
    assert flagged.negatives.max_distance == 0.5 and flagged.lr == 0.01 and flagged.model.pre.size == 48
    assert flagged.schedule == "cosine"


def test_default_recipe_and_no_probe_when_everything_is_given(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.probe

    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("probed although dataset.json and the flags give every sampling setting")

    monkeypatch.setattr(training.probe, "probe_clips", no_probe)
    data = _with_dataset_json(clips, tmp_path, {"frames": 6, "fps": 2.0, "image_size": 32, "resize": 40})
    cfg = resolve(data, overrides={"resize": 48, "d_model": 64, "lr": 0, "seed": 3})
    m = cfg.model
    assert (m.frames, m.fps, m.pre.size, m.pre.resize, m.d_model) == (6, 2.0, 32, 48, 64)
    assert cfg.lr == 1e-4  # 0 counts as not given, as the train command always read it
    assert cfg.loss == "infonce" and cfg.share_negatives and cfg.schedule == "cosine" and m.text_input == "auto"
    assert cfg.negatives.seed == 3 == cfg.seed
    assert cfg.resolved_text_input() == "tokens"
    assert m.temporal == "factored"  # the default recipe's: an appearance part plus a motion part
    assert cfg.augment_shift == 0.1  # and clips shifted at random in training
    assert resolve(data, overrides={"augment_shift": 0.0}).augment_shift == 0.0  # 0 given is off, not unset
    assert resolve(data, overrides={"temporal": "joint"}).model.temporal == "joint"
    default = TrainConfig()
    assert (cfg.loss, cfg.share_negatives, cfg.schedule, cfg.negatives) == (
        default.loss, default.share_negatives, default.schedule, cfg.negatives)  # fmt: skip


def test_bad_settings_fail_with_one_line(clips: Path) -> None:
    with pytest.raises(CezsarError, match="unknown training setting"):
        resolve(clips, overrides={"frames": 4, "learning_rate": None})
    with pytest.raises(CezsarError, match="--recipe 'vibes'"):
        resolve(clips, "vibes")
    with pytest.raises(CezsarError, match="--loss 'hinge'"):
        resolve(clips, overrides={"loss": "hinge"})
    with pytest.raises(CezsarError, match="--temporal 'lstm': expected one of joint, factored"):
        resolve(clips, overrides={"frames": 4, "temporal": "lstm"})
    with pytest.raises(CezsarError, match="--augment-shift 0.7"):
        resolve(clips, overrides={"augment_shift": 0.7})
    with pytest.raises(CezsarError, match="not a cezsar model folder"):
        resolve(clips, overrides={"init": clips})


def test_init_model_replaces_the_model_settings(clips: Path, tmp_path: Path) -> None:
    from training.model import CezsarModel

    init = tmp_path / "init"
    CezsarModel(model_config(frames=4, fps=1.0, image_size=40, resize=44, d_model=32, text_input="pooled")).save(init)
    cfg = resolve(clips, overrides={"init": init, "backbone": "resnet18", "frames": 5})
    assert cfg.init == str(init) and cfg.model.backbone == "tiny" and cfg.model.d_model == 32
    assert (cfg.model.frames, cfg.model.pre.size, cfg.model.pre.resize) == (5, 40, 44)


def test_the_training_record_keeps_its_keys() -> None:
    """config.json's ``training.config``: the flat keys that model folders written before the nesting hold."""
    before = {
        "backbone", "pretrained", "backbone_checkpoint", "mode", "loss", "negatives", "extra_negatives", "margin",
        "share_negatives", "epochs", "batch_size", "lr", "backbone_lr", "weight_decay", "augment_shift", "betas",
        "patience", "schedule", "frames", "fps", "image_size", "resize", "val_fraction", "seed", "text_model",
        "d_model", "joint_dim", "dropout", "threads", "max_minutes", "workers", "feature_cache", "shard_segments",
        "stream", "bank_limit_gb", "device", "step_log", "init", "text_input", "text_layer", "text_token_dropout",
    }  # fmt: skip
    record = TrainConfig(model=model_config(image_size=64, resize=72)).to_record()
    assert set(record) == before | {"idle_fraction", "calibrate", "temporal"}  # issue 21's settings, recorded too
    assert record["image_size"] == 64 and record["resize"] == 72 and record["negatives"]["count"] == 10
