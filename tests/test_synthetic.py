"""The synthetic action world: determinism, formats, the compositional split, and that motions show."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cezsar.data import synthetic as S
from cezsar.data import synthset as SS
from cezsar.data.formats import read_captions, read_dataset_defaults, read_eval_set, read_split
from cezsar.errors import CezsarError
from cezsar.video import probe


def _decode(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return np.stack(frames)


def _mask(frames: np.ndarray, colour: str) -> np.ndarray:
    """(T, H, W) bool: pixels of the object itself (its afterimage is much duller)."""
    ref = np.asarray(S.COLOURS[colour], dtype=np.int16)
    return np.abs(frames.astype(np.int16) - ref).sum(axis=-1) < 60


def _centroids(mask: np.ndarray) -> np.ndarray:
    """(T, 2) circular-mean (x, y) of each frame's mask, robust to wrapping around the edges."""
    t, h, w = mask.shape
    out = np.zeros((t, 2))
    for i, m in enumerate(mask):
        ys, xs = np.nonzero(m)
        assert xs.size > 5, f"object not found in frame {i}"
        for k, (v, n) in enumerate(((xs, w), (ys, h))):
            a = 2 * np.pi * v / n
            out[i, k] = (np.arctan2(np.sin(a).mean(), np.cos(a).mean()) % (2 * np.pi)) * n / (2 * np.pi)
    return out


def _steps(c: np.ndarray, n: int = 128) -> np.ndarray:
    """Frame-to-frame centroid displacement, unwrapped."""
    d = np.diff(c, axis=0)
    return (d + n / 2) % n - n / 2


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("worlds")
    s1 = SS.synthesize(base / "a", seed=0, train_clips_per_class=1, eval_clips_per_class=1)
    SS.synthesize(base / "b", seed=0, train_clips_per_class=1, eval_clips_per_class=1)
    return base / "a", base / "b", s1


def test_world_formats_round_trip(worlds: tuple[Path, Path, dict]) -> None:
    a, _, summary = worlds
    caps = read_captions(a)
    ev = read_eval_set(a)
    split = read_split(a / "split.json", ev.class_names)
    defaults = read_dataset_defaults(a)
    assert summary["classes"] == len(S.SHAPES) * len(S.MOTIONS) == len(ev.classes)
    assert len(caps) == summary["train_clips"] == len(split.training)
    assert len(ev.videos) == summary["eval_clips"] == len(ev.classes)
    assert sorted(split.training + split.testing) == ev.class_names
    assert {v.label for v in ev.videos} == set(ev.class_names)
    assert defaults["fps"] == 4.0 and defaults["frames"] == 8 and defaults["image_size"] == 64
    assert defaults["resize"] == 64 and defaults["seed"] == 0
    # training captions are for training classes only
    train_slugs = {c.replace(" ", "_") for c in split.training}
    assert all(r.video.name.rsplit("_", 1)[0] in train_slugs for r in caps)
    assert all(r.start == 0.0 and r.end == S.CLIP_SECONDS for r in caps)
    info = probe(caps[0].video)
    assert (info.width, info.height, info.fps, info.frame_count) == (128, 128, 8.0, 32)
    # descriptions: 3-5 per class, colour-free, never a copy of a caption
    texts = {r.caption for r in caps}
    for name, descs in ev.classes.items():
        assert 3 <= len(descs) <= 5
        assert not texts & set(descs)
        assert not any(c in d.split() for d in descs for c in S.COLOURS), name
    # captions lead with the action; colour is incidental detail, named in a minority of them
    with_colour = sum(any(c in r.caption.split() for c in S.COLOURS) for r in caps) / len(caps)
    assert 0.1 < with_colour < 0.6


