"""The synthetic world written as a dataset: the compositional zero-shot split, the clips with their
captions (training classes) and labels (every class), the class descriptions, split.json and
dataset.json, and (with ``streams``) the continuous streams with their truth. The world itself (shapes,
motions, captions, drawing) is cezsar.data.synthetic."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.atomic import atomic_dir
from cezsar.data.formats import CAPTIONS_FILE, CLASSES_DIR, DATASET_FILE, SPLIT_FILE, VIDEOS_FILE
from cezsar.data.synthetic import (
    ACTIVE_MOTIONS,
    CLIP_SECONDS,
    COLOURS,
    DEFAULTS,
    EVAL_CLIPS_PER_CLASS,
    FRAME_SIZE,
    IDLE,
    MOTIONS,
    SHAPES,
    TRAIN_CLIPS_PER_CLASS,
    VIDEO_FPS,
    _background,
    _caption,
    _random_object,
    _render,
    class_descriptions,
    class_name,
    parse_class_name,
)
from cezsar.errors import CezsarError
from cezsar.video import write_video


def compositional_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    """(training, testing) class names. Test classes are (shape, motion) pairs whose shape and motion
    each appear in training classes; "staying still" classes stay in training. Deterministic by seed."""
    rng = np.random.default_rng([seed, 3])
    shapes = [SHAPES[int(i)] for i in rng.permutation(len(SHAPES))]
    motions = [ACTIVE_MOTIONS[int(i)] for i in rng.permutation(len(ACTIVE_MOTIONS))]
    n_test = max(1, int(round(test_fraction * len(SHAPES) * len(MOTIONS))))
    # Round-robin over both permutations: spreads the test pairs evenly over shapes and motions.
    test: list[tuple[str, str]] = []
    k = 0
    while len(test) < n_test and k < len(shapes) * len(motions) * 2:
        pair = (shapes[k % len(shapes)], motions[(k + k // np.lcm(len(shapes), len(motions))) % len(motions)])
        if pair not in test:
            test.append(pair)
        k += 1
    all_pairs = [(s, m) for s in SHAPES for m in MOTIONS]
    train = [p for p in all_pairs if p not in test]
    for s, m in test:  # the compositional guarantee
        assert any(ts == s for ts, _ in train) and any(tm == m for _, tm in train)
    testing = sorted(class_name(s, m) for s, m in test)
    training = sorted(class_name(s, m) for s, m in train)
    return training, testing


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def _size_word(radius: float, size: int) -> str:
    r = radius * 128.0 / size
    return "small" if r < 17.0 else "large" if r > 20.0 else ""


def synthesize(
    out_dir: str | Path,
    seed: int = 0,
    train_clips_per_class: int = TRAIN_CLIPS_PER_CLASS,
    eval_clips_per_class: int = EVAL_CLIPS_PER_CLASS,
    progress: Callable[[int, int], None] | None = None,
    streams: bool = False,
) -> dict[str, Any]:
    """Render the world into ``out_dir`` (built in a temporary folder and swapped in).

    Writes videos/{train,eval}/*.mp4, captions.jsonl (training classes' training clips),
    videos.jsonl (evaluation clips of every class), classes/<class>.txt, split.json and
    dataset.json; with ``streams``, also streams/{unseen,seen,mixed}/ (continuous streams with their
    truth: cezsar.data.synthstreams). ``progress``, if given, is called as ``progress(done, total)``.
    Returns a summary.
    """
    if train_clips_per_class < 1 or eval_clips_per_class < 1:
        raise CezsarError(
            f"clips per class must be >= 1 (got train={train_clips_per_class}, eval={eval_clips_per_class})"
        )
    t0 = time.time()
    out_dir = Path(out_dir)
    training, testing = compositional_split(seed)
    stream_groups: list[dict[str, Any]] = []
    with atomic_dir(out_dir) as tmp:
        clips = _write_clips(tmp, seed, training, testing, train_clips_per_class, eval_clips_per_class, progress)
        _write_meta(tmp, seed, training, testing, train_clips_per_class, eval_clips_per_class)
        if streams:
            from cezsar.data.synthstreams import write_streams

            stream_groups = write_streams(tmp / "streams", seed, training, testing)
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "classes": len(training) + len(testing),
        "training_classes": training,
        "testing_classes": testing,
        "train_clips": clips["captions"],
        "eval_clips": clips["evals"],
        "captions": clips["captions"],
        "bytes": clips["bytes"],
        "streams": stream_groups,
        "seconds": round(time.time() - t0, 2),
    }


def _write_clips(
    tmp: Path,
    seed: int,
    training: list[str],
    testing: list[str],
    train_k: int,
    eval_k: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    """The clips, captions.jsonl (training clips) and videos.jsonl (evaluation clips of every class)."""
    all_classes = sorted(training + testing)
    colours = sorted(COLOURS)
    jobs: list[tuple[str, str, int]] = [("train", c, k) for c in training for k in range(train_k)]
    jobs += [("eval", c, k) for c in all_classes for k in range(eval_k)]
    captions: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    nbytes = 0
    for i, (kind, cname, k) in enumerate(jobs):
        shape, motion = parse_class_name(cname)
        rng = np.random.default_rng([seed, 0 if kind == "train" else 1, all_classes.index(cname), k])
        colour = colours[int(rng.integers(len(colours)))]
        bg, bg_word = _background(rng, FRAME_SIZE)
        obj = _random_object(rng, shape, colour, FRAME_SIZE)
        frames, _ = _render(obj, [(motion, CLIP_SECONDS)], rng, VIDEO_FPS, FRAME_SIZE, bg)
        rel = f"videos/{kind}/{_slug(cname)}_{k:03d}.mp4"
        write_video(tmp / rel, frames, VIDEO_FPS)
        nbytes += (tmp / rel).stat().st_size
        if kind == "train":
            size_word = "" if motion == "growing" else _size_word(obj.radius, FRAME_SIZE)
            text = _caption(rng, shape, motion, colour, size_word, bg_word)
            captions.append({"video": rel, "start": 0.0, "end": CLIP_SECONDS, "caption": text})
        else:
            evals.append({"video": rel, "label": cname})
        if progress is not None:
            progress(i + 1, len(jobs))
    (tmp / CAPTIONS_FILE).write_text("".join(json.dumps(r) + "\n" for r in captions))
    (tmp / VIDEOS_FILE).write_text("".join(json.dumps(r) + "\n" for r in evals))
    return {"captions": len(captions), "evals": len(evals), "bytes": nbytes}


def _write_meta(tmp: Path, seed: int, training: list[str], testing: list[str], train_k: int, eval_k: int) -> None:
    """classes/<class>.txt, split.json and dataset.json (the clip settings a model of this world trains with)."""
    (tmp / CLASSES_DIR).mkdir()
    for cname in sorted(training + testing):
        lines = class_descriptions(*parse_class_name(cname))
        (tmp / CLASSES_DIR / f"{cname}.txt").write_text("\n".join(lines) + "\n")
    (tmp / SPLIT_FILE).write_text(json.dumps({"training": training, "testing": testing}, indent=2) + "\n")
    dataset = {
        **DEFAULTS,
        "seed": seed,
        "name": "cezsar-synthetic",
        "domain": "one coloured shape (circle, square, triangle, cross) moving on a plain textured background",
        "video_fps": VIDEO_FPS,
        "clip_seconds": CLIP_SECONDS,
        "frame_size": FRAME_SIZE,
        "shapes": list(SHAPES),
        "motions": list(MOTIONS),
        "train_clips_per_class": train_k,
        "eval_clips_per_class": eval_k,
    }
    (tmp / DATASET_FILE).write_text(json.dumps(dataset, indent=2) + "\n")


def idle_classes(data_dir: str | Path) -> set[str]:
    """The classes of a synthetic world that show nothing happening ("<shape> staying still"): what idle
    looks like, not an action to detect. Empty for any other dataset."""
    p = Path(data_dir) / DATASET_FILE
    try:
        meta = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return set()
    if not isinstance(meta, dict) or meta.get("name") != "cezsar-synthetic":
        return set()
    return {class_name(s, IDLE) for s in SHAPES}
