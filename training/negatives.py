"""Negative captions for the triplet loss.

``auto`` follows the paper: for each positive caption, draw ``count`` other captions whose
sentence-embedding cosine distance to it lies inside a window (reference: 0.0 < d < 0.8),
so negatives are related enough to be informative but not paraphrases of the positive.
``random`` draws any other caption uniformly, for comparison.

A *false negative* is a sampled negative that describes the positive's action in other words (a
paraphrase). On real data the classes are unknown, so the filter is label-free: ``fn_distance``
drops candidates whose sentence-embedding cosine distance to the positive is below it (on top of
the window), and :func:`paraphrase_mask` applies the same rule to in-batch negatives. With class
labels (the synthetic world), :func:`false_negative_rate` measures how many sampled negatives share
the positive's class.
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
    fn_distance: float = 0.0  # false-negative filter: candidates closer than this are paraphrases (0: off)


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
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    if cfg.mode == "random":
        for i in range(n):
            ok = groups != groups[i]
            if cfg.fn_distance > 0:
                ok &= (1.0 - (e @ e[i]).numpy()) >= cfg.fn_distance
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                cand = np.delete(np.arange(n), i)
            out[i] = rng.choice(cand, size=cfg.count, replace=cand.size < cfg.count)
        return out
    if cfg.mode != "auto":
        raise ValueError(f"unknown negative mode {cfg.mode!r} (auto or random)")
    mid = (cfg.min_distance + cfg.max_distance) / 2
    for start in range(0, n, 1024):
        dist = (1.0 - e[start : start + 1024] @ e.T).numpy()
        for r, i in enumerate(range(start, min(n, start + 1024))):
            d = dist[r]
            valid = groups != groups[i]
            valid[i] = False
            if cfg.fn_distance > 0:
                valid &= d >= cfg.fn_distance
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


def paraphrase_mask(anchors: torch.Tensor, texts: torch.Tensor, fn_distance: float) -> torch.Tensor:
    """(A, K) bool: text k is a paraphrase of anchor caption a (cosine distance of the sentence
    embeddings below ``fn_distance``, or the same sentence when ``fn_distance`` is 0)."""
    a = torch.nn.functional.normalize(anchors.float(), dim=-1)
    t = torch.nn.functional.normalize(texts.float(), dim=-1)
    return (1.0 - a @ t.T) < max(fn_distance, 1e-5)


def false_negative_rate(neg: np.ndarray, labels: list[str] | np.ndarray) -> float:
    """Fraction of sampled negatives (N, count) whose class equals their positive's class."""
    lab = np.asarray(labels)
    return float(np.mean(lab[neg] == lab[:, None]))