def test_world_is_deterministic(worlds: tuple[Path, Path, dict]) -> None:
    a, b, _ = worlds
    for f in ("captions.jsonl", "videos.jsonl", "split.json", "dataset.json"):
        assert (a / f).read_text() == (b / f).read_text(), f
    assert sorted(p.name for p in (a / "classes").iterdir()) == sorted(p.name for p in (b / "classes").iterdir())
    ev = read_eval_set(a)
    for v in ev.videos[::9]:
        rel = v.path.relative_to(a.resolve())
        assert np.array_equal(_decode(a / rel), _decode(b / rel)), rel
    assert S.render_clip("cross", "spinning", seed=3).tobytes() == S.render_clip("cross", "spinning", seed=3).tobytes()
    assert S.render_clip("cross", "spinning", seed=3).tobytes() != S.render_clip("cross", "spinning", seed=4).tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_split_is_compositional(seed: int) -> None:
    training, testing = SS.compositional_split(seed)
    assert len(testing) == 8 and len(training) == 24
    assert not set(training) & set(testing)
    train_pairs = [S.parse_class_name(c) for c in training]
    for c in testing:
        shape, motion = S.parse_class_name(c)
        assert motion != S.IDLE
        assert any(s == shape for s, _ in train_pairs) and any(m == motion for _, m in train_pairs)
    assert SS.compositional_split(seed) == (training, testing)


def test_split_depends_on_seed() -> None:
    assert len({tuple(SS.compositional_split(s)[1]) for s in range(6)}) > 1


def test_synthesize_writes_split_file(worlds: tuple[Path, Path, dict]) -> None:
    a, _, summary = worlds
    split = json.loads((a / "split.json").read_text())
    assert split == {"training": summary["training_classes"], "testing": summary["testing_classes"]}
    assert (split["training"], split["testing"]) == SS.compositional_split(0)


def test_decoded_motions_differ(tmp_path: Path) -> None:
    expect = {"moving left": (0, -1), "moving right": (0, 1), "moving up": (1, -1), "moving down": (1, 1)}
    for motion, (axis, sign) in expect.items():
        p = tmp_path / f"{motion}.mp4"
        from cezsar.video import write_video

        write_video(p, S.render_clip("square", motion, seed=5, colour="yellow"), S.VIDEO_FPS)
        steps = _steps(_centroids(_mask(_decode(p), "yellow")))
        along, across = steps[:, axis] * sign, steps[:, 1 - axis]
        assert np.all(along > 2.0), (motion, along)  # ~5-7 px per frame
        assert np.all(np.abs(across) < 1.0), (motion, across)


def test_other_motions_show(tmp_path: Path) -> None:
    def area(motion: str, shape: str = "triangle") -> np.ndarray:
        return _mask(S.render_clip(shape, motion, seed=2, colour="red"), "red").sum(axis=(1, 2))

    still = S.render_clip("triangle", S.IDLE, seed=2, colour="red")
    still_c = _centroids(_mask(still, "red"))
    assert np.abs(_steps(still_c)).max() < 1.0
    assert np.abs(np.diff(still.astype(np.int16), axis=0)).mean() < 1.0

    grow = area("growing")
    assert (np.diff(grow) > 0).mean() > 0.7 and grow.max() > 3 * grow.min()

    shake = _steps(_centroids(_mask(S.render_clip("circle", "shaking", seed=2, colour="red"), "red")))
    assert np.abs(shake[:, 0]).mean() > 3.0 and np.abs(shake[:, 1]).mean() < 2.0

    spin = S.render_clip("triangle", "spinning", seed=2, colour="red")
    m = _mask(spin, "red")
    c = _centroids(m)
    assert np.abs(_steps(c)).max() < 1.5  # stays in place...
    changed = (m[1:] ^ m[:-1]).sum(axis=(1, 2)) / m[1:].sum(axis=(1, 2))
    assert changed.min() > 0.1  # ...but its pixels change every frame
    # the circle's orientation mark makes its spin visible too
    circle = S.render_clip("circle", "spinning", seed=2)
    assert np.abs(np.diff(circle.astype(np.int16), axis=0)).max() > 100


