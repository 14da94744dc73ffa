"""A procedurally rendered, compositional action world for tests, CI and the demo.

One coloured shape (circle, square, triangle, cross) on a mildly textured background that
varies per clip performs one motion (the action). A class is a (shape, motion) pair, e.g.
"circle moving left"; colour is a nuisance factor, never part of the class. Test classes form a
compositional zero-shot split: each one's shape and motion are seen in training, the pair never.

Every motion is continuous or periodic, so any 2-second window inside a segment shows it.
Moving objects wrap around the frame edges. A faint afterimage of the object's two previous
frame states is drawn behind it (like a slow display's persistence), so the direction of a
motion is also visible within a single frame: a small frame CNN whose features are pooled
over space can still tell "moving left" from "moving right".

Shapes start upright (give or take a few degrees; only spinning turns them) and dataset.json
asks for the whole 128x128 frame resized to 64x64 (no crop), so objects near the edges stay in view.

Everything is drawn with OpenCV polygons (anti-aliased, sub-pixel) and composited with numpy;
deterministic by seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cezsar.errors import CezsarError
from cezsar.video import write_video

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
IDLE = "staying still"
MOTIONS: tuple[str, ...] = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "spinning",
    "growing",
    "shaking",
    IDLE,
)
ACTIVE_MOTIONS: tuple[str, ...] = tuple(m for m in MOTIONS if m != IDLE)

# BGR; saturated and bright, against a dull low-saturation background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (45, 45, 225),
    "green": (70, 200, 60),
    "blue": (235, 120, 40),
    "yellow": (40, 225, 235),
    "orange": (30, 140, 250),
    "purple": (205, 70, 175),
}

VIDEO_FPS = 8.0
FRAME_SIZE = 128
CLIP_SECONDS = 4.0
DEFAULTS: dict[str, Any] = {"fps": 4.0, "frames": 8, "image_size": 64, "resize": 64, "lr": 1e-3, "epochs": 30}
TRAIN_CLIPS_PER_CLASS = 40
EVAL_CLIPS_PER_CLASS = 8

# Afterimage: (frames back, opacity), oldest first.
_TRAIL = ((2, 0.22), (1, 0.45))

# ---------------------------------------------------------------------------------------------
# Language: shape words, motion phrases, caption and description templates.

_SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round disc", "ball"),
    "square": ("square", "box", "square block"),
    "triangle": ("triangle", "triangular shape", "three-sided shape"),
    "cross": ("cross", "plus sign", "plus-shaped cross"),
}

# Third-person verb phrases ("a red circle ___").
_MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "moving left": (
        "moves to the left",
        "slides to the left",
        "travels leftward",
        "drifts toward the left",
        "glides from right to left",
        "heads left across the screen",
    ),
    "moving right": (
        "moves to the right",
        "slides to the right",
        "travels rightward",
        "drifts toward the right",
        "glides from left to right",
        "heads right across the screen",
    ),
    "moving up": (
        "moves up",
        "rises",
        "floats upward",
        "drifts toward the top",
        "climbs upward",
        "glides from bottom to top",
    ),
    "moving down": (
        "moves down",
        "sinks",
        "falls downward",
        "drifts toward the bottom",
        "slides downward",
        "glides from top to bottom",
    ),
    "spinning": (
        "spins",
        "keeps spinning",
        "rotates in place",
        "turns around and around",
        "twirls",
        "spins around its center",
    ),
    "growing": ("grows", "gets bigger", "expands", "keeps growing larger", "swells up", "increases in size"),
    "shaking": (
        "shakes",
        "jitters from side to side",
        "trembles",
        "vibrates",
        "wobbles quickly",
        "shakes back and forth",
    ),
    IDLE: ("stays still", "does not move", "sits motionless", "remains in place", "rests without moving", "stays put"),
}

# Participle phrases ("a circle ___").
_MOTION_GERUNDS: dict[str, tuple[str, ...]] = {
    "moving left": ("moving to the left", "sliding left", "travelling leftward"),
    "moving right": ("moving to the right", "sliding right", "travelling rightward"),
    "moving up": ("moving up", "rising", "floating upward"),
    "moving down": ("moving down", "sinking", "falling downward"),
    "spinning": ("spinning", "rotating in place", "twirling"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shaking": ("shaking", "trembling", "jittering from side to side"),
    IDLE: ("staying still", "not moving", "sitting motionless"),
}

# Captions describe the action first: colour, size and background are mentioned only sometimes
# (as in real captions, where incidental detail is sparse). When every caption named the colour, the
# easiest way to match captions was by colour, and the model learned colour instead of motion.
_CAPTION_TEMPLATES = (
    "{a_subject} {phrase}",
    "the {subject} {phrase}",
    "there is {a_subject} that {phrase}",
    "{a_subject} {phrase} on a {bg} background",
    "we see {a_subject} which {phrase}",
    "{a_subject} {gerund}",
)
_P_COLOUR = 0.3
_P_SIZE = 0.2
_P_GENERIC = 0.2
_GENERIC_WORDS = ("object", "shape", "item")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def class_name(shape: str, motion: str) -> str:
    return f"{shape} {motion}"


def parse_class_name(name: str) -> tuple[str, str]:
    """Inverse of :func:`class_name`."""
    shape, _, motion = name.partition(" ")
    if shape not in SHAPES or motion not in MOTIONS:
        raise CezsarError(f"{name!r}: not a synthetic class name (shape + motion)")
    return shape, motion


def class_descriptions(shape: str, motion: str) -> list[str]:
    """Four colour-free descriptions of a class, sharing the captions' vocabulary."""
    sw, ph, ge = _SHAPE_WORDS[shape], _MOTION_PHRASES[motion], _MOTION_GERUNDS[motion]
    return [
        f"{_with_article(sw[0])} {ph[0]}",
        f"{_with_article(sw[1])} that {ph[1]}",
        f"{_with_article(sw[0])} {ge[0]}",
        f"a video of {_with_article(sw[2 % len(sw)])} that {ph[2]}",
    ]


