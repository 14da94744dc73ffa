"""`cezsar eval-stream` (issue 21): the runtime's Recognizer over rendered streams, scored against their truth,
with no threads and no sockets; bad truth files are one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cezsar.data import synthstreams as SS
from cezsar.data.synthetic import IDLE, motion_descriptions
from cezsar.errors import CezsarError
from cezsar.events import decide
from edge.streameval import evaluate_streams, read_streams, run_streams
from tests.helpers.models import deploy_dir, trained_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short streams of motions the demo model knows (its actions file watches motions, any shape)."""
    import yaml

    d = tmp_path_factory.mktemp("streams")
    plans = {
        "a.mp4": [SS.Scene("square", [SS.Part(IDLE, 3.0, "drift"), SS.Part("moving left", 5.0),
                                      SS.Part(IDLE, 4.0, "lighting")])],
        "b.mp4": [SS.Scene("circle", [SS.Part(IDLE, 2.5, "noise"), SS.Part("moving up", 5.0), SS.Part(IDLE, 4.0)])],
    }  # fmt: skip
    lines = []
    for name, scenes in plans.items():
        for seg in SS.render_scenes(d / name, scenes, seed=7):  # "square moving left" -> "moving left"
            lines.append({"stream": name, "action": seg["action"].split(" ", 1)[1], "start": seg["start"],
                          "end": seg["end"]})  # fmt: skip
    (d / "truth.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    doc = {
        "background": motion_descriptions(IDLE),
        "actions": [{"name": m, "descriptions": motion_descriptions(m)} for m in ("moving left", "moving up")],
    }
    (d / "actions.yaml").write_text(yaml.safe_dump(doc))
    return d


def test_eval_stream_reports_events_and_writes_the_curve(streams: Path, tmp_path: Path) -> None:
    deploy = deploy_dir()  # exported first (the export's own helper threads are not the evaluation's)
    threads = threading.active_count()
    rep = evaluate_streams(deploy, streams, out=tmp_path / "out", threads=1)
    assert threading.active_count() == threads  # nothing of its own keeps running
    assert rep["streams"] == 2 and rep["segments"] == 2 and abs(rep["seconds"] - 23.5) < 0.3
    assert set(rep["per_action"]) == {"moving left", "moving up"}
    assert {"idle", "wrong_action", "idle_seconds", "per_idle_hour"} <= set(rep["false_alarms"])
    assert abs(rep["false_alarms"]["idle_seconds"] - 13.5) < 0.3
    curve = json.loads((tmp_path / "out" / "sweep.json").read_text())["curve"]
    assert len(curve) == 41 and all(0 <= c["precision"] <= 1 and 0 <= c["recall"] <= 1 for c in curve)
    png = (tmp_path / "out" / "pr_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["f1"] == rep["f1"]
    if trained_model_dir() is not None:  # the bundled model finds both motions
        assert rep["recall"] == 1.0, rep["per_stream"]


def test_the_sweep_replays_the_recognizers_decisions(streams: Path) -> None:
    """decide() over the recorded window scores gives exactly the Recognizer's events: the sweep and the
    decision-rule comparisons re-run the runtime's rules, not an imitation of them."""
    setup = run_streams(deploy_dir(), streams, streams / "actions.yaml", threads=1)
    scorer = setup.recognizer.scorer
    assert scorer is not None
    for s, run in zip(setup.streams, setup.runs, strict=True):
        assert len(run.windows) == len(s.centers) > 0
        assert decide(s, scorer.params) == run.events


def test_one_video_with_its_truth_beside_it(streams: Path, tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    shutil.copy(streams / "a.mp4", video)
    with pytest.raises(CezsarError, match=r"cam\.truth\.jsonl: no truth file \(next to the video"):
        read_streams(video)
    (tmp_path / "cam.truth.jsonl").write_text('{"action": "moving left", "start": 3, "end": 8}\n')
    s = read_streams(video)
    assert s.truth == {"cam.mp4": [{"action": "moving left", "start": 3.0, "end": 8.0}]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"stream": "a.mp4", "action": "x", "start": 1}\n', r"truth.jsonl:1: missing end"),
        ('\n{"stream": "a.mp4", "action": "x", "start": 4, "end": 2}\n', r"truth.jsonl:2: needs 0 <= start < end"),
        ('{"stream": "z.mp4", "action": "x", "start": 1, "end": 2}\n', r"truth.jsonl:1: stream 'z.mp4' is not a video"),
        ("not json\n", r"truth.jsonl:1: not JSON"),
        ('{"stream": "a.mp4", "action": "", "start": 1, "end": 2}\n', r"truth.jsonl:1: action must be a non-empty"),
        ('{"stream": "a.mp4", "action": "x", "start": "soon", "end": 2}\n', r"truth.jsonl:1: start and end must be"),
    ],
)
def test_malformed_truth_is_one_clear_line(streams: Path, tmp_path: Path, text: str, message: str) -> None:
    d = tmp_path / "s"
    d.mkdir()
    shutil.copy(streams / "a.mp4", d / "a.mp4")
    (d / "truth.jsonl").write_text(text)
    with pytest.raises(CezsarError, match=message):
        read_streams(d)


def test_cli_missing_truth_is_one_line_without_traceback(streams: Path, tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    shutil.copy(streams / "a.mp4", d / "a.mp4")
    shutil.copy(streams / "actions.yaml", d / "actions.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "cezsar", "eval-stream", "--deploy", str(deploy_dir()), "--streams", str(d)],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    from edge.streameval import TRUTH_HINT

    want = f"error: {d / 'truth.jsonl'}: no truth file (in the folder; one JSON line per segment: {TRUTH_HINT})"
    assert err == [want]