def test_render_stream_segments_line_up(tmp_path: Path) -> None:
    plan = [(S.IDLE, 2.0), ("moving left", 3.0), ("moving left", 1.0), (S.IDLE, 1.5), ("moving down", 2.5)]
    p = tmp_path / "stream.mp4"
    segs = S.render_stream(p, plan, seed=4, shape="cross", colour="green")
    assert segs == [
        {"action": "moving left", "start": 2.0, "end": 6.0},
        {"action": "moving down", "start": 7.5, "end": 10.0},
    ]
    frames = _decode(p)
    assert len(frames) == int(10.0 * S.VIDEO_FPS)
    steps = _steps(_centroids(_mask(frames, "green")))  # steps[i]: frame i -> i + 1
    times = (np.arange(len(steps)) + 1) / S.VIDEO_FPS  # time of the frame the step arrives at

    def in_seg(t: float) -> str:
        return next((s["action"] for s in segs if s["start"] <= t < s["end"]), S.IDLE)

    for t, (dx, dy) in zip(times, steps, strict=True):
        label = in_seg(t)
        if label == "moving left":
            assert dx < -2.0 and abs(dy) < 1.0, (t, dx, dy)
        elif label == "moving down":
            assert dy > 2.0 and abs(dx) < 1.0, (t, dx, dy)
        else:
            assert abs(dx) < 1.5 and abs(dy) < 1.5, (t, dx, dy)


def test_default_stream_plan() -> None:
    plan = S.default_stream_plan(0)
    assert plan == S.default_stream_plan(0) and plan != S.default_stream_plan(1)
    total = sum(sec for _, sec in plan)
    assert 75 <= total <= 105
    actions = [(m, sec) for m, sec in plan if m != S.IDLE]
    assert len(actions) == 5 and len({m for m, _ in actions}) == 5
    assert all(8 <= sec <= 12 for _, sec in actions)
    assert all(5 <= sec <= 8 for m, sec in plan if m == S.IDLE)
    assert plan[0][0] == S.IDLE and plan[-1][0] == S.IDLE
    assert all(m in S.MOTIONS for m, _ in plan)


def test_render_stream_errors(tmp_path: Path) -> None:
    with pytest.raises(CezsarError, match="unknown motion 'dancing'"):
        S.render_stream(tmp_path / "x.mp4", [("dancing", 2.0)])
    with pytest.raises(CezsarError, match="durations must be > 0"):
        S.render_stream(tmp_path / "x.mp4", [("spinning", 0)])
    with pytest.raises(CezsarError, match="empty"):
        S.render_stream(tmp_path / "x.mp4", [])
    with pytest.raises(CezsarError, match="unknown shape"):
        S.render_stream(tmp_path / "x.mp4", [("spinning", 1.0)], shape="hexagon")
    assert not (tmp_path / "x.mp4").exists()


def test_descriptions() -> None:
    for motion in S.MOTIONS:
        descs = S.motion_descriptions(motion)
        assert len(descs) >= 3 and len(set(descs)) == len(descs)
        words = {w for d in descs for w in d.split()}
        shape_words = {w for ws in S._SHAPE_WORDS.values() for p in ws for w in p.split()} - {"shape"}
        assert not words & shape_words, motion
    with pytest.raises(CezsarError):
        S.motion_descriptions("flying")
    for shape in S.SHAPES:
        for motion in S.MOTIONS:
            name = S.class_name(shape, motion)
            assert S.parse_class_name(name) == (shape, motion)
            assert 3 <= len(S.class_descriptions(shape, motion)) <= 5


def test_cli_synth(tmp_path: Path) -> None:
    from cezsar.cli import app

    runner = CliRunner()
    out = tmp_path / "w"
    res = runner.invoke(app, ["synth", str(out), "--seed", "1", "--train-clips", "1", "--eval-clips", "1"])
    assert res.exit_code == 0, res.output
    assert "24 seen, 8 unseen" in res.output
    assert (out / "captions.jsonl").is_file() and (out / "split.json").is_file()
    assert json.loads((out / "dataset.json").read_text())["seed"] == 1
    for group in ("unseen", "seen", "mixed", "idle"):  # issue 21: continuous streams with their truth
        folder = out / "streams" / group
        assert (folder / "truth.jsonl").is_file() and (folder / "actions.yaml").is_file()
    unseen = {json.loads(x)["action"] for x in (out / "streams" / "unseen" / "truth.jsonl").read_text().splitlines()}
    assert unseen == set(json.loads((out / "split.json").read_text())["testing"])
    res = runner.invoke(app, ["synth", str(tmp_path / "w2"), "--train-clips", "0"])
    assert isinstance(res.exception, CezsarError) and "--train-clips" in str(res.exception)
    assert not (tmp_path / "w2").exists()
