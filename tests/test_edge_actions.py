from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edge.actions import (
    Action,
    ActionsError,
    ActionStore,
    ActionsWatcher,
    dump_actions,
    load_actions,
    parse_action_obj,
    parse_actions,
)

GOOD = """\
defaults:
  threshold: 0.1
  min_duration: 0.5
background:
  - a shape staying still
actions:
  - name: wave
    descriptions: a hand waving
  - name: jump
    descriptions:
      - someone jumps
      - a jump
    cooldown: 3
"""


def test_parses_a_good_file() -> None:
    s = parse_actions(GOOD, "a.yaml")
    assert s.names() == ["wave", "jump"]
    assert s.get("jump") == Action("jump", ("someone jumps", "a jump"), cooldown=3.0)
    assert s.value(s.get("wave"), "threshold") == 0.1  # type: ignore[arg-type]
    assert s.value(s.get("wave"), "cooldown") == 2.0  # type: ignore[arg-type]  # built-in default
    assert s.background == ("a shape staying still",)
    assert parse_actions(dump_actions(s), "b.yaml") == s  # the write-back form reads back the same


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        (
            "actions:\n  - name: a\n    descriptions: x\n    treshold: 1\n",
            4,
            r"a\.yaml:4:5: actions\[0\] \('a'\): unknown key 'treshold'",
        ),
        ("actions:\n  - descriptions: x\n", 2, r"a\.yaml:2:5: actions\[0\]: missing required key 'name'"),
        ("actions:\n  - name: a\n", 2, r"a\.yaml:2:5: actions\[0\] \('a'\): missing required key 'descriptions'"),
        (
            "actions:\n  - name: a\n    descriptions: x\n    threshold: high\n",
            4,
            r"a\.yaml:4:16: .*threshold: expected a number, got str",
        ),
        ("actions:\n  - name: a\n    descriptions: x\n    threshold: true\n", 4, r"expected a number, got bool"),
        ("actions:\n  - name: a\n    descriptions: [x, 3]\n", 3, r"descriptions\[1\]: expected a string, got int"),
        ("actions:\n  - name: a\n    descriptions: []\n", 3, r"empty list"),
        ("actions:\n  - name: a\n    descriptions: '" + "y" * 501 + "'\n", 3, r"501 characters long \(at most 500\)"),
        (
            "actions:\n  - name: a\n    descriptions: x\n  - name: a\n    descriptions: y\n",
            4,
            r"a\.yaml:4:5: .*duplicate action name 'a' \(first at line 2\)",
        ),
        ("actions:\n  - name: a\n    descriptions: x\n    cooldown: -1\n", 4, r"out of range"),
        ("defaults:\n  threshhold: 1\nactions: []\n", 2, r"a\.yaml:2:3: defaults: unknown key 'threshhold'"),
        ("actions: []\nactions: []\n", 2, r"duplicate key 'actions'"),
        ("actions:\n  - name: a\n    descriptions: [x\n", 4, r"a\.yaml:4:1: invalid YAML"),
        ("action:\n  - name: a\n", 1, r"unknown key 'action'"),
        ("actions: 3\n", 1, r"actions: expected a list, got int"),
        ("actions:\n  - name: 'a/b'\n    descriptions: x\n", 2, r"invalid name 'a/b'"),
    ],
)
def test_validation_errors_name_the_line(text: str, line: int, pattern: str) -> None:
    with pytest.raises(ActionsError, match=pattern) as e:
        parse_actions(text, "a.yaml")
    assert e.value.line == line


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ActionsError, match="the file is empty"):
        parse_actions("", "a.yaml")
    with pytest.raises(ActionsError, match="not found"):
        load_actions(tmp_path / "nope.yaml")


def test_json_requests_are_validated_with_field_paths() -> None:
    assert parse_action_obj({"name": "a", "descriptions": ["x"]}).name == "a"
    with pytest.raises(ActionsError, match=r"request: action \('a'\)\.threshold: expected a number"):
        parse_action_obj({"name": "a", "descriptions": "x", "threshold": "1"})
    with pytest.raises(ActionsError, match=r"request: action: expected a mapping"):
        parse_action_obj(["a"])


