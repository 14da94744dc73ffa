"""``cezsar init``: a usable model folder from pretrained towers, with no training.

The frame encoder is the vision tower of an image-text checkpoint (``hf-clip:``, ``hf-siglip:``,
``st-clip:``; :mod:`training.pretrained`) or any other backbone name; the text tower is the same
checkpoint's text tower by default (both towers then start in one embedding space) or any
sentence-transformers model. The heads are the identity-initialised ones of :mod:`training.towers`,
so the video embedding is the normalised mean of the frame embeddings: the checkpoint's zero-shot
"mean-pool" baseline. The folder has the format of a trained model (config.json + model.safetensors)
and goes straight to ``cezsar export``, or to ``cezsar train --init`` for fine-tuning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cezsar.errors import CezsarError
from training.model import DEFAULT_TEXT_MODEL, TOKEN_DROPOUT, CezsarModel, ModelConfig, SentenceEncoder
from training.pretrained import KINDS, checkpoint_preprocess, is_pretrained_name, same_space, split_name

log = logging.getLogger(__name__)


@dataclass
class InitResult:
    out: Path
    feature_dim: int
    text_dim: int
    joint_dim: int
    shared_space: bool
    preprocess: dict[str, Any]


def default_text_tower(frame_encoder: str) -> str:
    """The text tower of the frame encoder's own checkpoint; MiniLM for other backbones."""
    parts = split_name(frame_encoder)
    return frame_encoder if parts is not None and parts[0] in KINDS else DEFAULT_TEXT_MODEL


def _heads(dim: int, wanted: int | None) -> int:
    if wanted is not None:
        if dim % wanted:
            raise CezsarError(f"--heads {wanted}: must divide the feature size {dim}")
        return wanted
    return next(h for h in (8, 4, 2, 1) if dim % h == 0)


def _config(
    frame_encoder: str,
    text_tower: str,
    text_input: str,
    text_dim: int,
    frames: int,
    fps: float,
    layers: int,
    dropout: float,
    heads: int | None,
) -> ModelConfig:
    """The untrained model's config: the checkpoint's preprocessing, and feature_dim = d_model = joint_dim
    = the frame embedding size (the identity start needs that)."""
    from training.backbones import create_backbone

    pre = checkpoint_preprocess(frame_encoder)
    if pre is None:
        log.warning("%s: no checkpoint preprocessing; using the default (ImageNet mean/std, 224 px)", frame_encoder)
        from cezsar.preprocess import Preprocess

        pre = Preprocess()
    cfg = ModelConfig(
        backbone=frame_encoder,
        frames=frames,
        fps=fps,
        layers=layers,
        dropout=dropout,
        text_model=text_tower,
        text_dim=text_dim,
        preprocess=pre.to_dict(),
        head="residual",
        text_input=text_input,
        text_token_dropout=TOKEN_DROPOUT if text_input == "tokens" else 0.0,
    )
    _, dim = create_backbone(frame_encoder)
    cfg.feature_dim = cfg.d_model = cfg.joint_dim = dim
    cfg.heads = _heads(dim, heads)
    return cfg


def init_model(
    frame_encoder: str,
    out: str | Path,
    text_tower: str | None = None,
    frames: int = 16,
    fps: float = 1.0,
    layers: int = 1,
    heads: int | None = None,
    dropout: float = 0.1,
    seed: int = 0,
    calibrate: bool = True,
    calib_data: str | Path | None = None,
) -> InitResult:
    """Write ``out``/config.json + model.safetensors (and calibration.json: the score calibration fitted on
    ``calib_data``'s seen classes, or on rendered synthetic streams; issue 21); returns what was built."""
    out = Path(out)
    if (out / "config.json").exists():
        raise CezsarError(f"{out}: already holds a model; choose another --out or remove it")
    if frames < 1 or fps <= 0:
        raise CezsarError(f"--frames {frames} / --fps {fps}: need at least one frame and a positive rate")
    text_tower = text_tower or default_text_tower(frame_encoder)
    torch.manual_seed(seed)
    shared = same_space(frame_encoder, text_tower)
    # a text tower from another checkpoint gets a trained head anyway: for a sentence-transformers model,
    # the per-token head that `cezsar train` uses (docs/ablation.md); the checkpoint's own tower stays pooled
    text_input = "pooled" if shared or is_pretrained_name(text_tower) else "tokens"
    text = SentenceEncoder(text_tower, text_input)
    text_dim = text.dim
    cfg = _config(frame_encoder, text_tower, text_input, text_dim, frames, fps, layers, dropout, heads)
    dim = cfg.joint_dim
    model = CezsarModel(cfg)
    if shared:
        if text_dim != dim:
            raise CezsarError(f"{text_tower}: text embeddings have {text_dim} dims, image embeddings {dim}")
        model.text_head.reset_identity()  # type: ignore[operator]
    else:
        log.warning(
            "text tower %s is not the frame encoder's checkpoint: its projection starts random; "
            "train (cezsar train --init) before the scores mean anything",
            text_tower,
        )
    model.eval()
    model.save(
        out,
        extra={
            "init": {
                "frame_encoder": frame_encoder,
                "text_tower": text_tower,
                "shared_space": shared,
                "trained_on": {"dataset": f"{frame_encoder} (image-text pretraining)", "open_vocabulary": True},
                "note": "no training: video embedding = normalised mean of the frame embeddings",
            }
        },
    )
    if calibrate:
        from training.calibrate_scores import calibrate as fit_calibration

        try:
            fit_calibration(out, calib_data, seed=seed, model=model, text=text)
        except CezsarError as e:
            log.warning("no score calibration for %s: %s", out, e)
    return InitResult(out, dim, text_dim, dim, shared, dict(cfg.preprocess))
