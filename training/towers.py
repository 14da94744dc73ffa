"""Heads for pretrained image-text towers (model config ``head: "residual"``, written by ``cezsar init``).

Both heads can start as the identity, so a model made from a CLIP/SigLIP checkpoint with no training
scores exactly like that checkpoint's zero-shot "mean-pool" baseline:

- :class:`ResidualTemporalHead`: video embedding = L2-normalised mean over time of
  ``out(encoder(inp([f, delta f]) + pos))``. At initialisation ``inp`` copies ``f`` (identity on the
  feature, zero on the frame-to-frame change), ``pos`` is zero, every transformer layer is pre-norm with
  its residual branches' output projections at zero (the layer passes its input through unchanged), and
  ``out`` is the identity. So the video embedding equals the normalised mean of the frame embeddings.
  Training then moves any of these away from the identity; the motion input is there from the start.
- :class:`LinearTextHead`: text embedding = L2-normalised ``proj(e)``; identity when both towers come
  from one checkpoint (one space), a random projection otherwise (e.g. CLIP frames + a
  sentence-transformers text model, which must be trained before scores mean anything).

Unlike the from-scratch heads there is no ReLU on the frame features (CLIP/SigLIP embeddings are signed)
and no LayerNorm before the normalisation (it would re-centre the embedding away from the checkpoint's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualTemporalHead(nn.Module):
    """(B, T, feature_dim) -> (B, joint_dim), L2-normalised; identity-initialisable (see module doc)."""

    def __init__(
        self,
        feature_dim: int,
        d_model: int,
        joint_dim: int,
        heads: int,
        layers: int,
        dropout: float,
        max_frames: int = 64,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(2 * feature_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_frames, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, joint_dim)
        self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        """Start as video embedding = normalised mean of the frame features (needs d_model == feature_dim ==
        joint_dim for an exact identity; otherwise the nearest: truncated/zero-padded identities)."""
        d_in = self.inp.in_features // 2
        self.inp.weight.zero_()
        self.inp.weight[:, :d_in].copy_(torch.eye(self.inp.out_features, d_in))
        self.inp.bias.zero_()
        self.pos.zero_()
        for layer in self.encoder.layers:
            assert isinstance(layer, nn.TransformerEncoderLayer)
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
            layer.linear2.weight.zero_()
            layer.linear2.bias.zero_()
        self.out.weight.copy_(torch.eye(self.out.out_features, self.out.in_features))
        self.out.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = features
        delta = torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:] - f[:, :-1]], dim=1)
        x = self.inp(torch.cat([f, delta], dim=-1)) + self.pos[:, : f.shape[1]]
        x = self.encoder(x)
        return F.normalize(self.out(x).mean(dim=1), dim=-1)


class LinearTextHead(nn.Module):
    """(N, text_dim) -> (N, joint_dim), L2-normalised; identity-initialisable."""

    def __init__(self, text_dim: int, joint_dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(text_dim, joint_dim)
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @torch.no_grad()
    def reset_identity(self) -> None:
        self.proj.weight.copy_(torch.eye(self.proj.out_features, self.proj.in_features))
        self.proj.bias.zero_()

    def forward(self, sentence_embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.drop(sentence_embeddings)), dim=-1)
