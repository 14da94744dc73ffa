"""Automatic negative sampling (cosine-distance window) and the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.losses import InfoNCELoss, TripletLoss
from training.negatives import NegativeConfig, false_negative_rate, paraphrase_mask, sample_negatives


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
    exclude = torch.zeros(8, 16, dtype=torch.bool)
    exclude[:, :8] = torch.eye(8, dtype=torch.bool)
    assert torch.isfinite(loss(v, v, v.roll(1, 0), exclude=exclude))


def test_infonce_exclude_removes_a_false_negative():
    """A paraphrase of video 0's caption, used as its negative, raises the loss unless it is excluded."""
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    loss = InfoNCELoss()
    paraphrase = v[:1] * 0.99  # nearly video 0's own caption
    extra = torch.cat([paraphrase, torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)])
    exclude = torch.zeros(4, 8, dtype=torch.bool)
    with_fn = loss(v, v, extra, exclude=exclude)
    exclude[0, 4] = True
    without_fn = loss(v, v, extra, exclude=exclude)
    assert without_fn < with_fn
    exclude[:, :4] = True  # a video's own positive is never excluded
    assert torch.isfinite(loss(v, v, extra, exclude=exclude))


def _paraphrase_world() -> tuple[torch.Tensor, np.ndarray]:
    """Sentence embeddings of 6 classes x 20 captions: each class a direction, paraphrases close around it."""
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(6, 32, generator=g), dim=-1)
    e = centres.repeat_interleave(20, 0) + 0.25 * torch.randn(120, 32, generator=g) / 32**0.5
    return e, np.repeat(np.arange(6), 20)


def test_false_negative_filter_lowers_the_false_negative_rate():
    e, labels = _paraphrase_world()
    d = 1 - (torch.nn.functional.normalize(e, dim=-1) @ torch.nn.functional.normalize(e, dim=-1).T).numpy()
    same = labels[:, None] == labels[None]
    np.fill_diagonal(same, False)
    assert d[same].max() < 0.2 < d[~same & ~np.eye(120, dtype=bool)].min()  # the premise: paraphrases are close
    paper = sample_negatives(e, NegativeConfig(count=5, min_distance=0.0, max_distance=0.8, seed=0))
    filtered = sample_negatives(e, NegativeConfig(count=5, min_distance=0.0, max_distance=0.8, fn_distance=0.2))
    assert false_negative_rate(paper, labels) > 0.2  # the paper's window is full of paraphrases here
    assert false_negative_rate(filtered, labels) == 0.0
    rnd = sample_negatives(e, NegativeConfig(mode="random", count=5, fn_distance=0.2))
    assert false_negative_rate(rnd, labels) == 0.0


def test_false_negative_rate_counts_same_class_negatives():
    neg = np.array([[1, 2], [0, 2], [0, 1]])
    assert false_negative_rate(neg, ["a", "a", "b"]) == pytest.approx(2 / 6)


def test_paraphrase_mask():
    e, labels = _paraphrase_world()
    m = paraphrase_mask(e[:40], e, 0.2).numpy()
    assert np.array_equal(m, labels[:40, None] == labels[None])
    exact = paraphrase_mask(e[:3], torch.cat([e[:1], e[5:6]]), 0.0).numpy()  # 0: only the same sentence
    assert exact.tolist() == [[True, False], [False, False], [False, False]]


def test_infonce_per_video_negatives_count_only_for_their_video():
    """(B, K, D) extra negatives: video i's K are in its own denominator only, unlike a shared (K, D) set."""
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    loss = InfoNCELoss()
    other = torch.nn.functional.normalize(torch.randn(4, 2, 16), dim=-1)
    hard = other.clone()
    hard[1, 0] = v[0]  # video 0's own caption as a negative of video 1: hits video 1 only
    base, per_video = loss(v, v, other), loss(v, v, hard)
    shared = loss(v, v, hard.reshape(-1, 16))  # the same captions shared: video 0 meets its own caption too
    assert per_video > base and shared > per_video
