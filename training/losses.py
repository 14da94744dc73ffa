"""Losses: the paper's triplet margin loss and a symmetric InfoNCE with extra hard negatives.

Both take L2-normalised video and text embeddings. ``exclude`` (InfoNCE) marks, per video, the text
columns that must not count as its negatives: captions of the same clip or paraphrases of its
positive (see :func:`training.negatives.paraphrase_mask`), so the loss does not push a video away
from a correct description of it (a false negative).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TripletLoss(nn.Module):
    """Triplet margin loss on (video, positive, negative) rows: the paper's Euclidean distance and margin 1.0."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.loss = nn.TripletMarginLoss(margin=margin, p=2)

    def forward(self, video: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return self.loss(video, pos, neg)


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature (CLIP-style).

    Video -> text: each video's positive caption against the other captions of the batch plus ``neg``:
    (B, K, D) per-video extra hard negatives (video i against its own K, e.g. the automatic negatives
    of its caption) or (K, D) shared by the batch. Sharing multiplies the false negatives each video
    meets (B x K captions, a few percent of them its own class), so training passes them per video.
    Text -> video: each caption against the batch's videos. ``exclude`` (B, B + K) masks false
    negatives of video i (its own positive column is never masked).
    """

    def __init__(self, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(
        self,
        video: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * video @ pos.T  # (B, B)
        if neg is not None and neg.dim() == 3:  # (B, K, D): video i's own hard negatives
            logits = torch.cat([logits, scale * torch.einsum("bd,bkd->bk", video, neg)], dim=1)
        elif neg is not None:  # (K, D): negatives of every video in the batch
            logits = torch.cat([logits, scale * video @ neg.T], dim=1)
        b = video.shape[0]
        eye = torch.eye(b, dtype=torch.bool, device=video.device)
        if exclude is not None:
            mask = exclude.clone()
            mask[:, :b] &= ~eye
            logits = logits.masked_fill(mask, float("-inf"))
        target = torch.arange(b, device=video.device)
        v2t = F.cross_entropy(logits, target)
        t_logits = scale * pos @ video.T
        if exclude is not None:  # caption j vs video i: masked where j is a paraphrase of i's positive
            t_logits = t_logits.masked_fill(exclude[:, :b].T & ~eye, float("-inf"))
        t2v = F.cross_entropy(t_logits, target)
        return (v2t + t2v) / 2


def make_loss(name: str, margin: float = 1.0) -> nn.Module:
    if name == "triplet":
        return TripletLoss(margin=margin)
    if name == "infonce":
        return InfoNCELoss()
    raise ValueError(f"unknown loss {name!r} (triplet or infonce)")
