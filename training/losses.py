"""Losses: the paper's triplet margin loss and a symmetric in-batch InfoNCE for comparison."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TripletLoss(nn.Module):
    """Triplet margin loss (Euclidean, margin 1.0 as in the paper) on (video, positive, negative)."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.loss = nn.TripletMarginLoss(margin=margin, p=2)

    def forward(self, video: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return self.loss(video, pos, neg)


class InfoNCELoss(nn.Module):
    """Symmetric in-batch InfoNCE with a learnable temperature (CLIP-style).

    Captions that are identical to another caption in the batch are masked out as negatives.
    ``neg`` is accepted for a uniform call signature and used as extra text negatives.
    """

    def __init__(self, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(
        self, video: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None = None, same: torch.Tensor | None = None
    ) -> torch.Tensor:
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        texts = pos if neg is None else torch.cat([pos, neg])
        logits = scale * video @ texts.T  # (B, B[+B])
        b = video.shape[0]
        if same is not None:  # same[i, j]: caption j is a positive of video i too (not its own)
            mask = torch.zeros_like(logits, dtype=torch.bool)
            mask[:, :b] = same & ~torch.eye(b, dtype=torch.bool, device=same.device)
            logits = logits.masked_fill(mask, float("-inf"))
        target = torch.arange(b, device=video.device)
        v2t = F.cross_entropy(logits, target)
        t_logits = scale * pos @ video.T
        if same is not None:
            t_logits = t_logits.masked_fill(same.T & ~torch.eye(b, dtype=torch.bool, device=same.device), float("-inf"))
        t2v = F.cross_entropy(t_logits, target)
        return (v2t + t2v) / 2


def make_loss(name: str) -> nn.Module:
    if name == "triplet":
        return TripletLoss()
    if name == "infonce":
        return InfoNCELoss()
    raise ValueError(f"unknown loss {name!r} (triplet or infonce)")
