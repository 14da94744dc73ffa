"""Training and zero-shot evaluation end to end on a small synthetic world (real decoding, real text model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cezsar.data.synthset import synthesize
from cezsar.errors import CezsarError
from training.negatives import NegativeConfig
from training.recipe import TrainConfig, model_config
from training.train import train

CLI = [sys.executable, "-m", "cezsar"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    synthesize(out, seed=3, train_clips_per_class=3, eval_clips_per_class=2)
    return out


def small_cfg(**kw) -> TrainConfig:
    model = model_config(frames=8, fps=4.0, image_size=64, resize=64, d_model=kw.pop("d_model", 64))
    base = dict(epochs=2, lr=1e-3, threads=1)
    base.update(kw)
    return TrainConfig(model=model, **base)


def test_train_writes_model_folder_and_log(world, tmp_path):
    res = train(world, tmp_path / "m", small_cfg(), progress=False)
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["config.json", "log.jsonl", "model.safetensors"], names
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format"] == "cezsar-model" and cfg["frames"] == 8 and cfg["training"]["mode"] == "end2end"
    # what it was trained on: the world's name and domain, and the words of its captions (issue 23)
    seen = cfg["training"]["trained_on"]
    assert seen["dataset"] == "cezsar-synthetic" and "shape" in seen["domain"] and seen["captions"] == 72
    assert {"circl", "left", "spin"} <= set(seen["vocabulary"]) and "person" not in seen["vocabulary"]
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1] == [h["epoch"] for h in res.history]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in log)


def test_training_reduces_the_loss(world, tmp_path):
    res = train(world, tmp_path / "m", small_cfg(epochs=6, patience=10), progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert min(losses[-2:]) < losses[0], losses


def test_resume_continues_an_interrupted_run(world, tmp_path):
    import signal
    import time

    out = tmp_path / "m"
    proc = subprocess.Popen(
        [
            *CLI,
            "train",
            "--data",
            str(world),
            "--out",
            str(out),
            "--epochs",
            "200",
            "--patience",
            "200",
            "--threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / ".resume" / "log.jsonl").is_file():
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = json.loads((out / ".resume" / "state.json").read_text())
    done = state["epoch"] + 1
    assert not (out / "config.json").exists(), "an interrupted run leaves no half-written model"
    # the interrupted run is the default recipe's (factored head): other layers are one clear line
    with pytest.raises(CezsarError, match="saved by a run of another model"):
        train(world, out, small_cfg(epochs=done + 1, d_model=256), resume=True, progress=False)
    resumed = small_cfg(epochs=done + 1, d_model=256)
    resumed.model.temporal = "factored"
    res = train(world, out, resumed, resume=True, progress=False)
    assert [h["epoch"] for h in res.history] == list(range(done + 1))
    assert (out / "config.json").is_file() and not (out / ".resume").exists()
    with pytest.raises(CezsarError, match="nothing to resume"):
        train(world, tmp_path / "fresh", small_cfg(), resume=True, progress=False)


def test_frozen_mode_trains_heads_only(world, tmp_path):
    from safetensors.torch import load_file, save_file

    from training.backbones import create_backbone
    from training.model import CezsarModel

    backbone, _ = create_backbone("tiny")
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp_path / "bb.safetensors"))
    train(
        world,
        tmp_path / "m",
        small_cfg(mode="frozen", backbone_checkpoint=str(tmp_path / "bb.safetensors")),
        progress=False,
    )
    trained = CezsarModel.load(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["mode"] == "frozen"
    for k, v in load_file(str(tmp_path / "bb.safetensors")).items():
        assert (trained.frame_encoder.backbone.state_dict()[k] == v).all(), k


@pytest.mark.parametrize("loss,negatives", [("triplet", "random"), ("infonce", "auto")])
def test_losses_and_negative_modes_train(world, tmp_path, loss, negatives):
    res = train(
        world, tmp_path / "m", small_cfg(epochs=1, loss=loss, negatives=NegativeConfig(mode=negatives)), progress=False
    )
    assert res.epochs_run == 1 and np.isfinite(res.history[0]["train_loss"])


def test_eval_cli_reports_json_and_png(world, tmp_path):
    train(world, tmp_path / "m", small_cfg(epochs=1), progress=False)
    out = subprocess.run(
        [
            *CLI,
            "eval",
            "--model",
            str(tmp_path / "m"),
            "--data",
            str(world),
            "--split",
            str(world / "split.json"),
            "--runs",
            "3",
            "--classes-per-run",
            "4",
            "--json",
            "--confusion",
            str(tmp_path / "c.png"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("top1", "top1_std", "chance", "n_classes", "n_videos"):
        assert key in rep
    assert rep["n_classes"] == 4 and rep["chance"] == 0.25 and rep["runs"] == 3
    assert 0.0 <= rep["top1"] <= 1.0
    assert (tmp_path / "c.png").stat().st_size > 0


def test_eval_refuses_unknown_split_class(world, tmp_path):
    train(world, tmp_path / "m", small_cfg(epochs=1), progress=False)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [], "testing": ["juggling chainsaws"]}))
    out = subprocess.run(
        [*CLI, "eval", "--model", str(tmp_path / "m"), "--data", str(world), "--split", str(split)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert err[-1].startswith("error:") and "juggling chainsaws" in err[-1] and str(split) in err[-1]


def test_train_cli_refuses_missing_data(tmp_path):
    out = subprocess.run(
        [*CLI, "train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m")], capture_output=True, text=True
    )
    assert out.returncode == 2 and "nope" in out.stderr and "error:" in out.stderr
    assert not (tmp_path / "m").exists()


def test_failed_training_keeps_existing_model(world, tmp_path):
    out = tmp_path / "m"
    train(world, out, small_cfg(epochs=1), progress=False)
    before = (out / "model.safetensors").read_bytes()
    (world / "captions.jsonl").rename(world / "captions.bak")
    try:
        with pytest.raises(CezsarError):
            train(world, out, small_cfg(epochs=1), progress=False)
    finally:
        (world / "captions.bak").rename(world / "captions.jsonl")
    assert (out / "model.safetensors").read_bytes() == before


# -- recipes ---------------------------------------------------------------------------------------


def test_recipes_default_and_paper():
    from training.recipe import recipe_settings

    paper = recipe_settings("paper")
    assert paper["loss"] == "triplet" and paper["margin"] == 1.0
    assert paper["negatives"] == {"mode": "auto", "count": 10, "min_distance": 0.0, "max_distance": 0.8,
                                  "fn_distance": 0.0}  # fmt: skip
    assert paper["text_input"] == "pooled"  # the paper projects the sentence embedding
    default = recipe_settings("default")
    assert default["loss"] == "infonce" and default["share_negatives"] and default["negatives"]["fn_distance"] == 0
    assert default["text_input"] == "auto" and TrainConfig().resolved_text_input() == "tokens"
    assert default["schedule"] == TrainConfig().schedule == "cosine" and paper["schedule"] == "constant"
    cfg = TrainConfig()  # the dataclass defaults are the default recipe
    assert cfg.loss == "infonce" and cfg.share_negatives and cfg.negatives.fn_distance == 0
    with pytest.raises(CezsarError, match="--recipe"):
        recipe_settings("vibes")


@pytest.mark.parametrize("extra,shared", [(0, False), (3, False), (1, True)])
def test_infonce_with_filtered_extra_negatives_trains(world, tmp_path, extra, shared):
    neg = NegativeConfig(fn_distance=0.0 if shared else 0.4)
    cfg = small_cfg(epochs=1, extra_negatives=extra, negatives=neg, share_negatives=shared)
    res = train(world, tmp_path / "m", cfg, progress=False)
    assert res.epochs_run == 1 and np.isfinite(res.history[0]["train_loss"])


def test_train_cli_paper_recipe_is_recorded(world, tmp_path):
    out = subprocess.run(
        [*CLI, "train", "--data", str(world), "--out", str(tmp_path / "m"), "--recipe", "paper", "--epochs", "1",
         "--threads", "1", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "recipe paper: loss triplet" in out.stderr
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())["training"]["config"]
    assert cfg["loss"] == "triplet" and cfg["margin"] == 1.0
    assert cfg["negatives"]["fn_distance"] == 0.0 and cfg["negatives"]["max_distance"] == 0.8


# -- sampling defaults probed from the videos ------------------------------------------------------


def _clip_folder(root: Path, seconds: float, fps: float, h: int, w: int, n: int = 4) -> Path:
    from cezsar.video import write_video

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        frames = rng.integers(0, 255, size=(int(seconds * fps), h, w, 3), dtype=np.uint8)
        write_video(root / f"v{i}.mp4", frames, fps)
        lines.append(json.dumps({"video": f"v{i}.mp4", "caption": f"clip number {i} of a thing moving"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_probe_fits_short_small_clips(tmp_path):
    from training.probe import choose, probe_clips

    folder = _clip_folder(tmp_path / "short", seconds=3.0, fps=10.0, h=96, w=128)
    clips = [(folder / f"v{i}.mp4", None, None) for i in range(4)]
    res = probe_clips(clips)
    assert res.videos_probed == 4 and res.clip_seconds == pytest.approx(3.0, abs=0.15) and res.short_side == 96
    # 8 frames spread over the 3-s clip (not 16 frames at 1 fps: 3 distinct frames repeated), 96 px not 224
    assert res.frames == 8 and res.fps == pytest.approx(8 / 3, rel=0.06) and res.image_size == 96 == res.resize
    # segments: the segment length counts, not the video's
    assert probe_clips([(folder / "v0.mp4", 0.0, 1.0)]).fps == pytest.approx(min(8 / 1.0, 10.0))
    # long full-resolution videos keep the paper's 16 frames over 16 s (1 fps) and 224-px crops of 256
    assert choose(120.0, 30.0, 720) == (16, 1.0, 224, 256)
    # a rate above the video's own is capped; a clip shorter than T frames gets fewer frames
    assert choose(2.0, 3.0, 64) == (6, 3.0, 64, 64)


def test_train_cli_prints_probed_defaults_and_flags_override(tmp_path):
    folder = _clip_folder(tmp_path / "short", seconds=3.0, fps=10.0, h=96, w=128)
    out = subprocess.run(
        [*CLI, "train", "--data", str(folder), "--out", str(tmp_path / "m"), "--epochs", "1", "--threads", "1",
         "--frames", "4", "--neg-count", "2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "no dataset.json sampling settings; probed 4 video(s)" in out.stderr
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["frames"] == 4  # the flag wins
    assert cfg["fps"] == pytest.approx(8 / 3, rel=0.06) and cfg["preprocess"]["size"] == 96


def test_cosine_schedule_keeps_the_last_epoch(world, tmp_path):
    from training.train import _cosine_factor

    assert _cosine_factor(0.5, 10) == 0.5 and _cosine_factor(1.0, 10) == 1.0 and _cosine_factor(10, 10) == 0.0
    assert _cosine_factor(5.5, 10) == pytest.approx(0.5)
    res = train(world, tmp_path / "m", small_cfg(epochs=3, schedule="cosine", patience=0), progress=False)
    assert res.epochs_run == 3 and res.best_epoch == 2  # no early stop, whatever the validation loss did
    with pytest.raises(CezsarError, match="--schedule"):
        train(world, tmp_path / "m2", small_cfg(schedule="step"), progress=False)


def test_shift_augmentation_moves_whole_clips(world, tmp_path):
    import torch

    from training.clips import shift_clips

    x = torch.zeros(2, 3, 1, 8, 8)
    x[:, :, :, 4, 4] = 1.0
    x[:, :, :, 0, 7] = 5.0  # top-right corner: repeated into the uncovered border
    y = shift_clips(x, np.array([[1, -2], [0, 0]]))
    for t in range(3):  # every frame of a clip moves alike
        assert torch.nonzero(y[0, t, 0] == 1.0).tolist() == [[5, 2]]
    assert torch.equal(y[1], x[1])
    assert y[0, 0, 0, 0, 7] == 5.0 and y[0, 0, 0, 1, 7] == 5.0  # row 0 moved down, the edge repeats above it
    plain = train(world, tmp_path / "a", small_cfg(epochs=1, seed=4), progress=False)
    again = train(world, tmp_path / "b", small_cfg(epochs=1, seed=4), progress=False)
    shifted = train(world, tmp_path / "c", small_cfg(epochs=1, seed=4, augment_shift=0.125), progress=False)
    loss = [r.history[0]["train_loss"] for r in (plain, again, shifted)]
    assert loss[0] == loss[1] != loss[2] and np.isfinite(loss[2])  # deterministic, and the shift is applied
    assert shifted.history[0]["val_loss"] != plain.history[0]["val_loss"]
    with pytest.raises(CezsarError, match="--augment-shift 0.6"):
        train(world, tmp_path / "d", small_cfg(augment_shift=0.6), progress=False)
