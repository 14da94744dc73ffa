"""Continuous streams of the synthetic world with their truth (issue 21): what `cezsar eval-stream` measures.

A user never sees a clip: a camera shows long stretches where nothing happens, an action now and then,
sometimes two actions back to back. These streams are built that way, from the world's own objects
and motions, into ``WORLD/streams/<group>/``:

    <group>_NN.mp4      the streams (8 fps, 128 px, like the world's clips)
    truth.jsonl         one line per action segment: {"stream", "action", "start", "end"} (seconds)
    actions.yaml        the actions file to watch them with: the group's classes (the world's class
                        descriptions), a background (what "nothing happens" looks like) and
                        ``exclusive: true`` (one object in view, one motion at a time)
    streams.json        how each stream was made: its scenes and parts (idle kinds, cuts, transitions)

Groups: ``unseen`` (the world's unseen classes: the zero-shot test), ``seen`` (seen classes, rendered
afresh: validation, e.g. for choosing thresholds), ``mixed`` (both, watched together) and ``idle``
(long streams where nothing happens, watched for the unseen classes: false alarms per idle hour). Each action
lasts 2.5-8 s; between actions, 3-8 s of idle of one of four kinds: ``still`` (the object stays put,
as the world's "staying still"), ``drift`` (the camera pans slowly: 2-4 px/s, the offset stays),
``noise`` (sensor noise), ``lighting`` (the brightness ramps to 0.7-1.3 and stays). A new object on a
new background (a cut) comes in the middle of an idle stretch; half the actions whose successor has the same shape run
the previous one directly (a transition: the same object changes its motion, when the next class has
the same shape). Streams hold 3 to 8 actions (about 25 to 110 s). Deterministic by seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cezsar.data.synthetic import (
    COLOURS,
    FRAME_SIZE,
    IDLE,
    VIDEO_FPS,
    _background,
    _random_object,
    _render,
    class_descriptions,
    motion_descriptions,
    parse_class_name,
)
from cezsar.errors import CezsarError
from cezsar.video import write_video

IDLE_KINDS = ("still", "drift", "noise", "lighting")
GROUPS = ("unseen", "seen", "mixed", "idle")
IDLE_STREAMS = 3  # streams of the idle group
IDLE_STREAM_SECONDS = (150.0, 240.0)
TRUTH_FILE = "truth.jsonl"
ACTIONS_FILE = "actions.yaml"
PLAN_FILE = "streams.json"
ACTION_SECONDS = (2.5, 8.0)
IDLE_SECONDS = (3.0, 8.0)
P_TRANSITION = 0.5
# what "nothing happens" looks like, in the actions files written here (the demo's background words too)
BACKGROUND = (*motion_descriptions(IDLE), "nothing moves")


@dataclass
class Part:
    motion: str  # a motion of the world (IDLE for idle parts)
    seconds: float
    effect: str = "still"  # idle parts: one of IDLE_KINDS


@dataclass
class Scene:
    """One object on one background; a cut separates scenes."""

    shape: str
    parts: list[Part] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.parts)


def _idle(rng: np.random.Generator, seconds: float | None = None) -> Part:
    sec = float(rng.uniform(*IDLE_SECONDS)) if seconds is None else seconds
    return Part(IDLE, round(sec, 1), IDLE_KINDS[int(rng.integers(len(IDLE_KINDS)))])


def _order(rng: np.random.Generator, classes: Sequence[str], repeats: int) -> list[str]:
    """Each class ``repeats`` times, shuffled, never the same class twice in a row (when avoidable)."""
    pool = [c for c in classes for _ in range(repeats)]
    for _ in range(50):
        order = [pool[int(i)] for i in rng.permutation(len(pool))]
        if len(set(pool)) < 2 or all(a != b for a, b in zip(order, order[1:], strict=False)):
            return order
    return order


def plan_stream(rng: np.random.Generator, actions: Sequence[str]) -> list[Scene]:
    """Scenes for ``actions`` (class names, in order) with idle stretches, cuts and transitions."""
    scenes: list[Scene] = []
    direct = False  # the previous action ends where this one starts (a transition)
    for k, cname in enumerate(actions):
        shape, motion = parse_class_name(cname)
        act = Part(motion, round(float(rng.uniform(*ACTION_SECONDS)), 1))
        cur = scenes[-1] if scenes else None
        if direct and cur is not None:
            cur.parts.append(act)  # the same object changes its motion
        elif cur is not None and cur.shape == shape and rng.random() < 0.5:
            cur.parts += [_idle(rng), act]  # idle, then the same object acts again
        else:
            idle = _idle(rng)
            if cur is not None:  # a cut in the middle of the idle stretch
                first = round(float(rng.uniform(1.0, max(1.0, idle.seconds - 1.0))), 1)
                cur.parts.append(Part(IDLE, first, idle.effect))
                idle = Part(IDLE, round(max(1.0, idle.seconds - first), 1), _idle(rng).effect)
            scenes.append(Scene(shape, [idle, act]))
        nxt = actions[k + 1] if k + 1 < len(actions) else None
        direct = nxt is not None and parse_class_name(nxt)[0] == shape and bool(rng.random() < P_TRANSITION)
    scenes[-1].parts.append(_idle(rng))
    return scenes


def _adjust(frame: np.ndarray, offset: np.ndarray, gain: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A frame shifted by ``offset`` px (camera drift), scaled by ``gain`` (lighting), plus noise."""
    img = frame.astype(np.float32)
    if offset.any():
        m = np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]]], dtype=np.float32)
        img = np.asarray(cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT))
    if gain != 1.0:
        img = img * gain
    if sigma:
        img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _effects(frames: list[np.ndarray], parts: Sequence[Part], fps: float, rng: np.random.Generator) -> None:
    """Apply the idle parts' effects in place. Drift and lighting persist to the end of the scene (no jump
    back when the idle part ends); noise lasts as long as its part."""
    offset = np.zeros(2)
    gain = 1.0
    i0 = 0
    for part in parts:
        n = int(round(part.seconds * fps))
        velocity = np.zeros(2)
        gain_to = gain
        if part.effect == "drift":
            angle = float(rng.uniform(0, 2 * np.pi))
            velocity = float(rng.uniform(2.0, 4.0)) * np.array([np.cos(angle), np.sin(angle)]) / fps
        elif part.effect == "lighting":
            gain_to = gain * float(rng.uniform(0.7, 1.3))
        sigma = float(rng.uniform(4.0, 8.0)) if part.effect == "noise" and part.motion == IDLE else 0.0
        g0 = gain
        for k in range(i0, min(i0 + n, len(frames))):
            offset = offset + velocity
            gain = g0 + (gain_to - g0) * (k - i0 + 1) / max(n, 1)
            frames[k] = _adjust(frames[k], offset, gain, sigma, rng)
        i0 += n
    for k in range(i0, len(frames)):  # rounding leftovers keep the last state
        frames[k] = _adjust(frames[k], offset, gain, 0.0, rng)