def motion_descriptions(motion: str) -> list[str]:
    """Shape-agnostic descriptions of a motion, for watching a stream whatever the shape."""
    if motion not in _MOTION_PHRASES:
        raise CezsarError(f"{motion!r}: unknown motion (known: {', '.join(MOTIONS)})")
    ph, ge = _MOTION_PHRASES[motion], _MOTION_GERUNDS[motion]
    return [
        f"something {ph[0]}",
        f"an object that {ph[1]}",
        f"a shape {ge[0]}",
        f"a thing {ph[3]}",
    ]


def _caption(rng: np.random.Generator, shape: str, motion: str, colour: str, size_word: str, bg: str) -> str:
    template = _CAPTION_TEMPLATES[int(rng.integers(len(_CAPTION_TEMPLATES)))]
    shape_word = _SHAPE_WORDS[shape][int(rng.integers(len(_SHAPE_WORDS[shape])))]
    if rng.random() < _P_GENERIC:  # people often do not name the object at all
        shape_word = _GENERIC_WORDS[int(rng.integers(len(_GENERIC_WORDS)))]
    phrase = _MOTION_PHRASES[motion][int(rng.integers(len(_MOTION_PHRASES[motion])))]
    gerund = _MOTION_GERUNDS[motion][int(rng.integers(len(_MOTION_GERUNDS[motion])))]
    words = []
    if size_word and rng.random() < _P_SIZE:
        words.append(size_word)
    if rng.random() < _P_COLOUR:
        words.append(colour)
    subject = " ".join([*words, shape_word])
    text = template.format(a_subject=_with_article(subject), subject=subject, phrase=phrase, gerund=gerund, bg=bg)
    if text in class_descriptions(shape, motion):  # keep the class descriptions unseen in training text
        return _caption(rng, shape, motion, colour, size_word, bg)
    return text


# ---------------------------------------------------------------------------------------------
# Geometry and rendering.


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _cross() -> np.ndarray:
    w, L = 0.34, 1.0
    return np.array(
        [(w, -L), (w, -w), (L, -w), (L, w), (w, w), (w, L), (-w, L), (-w, w), (-L, w), (-L, -w), (-w, -w), (-w, -L)],
        dtype=np.float64,
    )


