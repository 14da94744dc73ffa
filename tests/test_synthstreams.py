"""Continuous synthetic streams with their truth (issue 21): what eval-stream measures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from cezsar.data import synthstreams as SS
from cezsar.data.synthetic import IDLE
from cezsar.data.synthset import compositional_split
from edge.actions import load_actions


def _frames(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return np.stack(out).astype(np.int16)


def test_plans_cut_scenes_in_idle_and_chain_transitions() -> None:
    rng = np.random.default_rng(0)
    actions = ["circle moving left", "circle growing", "square spinning", "circle moving up"] * 3
    scenes = SS.plan_stream(rng, actions)
    parts = [p for s in scenes for p in s.parts]
    assert [p.motion for p in parts if p.motion != IDLE] == [a.split(" ", 1)[1] for a in actions]
    assert parts[0].motion == IDLE and parts[-1].motion == IDLE
    for s in scenes:  # one shape per scene; a cut (a new scene) starts and ends in idle
        assert s.parts[0].motion == IDLE and s.parts[-1].motion == IDLE
        assert all(p.effect in SS.IDLE_KINDS for p in s.parts if p.motion == IDLE)
    for s, nxt in zip(scenes, scenes[1:], strict=False):
        assert s.parts[-1].seconds + nxt.parts[0].seconds >= 2.0  # some idle on each side of a cut
    assert all(SS.ACTION_SECONDS[0] <= p.seconds <= SS.ACTION_SECONDS[1] for p in parts if p.motion != IDLE)


def test_rendered_stream_truth_and_idle_effects(tmp_path: Path) -> None:
    scenes = [
        SS.Scene("square", [SS.Part(IDLE, 2.0, "lighting"), SS.Part("moving left", 3.0), SS.Part(IDLE, 2.0, "still")]),
        SS.Scene("circle", [SS.Part(IDLE, 2.5, "noise"), SS.Part("growing", 2.5), SS.Part("moving up", 3.0),
                            SS.Part(IDLE, 2.0, "drift")]),
    ]  # fmt: skip
    p = tmp_path / "s.mp4"
    truth = SS.render_scenes(p, scenes, seed=3)
    assert truth == [
        {"action": "square moving left", "start": 2.0, "end": 5.0},
        {"action": "circle growing", "start": 9.5, "end": 12.0},
        {"action": "circle moving up", "start": 12.0, "end": 15.0},
    ]
    f = _frames(p)
    assert len(f) == 17 * 8
    diff = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))  # diff[i]: frame i -> i + 1
    lighting = f[:16].mean(axis=(1, 2, 3))
    assert abs(lighting[-1] - lighting[0]) > 3 and np.all(np.abs(np.diff(lighting)) < 2)  # a slow ramp
    assert diff[16:40].mean() > 3 * diff[41:55].mean()  # the action moves; the still part after it does not
    assert diff[57:75].mean() > diff[41:55].mean() + 1  # noise changes every frame
    assert SS.render_scenes(tmp_path / "again.mp4", scenes, seed=3) == truth
    assert np.array_equal(_frames(tmp_path / "again.mp4"), f)  # deterministic by seed


def test_stream_group_files(tmp_path: Path) -> None:
    _, testing = compositional_split(0)
    info = SS.write_stream_group(tmp_path / "g", "unseen", testing[:3], seed=1, repeats=1)
    assert info["segments"] == 3 and info["streams"] == 1
    lines = [json.loads(x) for x in (tmp_path / "g" / SS.TRUTH_FILE).read_text().splitlines()]
    assert {x["action"] for x in lines} == set(testing[:3])
    assert all((tmp_path / "g" / x["stream"]).is_file() and 0 <= x["start"] < x["end"] for x in lines)
    aset = load_actions(tmp_path / "g" / SS.ACTIONS_FILE)
    assert aset.names() == sorted(testing[:3]) and "nothing moves" in aset.background
    plan = json.loads((tmp_path / "g" / SS.PLAN_FILE).read_text())
    assert plan["streams"][0]["stream"] == lines[0]["stream"]
