"""Negative captions for the triplet loss.

``auto`` follows the paper: for each positive caption, draw ``count`` other captions whose
sentence-embedding cosine distance to it lies inside a window (reference: 0.0 < d < 0.8),
so negatives are related enough to be informative but not paraphrases of the positive.
``random`` draws any other caption uniformly, for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class NegativeConfig:
    mode: str = "auto"  # auto | random
    count: int = 10
    min_distance: float = 0.0
    max_distance: float = 0.8
    seed: int = 0


def sample_negatives(
    embeddings: torch.Tensor,
    cfg: NegativeConfig,
    group: list[int] | None = None,
) -> np.ndarray:
    """Indices (N, count) of negative captions for each of N captions.

    ``embeddings``: (N, dim) sentence embeddings of the captions. ``group``: an id per caption
    (e.g. its source video); captions of the same group are never negatives of each other.
    Where the window holds fewer than ``count`` candidates, the nearest-outside candidates fill in,
    so every positive gets ``count`` negatives.
    """
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError("need at least two captions to sample negatives")
    rng = np.random.default_rng(cfg.seed)
    groups = np.asarray(group if group is not None else np.arange(n))
    out = np.empty((n, cfg.count), dtype=np.int64)
    if cfg.mode == "random":
        for i in range(n):
            cand = np.flatnonzero(groups != groups[i])
            if cand.size == 0:
                cand = np.delete(np.arange(n), i)
            out[i] = rng.choice(cand, size=cfg.count, replace=cand.size < cfg.count)
        return out
    if cfg.mode != "auto":
        raise ValueError(f"unknown negative mode {cfg.mode!r} (auto or random)")
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    mid = (cfg.min_distance + cfg.max_distance) / 2
    for start in range(0, n, 1024):
        dist = (1.0 - e[start : start + 1024] @ e.T).numpy()
        for r, i in enumerate(range(start, min(n, start + 1024))):
            d = dist[r]
            valid = groups != groups[i]
            valid[i] = False
            inside = np.flatnonzero(valid & (d > cfg.min_distance) & (d < cfg.max_distance))
            if inside.size >= cfg.count:
                out[i] = rng.choice(inside, size=cfg.count, replace=False)
                continue
            rest = np.flatnonzero(valid & ~np.isin(np.arange(n), inside))
            if rest.size == 0 and inside.size == 0:
                rest = np.delete(np.arange(n), i)
            fill = rest[np.argsort(np.abs(d[rest] - mid))][: cfg.count - inside.size]
            chosen = np.concatenate([inside, fill])
            out[i] = rng.choice(chosen, size=cfg.count, replace=chosen.size < cfg.count)
    return out
