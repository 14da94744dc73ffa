"""The Recognizer on its own: decoded frames of a rendered video go in, windows, scores and events come
out, in this thread, with no sockets (no runtime, no reader threads, no ZeroMQ)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from cezsar.backends.base import Runner
from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import load_manifest
from cezsar.video import probe, read_frames
from edge import messages
from edge.actions import actions_from_obj
from edge.embedder import WindowEmbedder
from edge.event_scoring import match_events
from edge.recognizer import Recognizer, Step
from edge.sources import Frame
from edge.text import TextEncoder
from tests.helpers.models import deploy_dir, trained_model_dir

PLAN = [("staying still", 3.0), ("moving left", 6.0), ("staying still", 4.0)]


class CountingRunner(Runner):
    """Passes through to the real frame encoder and records a digest of every input row it encodes."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.rows: list[str] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        self.rows += [hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest() for r in x]
        return self.inner(x)


@pytest.fixture(scope="module")
def parts():  # type: ignore[no-untyped-def]
    d = deploy_dir()
    m = load_manifest(d)
    loaded = load_backend("onnxruntime", "fp32", d, m)
    text = TextEncoder(d, m)
    yield m, loaded, text
    loaded.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, parts) -> tuple[np.ndarray, np.ndarray, list]:  # type: ignore[no-untyped-def]
    """The rendered stream decoded at the model's rate: (times, images, truth segments)."""
    from cezsar.data.synthetic import render_stream

    m = parts[0]
    video = tmp_path_factory.mktemp("rec") / "left.mp4"
    truth = render_stream(video, PLAN, seed=5)
    info = probe(video)
    times = np.arange(0.0, info.duration - 1e-6, 1.0 / m.fps)
    return times, read_frames(video, times, info), truth


def frames_of(stream: str, times: np.ndarray, images: np.ndarray, pre) -> list[Frame]:  # type: ignore[no-untyped-def]
    pairs = enumerate(zip(times, images, strict=True))
    return [Frame.from_image(stream, i, float(t), 1000.0 + t, img, pre) for i, (t, img) in pairs]


def recognizer(parts, cache: bool = True, hop: int = 2) -> tuple[Recognizer, CountingRunner]:  # type: ignore[no-untyped-def]
    m, loaded, text = parts
    enc = CountingRunner(loaded.frame_encoder)
    emb = WindowEmbedder(enc, loaded.temporal_head, m.window, hop, m.feature_dim, cache=cache)
    rec = Recognizer(emb, text)
    from cezsar.data.synthetic import IDLE, motion_descriptions

    aset = actions_from_obj(
        {
            "background": motion_descriptions(IDLE),
            "actions": [
                {"name": "left", "descriptions": motion_descriptions("moving left")},
                {"name": "up", "descriptions": motion_descriptions("moving up")},
            ],
        }
    )
    rec.set_actions(aset)
    return rec, enc


def open_sockets() -> int:
    fd = Path("/proc/self/fd")
    return sum(1 for p in fd.iterdir() if os.path.islink(p) and os.readlink(p).startswith("socket:"))