def write(path: Path, text: str) -> None:
    """Replace the file as an editor does (new content, new mtime)."""
    path.write_text(text, encoding="utf-8")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def wait_for(cond, timeout: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - t0


def test_live_edits_apply_within_a_second_and_invalid_ones_keep_the_last_good_set(tmp_path: Path) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text(GOOD)
    seen: list[list[str]] = []
    store = ActionStore(path, on_change=lambda s: seen.append(s.names()))
    store.load()
    watcher = ActionsWatcher(store, interval=0.25)
    watcher.start()
    try:
        write(path, GOOD + "  - name: clap\n    descriptions: hands clapping\n")
        assert wait_for(lambda: "clap" in store.current.names()) < 1.0
        # an invalid edit: reported with its line, the last good set stays
        write(path, GOOD + "  - name: clap\n    descriptoins: oops\n")
        wait_for(lambda: store.error is not None)
        assert store.error_line == 15 and "actions.yaml:15:5" in (store.error or "")
        assert store.current.names() == ["wave", "jump", "clap"]
        # deleted, then emptied: reported, still the last good set
        path.unlink()
        wait_for(lambda: "not found" in (store.error or ""))
        write(path, "")
        wait_for(lambda: "empty" in (store.error or ""))
        assert store.current.names() == ["wave", "jump", "clap"]
        # fixed: accepted, error cleared
        write(path, GOOD)
        wait_for(lambda: store.error is None and store.current.names() == ["wave", "jump"])
        assert seen[-1] == ["wave", "jump"]
    finally:
        watcher.stop()


def test_on_change_failure_rejects_the_edit(tmp_path: Path) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text(GOOD)

    def on_change(s):  # type: ignore[no-untyped-def]
        if "boom" in s.names():
            raise RuntimeError("text encoder down")

    store = ActionStore(path, on_change=on_change)
    store.load()
    write(path, GOOD + "  - name: boom\n    descriptions: x\n")
    store.poll()
    assert "text encoder down" in (store.error or "") and "boom" not in store.current.names()


def test_control_changes_are_written_back_and_not_reloaded_twice(tmp_path: Path) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text(GOOD)
    versions: list[int] = []
    store = ActionStore(path, on_change=lambda s: versions.append(len(s.actions)))
    store.load()
    store.add(Action("clap", ("hands clapping",), threshold=0.2))
    on_disk = load_actions(path)
    assert on_disk.names() == ["wave", "jump", "clap"] and on_disk.get("clap").threshold == 0.2  # type: ignore[union-attr]
    assert on_disk.defaults.threshold == 0.1 and on_disk.background == ("a shape staying still",)
    n = len(versions)
    assert store.poll() is False and len(versions) == n  # its own write is not a new edit
    store.update("clap", {"threshold": None, "descriptions": ["clapping"]})
    assert load_actions(path).get("clap") == Action("clap", ("clapping",))
    store.update("clap", {"name": "applause"})
    assert store.current.names() == ["wave", "jump", "applause"]
    store.remove("wave")
    assert load_actions(path).names() == ["jump", "applause"]
    with pytest.raises(ActionsError, match="already exists"):
        store.add(Action("jump", ("x",)))
    with pytest.raises(ActionsError, match="no action named"):
        store.remove("nope")
    with pytest.raises(ActionsError, match="that name exists"):
        store.update("applause", {"name": "jump"})
    with pytest.raises(ActionsError, match="expected a number"):
        store.update("jump", {"cooldown": "long"})


def test_control_change_refused_while_the_file_has_an_invalid_edit(tmp_path: Path) -> None:
    path = tmp_path / "actions.yaml"
    path.write_text(GOOD)
    store = ActionStore(path)
    store.load()
    write(path, "actions: [\n")
    with pytest.raises(ActionsError, match="pending problem"):
        store.add(Action("clap", ("x",)))
    assert path.read_text() == "actions: [\n"  # the user's half-done edit is not overwritten
