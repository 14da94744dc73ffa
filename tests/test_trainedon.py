"""What a model was trained on (cezsar.trainedon, issue 23): home-safety actions on the shapes model are
flagged by ``cezsar actions check --deploy`` (with their line) and by a running runtime, at start and when
an edit adds one; the world's own actions are not; a model without a training vocabulary flags nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cezsar import trainedon
from edge.actions import ActionStore
from edge.actions_check import DomainWatch, check_actions_file
from tests.helpers.models import deploy_dir
from tests.helpers.procs import ROOT, actions_doc

HOME = {
    "background": ["an empty room", "nothing happens"],
    "actions": [
        {"name": "moving left", "descriptions": ["something moving left", "a shape slides to the left"]},
        {"name": "fall", "descriptions": ["a person falls to the floor", "someone collapses on the ground"]},
        {"name": "door", "descriptions": ["someone opens the front door"]},
    ],
}


def test_stems_match_the_forms_of_a_word() -> None:
    forms = [("moves", "moving", "moved", "move"), ("spins", "spinning", "spin"), ("crosses", "cross")]
    for group in forms:
        assert len({trainedon.stem(w) for w in group}) == 1, group
    assert trainedon.content_words("The circle is moving to the left") == ["circl", "mov", "left"]


def test_unfamiliar_actions_against_a_caption_vocabulary() -> None:
    seen = trainedon.record("shapes", ["a red circle moves left", "the square spins", "a cross grows bigger"])
    assert seen["captions"] == 3 and {"circl", "mov", "left", "spin"} <= set(seen["vocabulary"])
    flagged = trainedon.unfamiliar_actions(
        [("left", ["a circle moving left"]), ("fall", ["a person falls to the floor"]), ("empty", ["the"])], seen
    )
    assert [(n, u) for n, u, _ in flagged] == [("fall", ["person", "falls", "floor"])]
    # an open-vocabulary model (an image-text checkpoint, no training captions) and an older model: nothing
    assert trainedon.unfamiliar_actions([("fall", ["a person falls"])], {"dataset": "x", "open_vocabulary": True}) == []
    assert trainedon.unfamiliar_actions([("fall", ["a person falls"])], None) == []


def test_actions_check_on_the_shapes_model_names_the_actions_and_their_lines(tmp_path: Path) -> None:
    deploy = deploy_dir()
    path = tmp_path / "home.yaml"
    path.write_text(yaml.safe_dump(HOME, sort_keys=False))
    _, warns = check_actions_file(path, deploy=deploy)
    lines = [w for w in warns if "never appear in the captions" in w]
    assert len(lines) == 2, warns
    assert "'fall'" in lines[0] and "person" in lines[0] and "cezsar-synthetic" in lines[0]
    assert "'door'" in lines[1] and lines[1].startswith(f"{path}:")
    # the world's own actions: no such warning
    own = tmp_path / "own.yaml"
    own.write_text(actions_doc(["moving left", "spinning", "growing"]))
    assert not [w for w in check_actions_file(own, deploy=deploy)[1] if "never appear" in w]
    # the CLI prints them and still exits 0 (warnings, not errors)
    r = subprocess.run(
        [sys.executable, "-m", "cezsar", "actions", "check", str(path), "--deploy", str(deploy)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).count("never appear in the captions") == 2


def test_a_live_edit_adding_such_an_action_is_told_once(tmp_path: Path) -> None:
    from cezsar.deploy.manifest import load_manifest

    trained = load_manifest(deploy_dir()).extra["trained_on"]
    said: list[str] = []
    taken: list[list[str]] = []
    path = tmp_path / "actions.yaml"
    path.write_text(actions_doc(["moving left"]))
    store = ActionStore(path, on_change=DomainWatch(trained, said.append, lambda s: taken.append(s.names())))
    store.load()
    assert said == [] and taken == [["moving left"]]
    path.write_text(yaml.safe_dump(HOME, sort_keys=False))
    assert _poll(store)
    assert taken[-1] == ["moving left", "fall", "door"] and len(said) == 2
    doc = {**HOME, "actions": [*HOME["actions"], {"name": "up", "descriptions": ["something moving up"]}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert _poll(store)
    assert len(said) == 2, "the same actions are not told again"


def _poll(store: ActionStore) -> bool:
    import os
    import time

    st = os.stat(store.path)
    os.utime(store.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    deadline = time.time() + 5
    while time.time() < deadline:
        if store.poll():
            return True
        time.sleep(0.05)
    return False


def test_the_runtime_warns_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cezsar.data.synthetic import render_stream
    from edge.runtime import Runtime
    from edge.settings import settings_from

    video = tmp_path / "cam.mp4"
    render_stream(video, [("moving left", 3.0)], seed=1)
    (tmp_path / "actions.yaml").write_text(yaml.safe_dump(HOME, sort_keys=False))
    s = settings_from(
        deploy=str(deploy_dir()),
        source=[f"cam={video}"],
        actions=str(tmp_path / "actions.yaml"),
        realtime=False,
        pub="tcp://127.0.0.1:*",
        control="none",
    )
    with caplog.at_level(logging.WARNING, logger="cezsar.edge"):
        rt = Runtime(s)
        try:
            told = [r.getMessage() for r in caplog.records if "never appear in the captions" in r.getMessage()]
        finally:
            rt.close()
    assert len(told) == 2 and "'fall'" in told[0] and "'door'" in told[1]
