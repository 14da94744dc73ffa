"""Idle windows in training (issue 21): still windows with captions saying nothing happens, and windows
straddling an action's start or end labelled by their overlap."""

from __future__ import annotations

import numpy as np
import torch

from cezsar.preprocess import Preprocess
from training.idle import IDLE_CAPTIONS, IdleSpec, extend, still_window, straddle_window

PRE = Preprocess(size=16, resize=16)


def clips(b: int = 8, t: int = 8) -> torch.Tensor:
    """Clips whose every frame is distinct (frame value = 100 * clip + frame)."""
    x = torch.arange(b * t, dtype=torch.float32).view(b, t, 1, 1, 1) + 100 * torch.arange(b).view(b, 1, 1, 1, 1)
    return x.expand(b, t, 3, 16, 16).clone()


def test_still_windows_hold_one_frame_with_their_effect() -> None:
    rng = np.random.default_rng(0)
    frame = torch.randn(3, 16, 16)
    held = still_window(frame, 8, "held", rng, PRE)
    assert held.shape == (8, 3, 16, 16) and torch.equal(held[0], held[-1]) and torch.equal(held[0], frame)
    for kind in ("drift", "lighting", "noise"):
        w = still_window(frame, 8, kind, rng, PRE)
        assert w.shape == held.shape and torch.allclose(w[0], frame, atol=0.5) and not torch.allclose(w[-1], w[0])
    feat = still_window(torch.randn(32), 8, "drift", rng, None)  # features: held as they are
    assert feat.shape == (8, 32) and torch.equal(feat[0], feat[7])


def test_straddling_windows_are_part_held_frame_part_clip() -> None:
    c = clips()[0]
    start = straddle_window(c, 3, at_start=True)
    assert [float(f[0, 0, 0]) for f in start] == [0, 0, 0, 0, 1, 2, 3, 4]
    end = straddle_window(c, 3, at_start=False)
    assert [float(f[0, 0, 0]) for f in end] == [3, 4, 5, 6, 7, 7, 7, 7]


def test_a_batch_gets_its_idle_windows_and_their_captions() -> None:
    x, ids = clips(), np.arange(8) + 10
    spec = IdleSpec(fraction=0.5, first_caption=1000, end2end=True)
    out, got = extend(x, ids, spec, np.random.default_rng(1), PRE)
    assert out.shape == (12, 8, 3, 16, 16) and torch.equal(out[:8], x) and np.array_equal(got[:8], ids)
    idle = (got[8:] >= 1000) & (got[8:] < 1000 + len(IDLE_CAPTIONS))
    own = np.isin(got[8:], ids)
    assert np.all(idle | own) and idle[:2].all()  # the still windows (first half) have idle captions
    for k in range(8, 12):  # a straddling window with its clip's caption shows the action at least half the time
        if got[k] in ids:
            src = int(got[k]) - 10
            values = {float(f[0, 0, 0]) for f in out[k]}
            shown = sum(1 for f in out[k] if float(f[0, 0, 0]) in {float(v[0, 0, 0]) for v in x[src]})
            assert shown == 8 and len(values) >= 5  # frames of its clip, at least half of them distinct
    assert extend(x, ids, IdleSpec(fraction=0.0), np.random.default_rng(0))[0] is x


def test_cut_windows_join_two_clips_held_frames() -> None:
    x = clips()
    rng = np.random.default_rng(3)
    spec = IdleSpec(fraction=1.0, first_caption=0, end2end=False)  # features: held and cut only
    feats = x[:, :, 0, 0, 0].unsqueeze(-1).repeat(1, 1, 4)  # (B, T, 4)
    seen_cut = False
    for _ in range(20):
        out, _ = extend(feats, np.arange(8), spec, rng)
        for w in out[8 : 8 + spec.counts(8)[0]]:
            vals = sorted({float(v[0]) for v in w})
            assert len(vals) in (1, 2)  # one held frame, or two (a cut)
            seen_cut |= len(vals) == 2 and abs(vals[1] - vals[0]) >= 90  # from two different clips
    assert seen_cut