# Unit polygons: list of (polygon, brightness factor). The circle's dark bar shows its spin.
_PARTS: dict[str, list[tuple[np.ndarray, float]]] = {
    "circle": [
        (_regular(36, 1.0, 0.0), 1.0),
        (np.array([(-0.05, -0.17), (0.92, -0.17), (0.92, 0.17), (-0.05, 0.17)]), 0.3),
    ],
    "square": [(np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]), 1.0)],
    "triangle": [(_regular(3, 1.15, -np.pi / 2), 1.0)],
    "cross": [(_cross(), 1.0)],
}

_SHIFT = 4  # sub-pixel bits for cv2 drawing


@dataclass
class _Object:
    shape: str
    colour: tuple[int, int, int]
    radius: float
    speed: float  # px/s
    speed_max: float  # px/s, top of the speed range
    spin: float  # rad/s, signed
    grow_period: float  # s
    grow_range: tuple[float, float]
    shake: float  # px


@dataclass
class _State:
    x: float
    y: float
    angle: float
    scale: float = 1.0
    phase: float = 0.0
    jx: float = 0.0
    jy: float = 0.0


def _random_object(rng: np.random.Generator, shape: str, colour: str, size: int) -> _Object:
    k = size / 128.0
    return _Object(
        shape=shape,
        colour=COLOURS[colour],
        radius=float(rng.uniform(15.0, 22.0)) * k,
        speed=float(rng.uniform(40.0, 54.0)) * k,
        speed_max=54.0 * k,
        spin=float(rng.uniform(2.0, 2.8)) * float(rng.choice([-1.0, 1.0])),
        grow_period=float(rng.uniform(1.4, 2.0)),
        grow_range=(0.55, 1.5),
        shake=float(rng.uniform(5.0, 8.0)) * k,
    )


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A dull, low-saturation backdrop: a grey level with a slight tint, soft luminance blobs, a little
    colour mottling and fine static grain. Varies per clip."""
    grey = float(rng.uniform(55.0, 120.0))
    tint = rng.uniform(-7.0, 7.0, size=3)
    luma = rng.uniform(-1.0, 1.0, size=(5, 5)).astype(np.float32)
    chroma = rng.uniform(-1.0, 1.0, size=(4, 4, 3)).astype(np.float32)
    texture = cv2.resize(luma, (size, size), interpolation=cv2.INTER_CUBIC)[:, :, None] * 18.0
    texture = texture + cv2.resize(chroma, (size, size), interpolation=cv2.INTER_CUBIC) * 5.0
    fine = rng.normal(0.0, 3.0, size=(size, size, 1)).astype(np.float32)
    bg = np.clip(grey + tint[None, None, :] + texture + fine, 0, 255).astype(np.float32)
    word = "dark" if grey < 75 else "grey" if grey < 100 else "light grey"
    return bg, word


def _step(state: _State, motion: str, obj: _Object, dt: float, size: int, rng: np.random.Generator) -> _State:
    s = _State(state.x, state.y, state.angle, 1.0, state.phase)
    if motion == "moving left":
        s.x = (s.x - obj.speed * dt) % size
    elif motion == "moving right":
        s.x = (s.x + obj.speed * dt) % size
    elif motion == "moving up":
        s.y = (s.y - obj.speed * dt) % size
    elif motion == "moving down":
        s.y = (s.y + obj.speed * dt) % size
    elif motion == "spinning":
        s.angle = (s.angle + obj.spin * dt) % (2 * np.pi)
    elif motion == "growing":
        s.phase = (s.phase + dt / obj.grow_period) % 1.0
        lo, hi = obj.grow_range
        s.scale = lo + (hi - lo) * s.phase
    elif motion == "shaking":
        s.jx = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 1.0) * obj.shake)
        s.jy = float(rng.uniform(-0.15, 0.15) * obj.shake)
    elif motion == IDLE:
        s.jx, s.jy = (float(v) for v in rng.normal(0.0, 0.25, size=2))
    else:
        raise CezsarError(f"{motion!r}: unknown motion (known: {', '.join(MOTIONS)})")
    if motion != "growing":
        s.phase = 0.0
    return s


def _draw_mask(obj: _Object, st: _State, size: int, part: np.ndarray) -> np.ndarray:
    c, s = np.cos(st.angle), np.sin(st.angle)
    rot = np.array([[c, -s], [s, c]])
    pts = part @ rot.T * (obj.radius * st.scale) + np.array([st.x + st.jx, st.y + st.jy])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    polys = []
    for dx in (-size, 0, size):
        if lo[0] + dx >= size or hi[0] + dx < 0:
            continue
        for dy in (-size, 0, size):
            if lo[1] + dy >= size or hi[1] + dy < 0:
                continue
            polys.append(np.round((pts + (dx, dy)) * (1 << _SHIFT)).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    if polys:
        cv2.fillPoly(mask, polys, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return mask


def _composite(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray, opacity: float) -> None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = mask[y0:y1, x0:x1, None].astype(np.float32) * (opacity / 255.0)
    region = canvas[y0:y1, x0:x1]
    region += (colour - region) * a


_MOVES: dict[str, tuple[int, float]] = {  # motion -> (axis, direction)
    "moving left": (0, -1.0),
    "moving right": (0, 1.0),
    "moving up": (1, -1.0),
    "moving down": (1, 1.0),
}


def _margin(obj: _Object) -> float:
    """Distance from the edges that keeps a non-travelling object whole (growing and shaking included)."""
    return 1.8 * obj.radius + 2.0


def _settle_speed(
    obj: _Object, state: _State, motion: str, frames: int, dt: float, size: int, rng: np.random.Generator
) -> float:
    """A travelling speed in the usual range whose segment ends with the object clear of the edges."""
    axis, sign = _MOVES[motion]
    pos = state.x if axis == 0 else state.y
    m = _margin(obj)
    speeds = np.linspace(0.75, 1.0, 41) * obj.speed_max
    end = (pos + sign * speeds * dt * frames) % size
    ok = speeds[(end >= m) & (end <= size - m)]
    return float(rng.choice(ok)) if ok.size else obj.speed


def _render(
    obj: _Object,
    plan: Sequence[tuple[str, float]],
    rng: np.random.Generator,
    fps: float,
    size: int,
    background: np.ndarray,
    settle: bool = False,
) -> tuple[list[np.ndarray], list[str]]:
    """Frames (BGR uint8) for a motion plan, and the motion shown at each frame.

    Frame ``i`` shows the plan entry active at time ``i / fps``. The object starts clear of the
    edges unless it is travelling; with ``settle``, each travelling entry picks its speed so that the
    object ends clear of the edges (streams: the next action is not cut in two by the frame border).
    """
    bounds = np.cumsum([float(sec) for _, sec in plan])
    n = int(round(bounds[-1] * fps))
    entry = [min(int(np.searchsorted(bounds, i / fps, side="right")), len(plan) - 1) for i in range(n)]
    motions = [plan[e][0] for e in entry]
    dt = 1.0 / fps
    m = _margin(obj)
    lo, hi = (0.0, float(size)) if motions[0] in _MOVES else (m, size - m)
    # Upright, give or take a few degrees (the circle's mark points anywhere): a small CNN then learns
    # shapes from a few hundred clips without having to learn rotation invariance first.
    angle = float(rng.uniform(0, 2 * np.pi)) if obj.shape == "circle" else float(rng.normal(0.0, 0.1))
    state = _State(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)), angle)
    back = max(k for k, _ in _TRAIL)
    states: list[_State] = []
    # Warm-up frames so the first frame already has its afterimage.
    for _ in range(back):
        state = _step(state, motions[0], obj, dt, size, rng)
        states.append(state)
    for i, mo in enumerate(motions):
        if settle and mo in _MOVES and (i == 0 or entry[i] != entry[i - 1]):
            obj.speed = _settle_speed(obj, state, mo, entry.count(entry[i]), dt, size, rng)
        state = _step(state, mo, obj, dt, size, rng)
        states.append(state)
    base = np.asarray(obj.colour, dtype=np.float32)
    parts = [(p, base * f) for p, f in _PARTS[obj.shape]]
    frames = []
    for i in range(n):
        canvas = background.copy()
        layers = [(states[back + i - k], a) for k, a in _TRAIL] + [(states[back + i], 1.0)]
        for st, opacity in layers:
            for poly, col in parts:
                _composite(canvas, _draw_mask(obj, st, size, poly), col, opacity)
        frames.append(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    return frames, motions


def _check_plan(plan: Sequence[tuple[str, float]]) -> None:
    if not plan:
        raise CezsarError("stream plan is empty")
    for motion, sec in plan:
        if motion not in MOTIONS:
            raise CezsarError(f"stream plan: unknown motion {motion!r} (known: {', '.join(MOTIONS)})")
        if not float(sec) > 0:
            raise CezsarError(f"stream plan: {motion!r} lasts {sec} s; durations must be > 0")


def render_clip(
    shape: str,
    motion: str,
    seed: int,
    seconds: float = CLIP_SECONDS,
    fps: float = VIDEO_FPS,
    size: int = FRAME_SIZE,
    colour: str | None = None,
) -> np.ndarray:
    """Frames (T, size, size, 3) BGR uint8 of one shape doing one motion (not written to disk)."""
    if shape not in SHAPES:
        raise CezsarError(f"{shape!r}: unknown shape (known: {', '.join(SHAPES)})")
    _check_plan([(motion, seconds)])
    rng = np.random.default_rng([seed, 7])
    colour = colour or str(rng.choice(sorted(COLOURS)))
    bg, _ = _background(rng, size)
    frames, _ = _render(_random_object(rng, shape, colour, size), [(motion, seconds)], rng, fps, size, bg)
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------
# Streams for the edge demo.


def default_stream_plan(seed: int = 0) -> list[tuple[str, float]]:
    """About 90 s: five distinct actions of 8-12 s separated (and framed) by 5-8 s of staying still."""
    rng = np.random.default_rng([seed, 11])
    actions = [ACTIVE_MOTIONS[int(i)] for i in rng.permutation(len(ACTIVE_MOTIONS))[:5]]
    plan: list[tuple[str, float]] = [(IDLE, round(float(rng.uniform(5, 8)), 1))]
    for a in actions:
        plan.append((a, round(float(rng.uniform(8, 12)), 1)))
        plan.append((IDLE, round(float(rng.uniform(5, 8)), 1)))
    return plan


def render_stream(
    path: str | Path,
    plan: Sequence[tuple[str, float]],
    seed: int = 0,
    fps: float = VIDEO_FPS,
    size: int = FRAME_SIZE,
    shape: str | None = None,
    colour: str | None = None,
) -> list[dict[str, Any]]:
    """Write one long MP4 where a single object performs ``plan`` [(motion, seconds), ...] in order.

    Returns the ground truth: ``[{"action": motion, "start": s, "end": e}]`` for the parts that are
    not "staying still" (adjacent entries of the same motion merged), times in seconds. Frame ``i``
    (shown from ``i / fps``) shows the motion active at time ``i / fps``.
    """
    _check_plan(plan)
    if shape is not None and shape not in SHAPES:
        raise CezsarError(f"{shape!r}: unknown shape (known: {', '.join(SHAPES)})")
    if colour is not None and colour not in COLOURS:
        raise CezsarError(f"{colour!r}: unknown colour (known: {', '.join(COLOURS)})")
    rng = np.random.default_rng([seed, 13])
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    colour = colour or sorted(COLOURS)[int(rng.integers(len(COLOURS)))]
    bg, _ = _background(rng, size)
    obj = _random_object(rng, shape, colour, size)
    frames, _ = _render(obj, plan, rng, fps, size, bg, settle=True)
    write_video(path, frames, fps)
    segments: list[dict[str, Any]] = []
    t = 0.0
    for motion, sec in plan:
        start, end = t, t + float(sec)
        t = end
        if motion == IDLE:
            continue
        if segments and segments[-1]["action"] == motion and abs(segments[-1]["end"] - start) < 1e-9:
            segments[-1]["end"] = round(end, 6)
        else:
            segments.append({"action": motion, "start": round(start, 6), "end": round(end, 6)})
    return segments


# ---------------------------------------------------------------------------------------------
# The world.