def render_scenes(
    path: str | Path, scenes: Sequence[Scene], seed: int = 0, fps: float = VIDEO_FPS, size: int = FRAME_SIZE
) -> list[dict[str, Any]]:
    """Write one MP4 of ``scenes`` (cut to one another) and return its truth: ``[{"action": class name,
    "start", "end"}]`` for the parts that are not idle (adjacent parts of one class merged)."""
    rng = np.random.default_rng([seed, 17])
    colours = sorted(COLOURS)
    frames: list[np.ndarray] = []
    truth: list[dict[str, Any]] = []
    t = 0.0
    for scene in scenes:
        if not scene.parts:
            raise CezsarError("stream scene has no parts")
        bg, _ = _background(rng, size)
        obj = _random_object(rng, scene.shape, colours[int(rng.integers(len(colours)))], size)
        plan = [(p.motion, p.seconds) for p in scene.parts]
        got, _ = _render(obj, plan, rng, fps, size, bg, settle=True)
        _effects(got, scene.parts, fps, rng)
        frames += got
        for p in scene.parts:
            start, end = t, t + p.seconds
            t = end
            if p.motion == IDLE:
                continue
            name = f"{scene.shape} {p.motion}"
            if truth and truth[-1]["action"] == name and abs(truth[-1]["end"] - start) < 1e-9:
                truth[-1]["end"] = round(end, 6)
            else:
                truth.append({"action": name, "start": round(start, 6), "end": round(end, 6)})
        t = len(frames) / fps  # frame-exact: the next scene starts at the next frame
    write_video(path, frames, fps)
    return truth


def _group_streams(rng: np.random.Generator, classes: Sequence[str], repeats: int) -> list[list[str]]:
    """The actions of each stream of a group: every class ``repeats`` times, 3-8 actions per stream."""
    order = _order(rng, classes, repeats)
    out: list[list[str]] = []
    i = 0
    while i < len(order):
        n = int(rng.integers(3, 9))
        if len(order) - (i + n) < 3:  # no stream shorter than 3 actions at the end
            n = len(order) - i
        out.append(order[i : i + n])
        i += n
    return out


