"""Training that knows idle (issue 21): windows where nothing happens, made from the training clips.

A camera mostly shows nothing happening. A model trained only on captioned actions has never seen a
still window, so the background descriptions of an actions file ("nothing moves") mean nothing to
it, and idle stretches raise false alarms. Every training batch therefore gets extra windows made
from its own clips, with no extra data:

- **still windows** (half of them): one frame of a clip held for the whole window, as is (``held``),
  with the camera drifting slowly (``drift``: 0.3-0.8 px per frame at the model's resolution), the
  light changing (``lighting``: brightness ramping by up to 25%) or sensor noise (``noise``), or two
  held frames of different clips, one after the other (``cut``: a scene change, a camera switching);
  paired with a caption saying that nothing happens (:data:`IDLE_CAPTIONS`);
- **straddling windows** (the other half): an action's start or end, part held frame and part clip
  (the clip's first frame held before its first frames, or its last frame held after its last), labelled
  by their overlap: the clip's own caption when at least half the window shows the action, an idle
  caption otherwise. Event boundaries then fall where the action is half in view.

All idle captions share one group id, so InfoNCE never treats two of them as each other's negatives;
an idle window's negatives are the batch's action captions, and every action window meets the idle
captions as negatives. Drift, lighting and noise need pixels (end-to-end training); with a frozen
backbone the still windows are held features (and cuts between two of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cezsar.preprocess import Preprocess

# "nothing happens", in the words people use: subject x predicate, plus a few whole sentences
_SUBJECTS = ("nothing", "everything", "the scene", "the object", "something", "the picture", "the view", "it")
_PREDICATES = (
    "stays still",
    "does not move",
    "remains in place",
    "is not moving",
    "stays the same",
    "keeps still",
    "is motionless",
    "rests without moving",
)
_WHOLE = (
    "nothing happens",
    "nothing moves",
    "nothing is happening",
    "no movement",
    "there is no motion",
    "a still scene",
    "a static view where nothing changes",
    "the camera shows a scene where nothing moves",
)
IDLE_CAPTIONS: tuple[str, ...] = (
    *_WHOLE,
    *(f"{s} {p}" for s in _SUBJECTS if s != "nothing" for p in _PREDICATES),
)
STILL_KINDS = ("held", "drift", "lighting", "noise", "cut")
PIXEL_KINDS = ("drift", "lighting", "noise")  # need pixels (end-to-end training)
IDLE_GROUP = "<idle>"  # the group (clip) id all idle captions share
DEFAULT_FRACTION = 0.2  # extra windows per batch, as a fraction of the batch


@dataclass(frozen=True)
class IdleSpec:
    """How many idle windows a batch gets and where the idle captions sit in the run's caption bank."""

    fraction: float = DEFAULT_FRACTION
    first_caption: int = 0  # index of IDLE_CAPTIONS[0] in the run's captions
    end2end: bool = True  # pixels (drift, lighting, noise possible) or features (held only)

    def counts(self, batch: int) -> tuple[int, int]:
        """(still, straddling) windows added to a batch of ``batch``."""
        k = int(round(self.fraction * batch))
        if k <= 0:
            return 0, 0
        still = max(1, (k + 1) // 2)
        return still, k - still


def _translate(frames: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
    """(T, C, S, S) frames, each moved by its own (dx, dy) pixels (sub-pixel, bilinear, edges repeated)."""
    t, _, h, w = frames.shape
    theta = torch.zeros((t, 2, 3), dtype=frames.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -torch.as_tensor(shifts[:, 0], dtype=frames.dtype) * 2.0 / w
    theta[:, 1, 2] = -torch.as_tensor(shifts[:, 1], dtype=frames.dtype) * 2.0 / h
    grid = torch.nn.functional.affine_grid(theta, list(frames.shape), align_corners=False)
    return torch.nn.functional.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def still_window(
    frame: torch.Tensor, t: int, kind: str, rng: np.random.Generator, pre: Preprocess | None
) -> torch.Tensor:
    """One frame (C, S, S) normalised, or a feature row (D,), held for ``t`` frames, with ``kind``'s effect
    (pixels only: a feature row is held as is)."""
    win = frame.unsqueeze(0).repeat(t, *([1] * frame.dim()))
    if frame.dim() != 3 or kind in ("held", "cut") or pre is None:
        return win
    std = torch.tensor(pre.std, dtype=win.dtype).view(1, 3, 1, 1)
    mean = torch.tensor(pre.mean, dtype=win.dtype).view(1, 3, 1, 1)
    if kind == "drift":
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.3, 0.8)
        steps = np.arange(t, dtype=np.float64)[:, None] * speed * np.array([[np.cos(angle), np.sin(angle)]])
        return _translate(win, steps)
    if kind == "lighting":
        gain = torch.as_tensor(np.linspace(1.0, rng.uniform(0.75, 1.25), t), dtype=win.dtype).view(t, 1, 1, 1)
        return gain * win + (gain - 1.0) * mean / std  # the pixels scaled, in normalised units
    if kind == "noise":
        sigma = rng.uniform(3.0, 8.0) / 255.0
        return win + torch.as_tensor(rng.normal(0.0, sigma, tuple(win.shape)), dtype=win.dtype) / std
    raise ValueError(f"unknown still-window kind {kind!r}")


def straddle_window(clip: torch.Tensor, held: int, at_start: bool) -> torch.Tensor:
    """A window of ``clip``'s length where ``held`` frames are the clip's first (``at_start``: before the
    action starts) or last frame (after it ends) held, and the rest is the clip's start or end."""
    t = clip.shape[0]
    if at_start:
        return torch.cat([clip[:1].repeat(held, *([1] * (clip.dim() - 1))), clip[: t - held]])
    return torch.cat([clip[held:], clip[-1:].repeat(held, *([1] * (clip.dim() - 1)))])


def extend(
    inputs: torch.Tensor, ids: np.ndarray, spec: IdleSpec, rng: np.random.Generator, pre: Preprocess | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """A training batch plus its idle windows: (B, T, ...) inputs with caption ids ``ids`` (B,) ->
    (B + K, T, ...) inputs and (B + K,) caption ids (an idle caption's id, or the source clip's own
    caption id for a straddling window that shows the action for at least half its length)."""
    b, t = inputs.shape[0], inputs.shape[1]
    n_still, n_straddle = spec.counts(b)
    if b == 0 or n_still + n_straddle == 0:
        return inputs, ids
    new: list[torch.Tensor] = []
    new_ids: list[int] = []

    def idle_id() -> int:
        return spec.first_caption + int(rng.integers(len(IDLE_CAPTIONS)))

    kinds = STILL_KINDS if spec.end2end else tuple(k for k in STILL_KINDS if k not in PIXEL_KINDS)
    for _ in range(n_still):
        src, k = int(rng.integers(b)), int(rng.integers(t))
        kind = kinds[int(rng.integers(len(kinds)))]
        win = still_window(inputs[src, k], t, kind, rng, pre if spec.end2end else None)
        if kind == "cut" and b > 1:  # the rest of the window: another clip's held frame
            other = (src + 1 + int(rng.integers(b - 1))) % b
            at = int(rng.integers(1, t))
            win[at:] = inputs[other, int(rng.integers(t))]
        new.append(win)
        new_ids.append(idle_id())
    for _ in range(n_straddle):
        src, held = int(rng.integers(b)), int(rng.integers(1, t))
        new.append(straddle_window(inputs[src], held, bool(rng.random() < 0.5)))
        new_ids.append(int(ids[src]) if t - held >= t / 2 else idle_id())
    out = torch.cat([inputs, torch.stack(new).to(inputs.dtype)])
    return out, np.concatenate([np.asarray(ids, dtype=np.int64), np.asarray(new_ids, dtype=np.int64)])


def caption_bank(
    fraction: float, captions: list[str], groups: list[str], end2end: bool
) -> tuple[IdleSpec | None, list[str], list[str]]:
    """(IdleSpec or None, the captions of the run's text bank, their groups): with idle windows the idle
    captions follow the run's captions, all in one group; ``fraction`` 0 trains on the captions alone."""
    from cezsar.errors import CezsarError

    if fraction <= 0:
        return None, captions, groups
    if fraction >= 1:
        raise CezsarError(f"--idle-fraction {fraction}: expected a fraction of the batch in [0, 1)")
    spec = IdleSpec(fraction, len(captions), end2end)
    return spec, [*captions, *IDLE_CAPTIONS], [*groups, *([IDLE_GROUP] * len(IDLE_CAPTIONS))]
