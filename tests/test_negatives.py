"""Automatic negative sampling (cosine-distance window) and the losses."""

from __future__ import annotations

import numpy as np
import torch

from training.losses import InfoNCELoss, TripletLoss
from training.negatives import NegativeConfig, sample_negatives


def test_auto_negatives_respect_window_and_groups():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(60, 16), dim=-1)
    groups = [i // 3 for i in range(60)]
    cfg = NegativeConfig(mode="auto", count=5, min_distance=0.6, max_distance=1.2, seed=1)
    neg = sample_negatives(e, cfg, group=groups)
    assert neg.shape == (60, 5)
    d = 1 - (e @ e.T).numpy()
    for i in range(60):
        for j in neg[i]:
            assert groups[j] != groups[i]
            assert 0.6 < d[i, j] < 1.2


def test_auto_negatives_fill_in_when_window_is_empty():
    e = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    neg = sample_negatives(e, NegativeConfig(count=4, min_distance=5.0, max_distance=6.0))
    assert neg.shape == (10, 4)
    assert all(i not in neg[i] for i in range(10))


def test_random_negatives_are_deterministic_and_exclude_self():
    e = torch.randn(20, 8)
    a = sample_negatives(e, NegativeConfig(mode="random", count=3, seed=7))
    b = sample_negatives(e, NegativeConfig(mode="random", count=3, seed=7))
    assert np.array_equal(a, b)
    assert all(i not in a[i] for i in range(20))


def test_triplet_loss_zero_when_margin_met():
    v = torch.tensor([[1.0, 0.0]])
    assert TripletLoss(margin=1.0)(v, v, -v * 1.0).item() == 0.0  # d(v,v)=0, d(v,-v)=2 > 0 + 1
    assert TripletLoss(margin=1.0)(v, -v, v).item() > 0


def test_infonce_prefers_matching_pairs():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    loss = InfoNCELoss()
    good = loss(v, v)
    bad = loss(v, v.roll(1, 0))
    assert good < bad
    same = torch.eye(8, dtype=torch.bool)
    assert torch.isfinite(loss(v, v, v.roll(1, 0), same=same))