def write_stream_group(
    out_dir: str | Path, group: str, classes: Sequence[str], seed: int, repeats: int = 2
) -> dict[str, Any]:
    """Render one group of streams with its truth.jsonl, actions.yaml and streams.json into ``out_dir``."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 19, GROUPS.index(group) if group in GROUPS else 99])
    lines: list[str] = []
    plans: list[dict[str, Any]] = []
    seconds = 0.0
    for k, actions in enumerate(_group_streams(rng, classes, repeats)):
        name = f"{group}_{k:02d}.mp4"
        scenes = plan_stream(rng, actions)
        truth = render_scenes(out_dir / name, scenes, seed=int(rng.integers(1 << 30)))
        lines += [json.dumps({"stream": name, **s}) for s in truth]
        dur = sum(s.seconds for s in scenes)
        seconds += dur
        plans.append(
            {
                "stream": name,
                "seconds": round(dur, 2),
                "scenes": [
                    {
                        "shape": s.shape,
                        "parts": [[p.motion, p.seconds, p.effect if p.motion == IDLE else None] for p in s.parts],
                    }  # fmt: skip
                    for s in scenes
                ],
            }
        )
    (out_dir / TRUTH_FILE).write_text("".join(line + "\n" for line in lines))
    doc = {
        "exclusive": True,  # one object in view doing one thing at a time (docs/live.md)
        "background": list(BACKGROUND),
        "actions": [{"name": c, "descriptions": class_descriptions(*parse_class_name(c))} for c in sorted(classes)],
    }
    (out_dir / ACTIONS_FILE).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    (out_dir / PLAN_FILE).write_text(json.dumps({"group": group, "seed": seed, "streams": plans}, indent=1) + "\n")
    return {"group": group, "streams": len(plans), "segments": len(lines), "seconds": round(seconds, 1)}


def write_idle_group(out_dir: str | Path, watched: Sequence[str], seed: int) -> dict[str, Any]:
    """Long streams where nothing happens (every idle kind, a cut to another scene every 20-60 s), watched
    for ``watched``: false alarms per idle hour need more idle than the action streams hold."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 19, GROUPS.index("idle")])
    shapes = sorted({parse_class_name(c)[0] for c in watched}) or ["circle"]
    plans, seconds = [], 0.0
    for k in range(IDLE_STREAMS):
        total = float(rng.uniform(*IDLE_STREAM_SECONDS))
        scenes: list[Scene] = []
        while sum(sc.seconds for sc in scenes) < total:
            scene = Scene(shapes[int(rng.integers(len(shapes)))])
            length = float(rng.uniform(20.0, 60.0))
            while scene.seconds < length:
                scene.parts.append(_idle(rng, round(float(rng.uniform(5.0, 15.0)), 1)))
            scenes.append(scene)
        name = f"idle_{k:02d}.mp4"
        render_scenes(out_dir / name, scenes, seed=int(rng.integers(1 << 30)))
        dur = sum(sc.seconds for sc in scenes)
        seconds += dur
        plans.append({"stream": name, "seconds": round(dur, 2), "scenes": len(scenes)})
    (out_dir / TRUTH_FILE).write_text("")
    doc = {
        "exclusive": True,  # one object in view doing one thing at a time (docs/live.md)
        "background": list(BACKGROUND),
        "actions": [{"name": c, "descriptions": class_descriptions(*parse_class_name(c))} for c in sorted(watched)],
    }
    (out_dir / ACTIONS_FILE).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    (out_dir / PLAN_FILE).write_text(json.dumps({"group": "idle", "seed": seed, "streams": plans}, indent=1) + "\n")
    return {"group": "idle", "streams": len(plans), "segments": 0, "seconds": round(seconds, 1)}


def write_streams(
    streams_dir: str | Path, seed: int, training: Sequence[str], testing: Sequence[str]
) -> list[dict[str, Any]]:
    """The three groups of a world: ``unseen`` (each unseen class three times), ``seen`` (each seen class
    that is not idle twice) and ``mixed`` (every unseen class and as many seen ones, once each)."""
    streams_dir = Path(streams_dir)
    seen = [c for c in training if parse_class_name(c)[1] != IDLE]
    rng = np.random.default_rng([seed, 23])
    some_seen = [seen[int(i)] for i in rng.permutation(len(seen))[: len(testing)]]
    return [
        write_stream_group(streams_dir / "unseen", "unseen", testing, seed, repeats=3),
        write_stream_group(streams_dir / "seen", "seen", seen, seed, repeats=2),
        write_stream_group(streams_dir / "mixed", "mixed", [*testing, *some_seen], seed, repeats=1),
        write_idle_group(streams_dir / "idle", testing, seed),
    ]


@dataclass
class StreamGroup:
    """A folder written by :func:`write_stream_group`, read back without the edge (training calibrates on
    the seen group)."""

    videos: list[Path]
    truth: dict[str, list[dict[str, Any]]]  # video file name -> segments
    actions: dict[str, list[str]]  # action name -> descriptions
    background: list[str]


def read_stream_group(folder: str | Path) -> StreamGroup:
    """Read a stream group folder; CezsarError (one line) when a file is missing or malformed."""
    import yaml

    folder = Path(folder)
    tpath, apath = folder / TRUTH_FILE, folder / ACTIONS_FILE
    try:
        lines = [json.loads(x) for x in tpath.read_text().splitlines() if x.strip()]
        doc = yaml.safe_load(apath.read_text())
        actions = {str(a["name"]): [str(d) for d in a["descriptions"]] for a in doc["actions"]}
        background = [str(b) for b in doc.get("background", [])]
        truth: dict[str, list[dict[str, Any]]] = {}
        for x in lines:
            truth.setdefault(str(x["stream"]), []).append(
                {"action": str(x["action"]), "start": float(x["start"]), "end": float(x["end"])}
            )
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise CezsarError(f"{folder}: not a stream group ({TRUTH_FILE} + {ACTIONS_FILE}): {e}") from None
    videos = sorted(p for p in folder.glob("*.mp4"))
    return StreamGroup(videos, {v.name: truth.get(v.name, []) for v in videos}, actions, background)
