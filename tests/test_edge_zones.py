"""Zones: an action bound to a zone fires only for motion inside it (a real run on a rendered stream
whose left half moves first and whose right half moves later), and the zone parsing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cezsar.errors import CezsarError
from edge.actions import parse_actions
from edge.runtime import Runtime
from edge.settings import settings_from
from edge.zones import Zone, parse_zone_flag
from tests.helpers.models import deploy_dir


def _side_by_side(left: Path, right: Path, out: Path) -> None:
    a, b = cv2.VideoCapture(str(left)), cv2.VideoCapture(str(right))
    fps = a.get(cv2.CAP_PROP_FPS)
    writer = None
    while True:
        ok1, f1 = a.read()
        ok2, f2 = b.read()
        if not (ok1 and ok2):
            break
        frame = np.hstack([f1, f2])
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
        writer.write(frame)
    a.release()
    b.release()
    assert writer is not None
    writer.release()


@pytest.fixture(scope="module")
def two_halves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Left half: moves left during 1-4 s; right half: moves left during 5.5-8.5 s; still otherwise."""
    from cezsar.data.synthetic import render_stream

    d = tmp_path_factory.mktemp("zones")
    render_stream(d / "l.mp4", [("staying still", 1.0), ("moving left", 3.0), ("staying still", 6.0)], seed=3)
    render_stream(d / "r.mp4", [("staying still", 5.5), ("moving left", 3.0), ("staying still", 1.5)], seed=3)
    _side_by_side(d / "l.mp4", d / "r.mp4", d / "both.mp4")
    return d / "both.mp4"


def _run(tmp_path: Path, video: Path, actions: dict, zones: list[str]) -> list[dict]:  # type: ignore[type-arg]
    af = tmp_path / "actions.yaml"
    af.write_text(yaml.safe_dump(actions))
    log = tmp_path / "events.jsonl"
    cfg = settings_from(
        deploy=deploy_dir(),
        source=[f"cam={video}"],
        actions=af,
        pub="tcp://127.0.0.1:*",
        control="none",
        realtime=False,
        events_log=log,
        zone=zones,
    )
    assert Runtime(cfg).run() == 0
    return [json.loads(x) for x in log.read_text().splitlines() if json.loads(x)["type"] == "event"]


def _overlaps(e: dict, a: float, b: float) -> bool:  # type: ignore[type-arg]
    return e["start"] < b and e["end"] > a


def test_an_action_bound_to_a_zone_fires_only_for_motion_inside_it(tmp_path: Path, two_halves: Path) -> None:
    actions = {
        # zones are under test, not thresholds: the calibrated defaults are chosen for class descriptions
        # ("a square moving left"), this shape-free one scores lower (docs/live.md)
        "defaults": {"threshold": 0.45},
        "background": ["a shape staying still"],
        "actions": [{"name": "left", "descriptions": "something moving left", "zone": "right_half"}],
    }
    zones = ["cam:right_half=0.5,0.0,1.0,1.0"]
    events = _run(tmp_path, two_halves, actions, zones)
    ends = [e for e in events if e["phase"] == "end"]
    print("zone:", [(e["start"], e["end"]) for e in ends])
    assert ends, "the motion inside the zone (5.5-8.5 s) should fire"
    assert all(e["zone"] == "right_half" and e["stream"] == "cam" for e in events)
    assert any(_overlaps(e, 5.5, 8.5) for e in ends)
    # the left half's motion (1-4 s) is outside the zone: nothing may start before the zone's motion
    assert not any(e["start"] < 4.5 for e in ends), [(e["start"], e["end"]) for e in ends]

    # the same action on the whole frame does fire for the left half's motion: the zone made the difference
    whole = {**actions, "actions": [{"name": "left", "descriptions": "something moving left"}]}
    (tmp_path / "whole").mkdir()
    events = _run(tmp_path / "whole", two_halves, whole, zones)
    print("whole:", [(e["start"], e["end"]) for e in events if e["phase"] == "end"])
    assert any(e["phase"] == "end" and _overlaps(e, 1.0, 4.0) and e["zone"] is None for e in events)


def test_zone_parsing_and_action_keys() -> None:
    stream, z = parse_zone_flag("cam1:door=0.5,0.1,0.9,0.9")
    assert stream == "cam1" and z.name == "door" and z.is_rect
    assert z.box(100, 50) == (50, 5, 90, 45)
    for bad in ("cam1:door=0.5,0.1,0.4,0.9", "cam1=0,0,1,1", "cam 1:d=0,0,1,1", "c:d=0,0,1,2"):
        with pytest.raises(CezsarError, match="--zone"):
            parse_zone_flag(bad)
    tri = Zone(name="tri", polygon=((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    crop = tri.crop(np.full((10, 10, 3), 255, np.uint8))
    assert crop[1, 1].tolist() == [255, 255, 255] and crop[9, 9].tolist() == [0, 0, 0]  # outside: black
    aset = parse_actions(
        "actions:\n  - name: a\n    descriptions: x\n    streams: [cam1, cam2]\n    zone: door\n"
        "  - name: b\n    descriptions: y\n    streams: cam2\n"
    )
    a, b = aset.actions
    assert a.applies("cam1@door") and not a.applies("cam1") and not a.applies("cam3@door")
    assert b.applies("cam2") and not b.applies("cam1") and not b.applies("cam2@door")
    assert aset.zones() == {("cam1", "door"), ("cam2", "door")}
    with pytest.raises(CezsarError, match=r"actions:5:.*zone.*invalid name"):
        parse_actions("actions:\n  - name: a\n    descriptions: x\n    streams: [cam1]\n    zone: 'no way'\n")