def test_frames_in_windows_scores_and_events_out_each_frame_encoded_once(parts, images) -> None:  # type: ignore[no-untyped-def]
    m = parts[0]
    times, imgs, truth = images
    rec, enc = recognizer(parts)
    a, b = frames_of("a", times, imgs, m.pre), frames_of("b", times, imgs, m.pre)
    threads, sockets = threading.active_count(), open_sockets()
    steps: list[Step] = []
    for fa, fb in zip(a, b, strict=True):  # as the runtime's loop sees them: the new frame of each stream
        steps.append(rec.push([fa, fb]))
    ends = rec.end_stream("a", "stream_end") + rec.end_stream("b", "stream_end")
    assert threading.active_count() == threads and open_sockets() == sockets  # nothing of its own runs

    # the feature cache: every frame through the frame encoder exactly once, both streams in one call
    n = len(times)
    assert sorted(enc.rows) == sorted(hashlib.sha1(f.tensor.tobytes()).hexdigest() for f in a + b)
    assert enc.calls == [2] * n and rec.embedder.frames_encoded == 2 * n

    # windows: full ring (T frames), then one every hop, per stream; scored for every action
    T, hop = m.window, 2
    results = [r for s in steps for r in s.windows]
    for stream in ("a", "b"):
        mine = [r for r in results if r.window.stream == stream]
        assert len(mine) == 1 + (n - T) // hop == rec.windows_by_stream[stream]
        assert [r.window.last_index for r in mine] == list(range(T - 1, n, hop))
        assert all(r.window.frames == T and r.window.last_index - r.window.first_index == T - 1 for r in mine)
        assert all(set(r.scores) == set(r.cosine) == set(r.smoothed) == {"left", "up"} for r in mine)
        assert all(r.background is not None for r in mine)
        # with a background the score is the margin over it
        assert all(abs(r.scores["left"] - (r.cosine["left"] - r.background)) < 1e-3 for r in mine)  # type: ignore[operator]
    # the two streams saw the same frames: the same scores
    by = {(r.window.stream, r.window.last_index): r.scores for r in results}
    assert all(by[("a", i)] == by[("b", i)] for s, i in by if s == "a")

    # events: a lifecycle per id, each window's events after its scores, in capture order
    events = [ev for s in steps for ev in s.events] + ends
    phases: dict[str, list[str]] = {}
    for ev in events:
        phases.setdefault(ev.id, []).append(ev.phase)
    assert all(p[0] == "start" and p[-1] == "end" and p.count("end") == 1 for p in phases.values())
    # they are what the runtime would publish: the message builder takes them as they are
    msg = messages.scores(results[0], 1001.0)
    assert msg.topic == f"scores.{results[0].window.stream}" and msg.payload["window"]["frames"] == T
    if trained_model_dir() is None:
        return  # random-init model: the scores carry no meaning
    for stream in ("a", "b"):
        ended = [messages.event(e, 0.0).payload for e in events if e.phase == "end" and e.stream == stream]
        r = match_events(ended, [dict(s, action="left") for s in truth if s["action"] == "moving left"], 0.3)
        assert r["tp"] == 1 and r["fp"] == 0, ended


def test_cache_off_encodes_every_window_and_scores_the_same(parts, images) -> None:  # type: ignore[no-untyped-def]
    m = parts[0]
    times, imgs, _ = images
    frames = frames_of("a", times[:20], imgs[:20], m.pre)
    out = {}
    for cache in (True, False):
        rec, enc = recognizer(parts, cache=cache)
        results = [r for f in frames for r in rec.push([f]).windows]
        out[cache] = (results, len(enc.rows))
    (on, rows_on), (off, rows_off) = out[True], out[False]
    assert rows_on == 20 and rows_off == len(off) * m.window > rows_on
    assert [r.window.last_index for r in on] == [r.window.last_index for r in off]
    for x, y in zip(on, off, strict=True):
        assert np.allclose(list(x.cosine.values()), list(y.cosine.values()), atol=1e-4)


def test_actions_change_live_between_pushes(parts, images) -> None:  # type: ignore[no-untyped-def]
    """set_actions stages a new set; the next push swaps it in and ends the events of the actions it
    removed or reworded. Thresholds of -2 make every window "on", so events open whatever the model."""
    m = parts[0]
    times, imgs, _ = images
    frames = frames_of("cam", times, imgs, m.pre)
    rec, _ = recognizer(parts)
    on = {"threshold": -2.0, "min_duration": 0.0}
    first = {
        "actions": [
            {"name": "left", "descriptions": "a shape moving left", **on},
            {"name": "up", "descriptions": "a shape moving up", **on},
            {"name": "grow", "descriptions": "a shape growing", **on},
        ]
    }
    rec.set_actions(actions_from_obj(first))
    starts = [e for f in frames[: m.window] for e in rec.push([f]).events]
    assert sorted(e.action for e in starts) == ["grow", "left", "up"] and len(rec.active()) == 3
    second = {
        "actions": [
            {"name": "left", "descriptions": "a shape moving left", **on, "threshold": -1.9},  # same words
            {"name": "up", "descriptions": "a shape going up", **on},  # reworded
            {"name": "spin", "descriptions": "a shape spinning", **on},  # new; grow removed
        ]
    }
    rec.set_actions(actions_from_obj(second))
    assert rec.scorer is not None and rec.scorer.names == ["left", "up", "grow"]  # staged, not yet in use
    step = rec.push(frames[m.window : m.window + 2])
    assert {(e.action, e.reason) for e in step.ended} == {("grow", "action_removed"), ("up", "action_changed")}
    assert all(e.phase == "end" for e in step.ended)
    assert rec.scorer.names == ["left", "up", "spin"]
    assert {e.action for e in step.events if e.phase == "start"} == {"up", "spin"}  # open again, new ids
    assert sorted(e.action for e in rec.active()) == ["left", "spin", "up"]
    ended = rec.end_all("shutdown")
    assert {e.action for e in ended} == {"left", "up", "spin"} and all(e.reason == "shutdown" for e in ended)
