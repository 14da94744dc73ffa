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


# -- templates ------------------------------------------------------------------------------------
TEMPLATED = """\
templates: ["a video of {}.", "{}"]
background: [an empty room]
actions:
  - name: wave
    descriptions: [a hand waving, someone waving]
  - name: fire
    descriptions: smoke
    templates: ["a photo of {}."]
"""


def test_templates_expand_every_description() -> None:
    from edge.actions import expand

    s = parse_actions(TEMPLATED, "t.yaml")
    wave, fire = s.actions
    assert s.texts_for(wave) == [
        "a video of a hand waving.",
        "a hand waving",
        "a video of someone waving.",
        "someone waving",
    ]
    assert s.texts_for(fire) == ["a photo of smoke."]  # its own templates replace the file's
    assert s.background_texts() == [["a video of an empty room.", "an empty room"]]
    assert set(s.texts()) == {*s.texts_for(wave), *s.texts_for(fire), "a video of an empty room.", "an empty room"}
    assert expand("x", []) == ["x"] and s.effective(fire)["templates"] == ["a photo of {}."]
    assert parse_actions(dump_actions(s), "b.yaml") == s  # templates survive a write-back


@pytest.mark.parametrize(
    ("templates", "fragment"),
    [
        ('["a video of"]', "holds '{}'"),
        ('["{} and {}"]', "holds '{}'"),
        ('["a {x} of {}"]', "no other braces"),
        ('["' + "y" * 201 + ' {}"]', "characters long (at most 200)"),
        ("a video of {}", "expected a list"),
        ("[" + ", ".join([f'"{{}} {i}"' for i in range(17)]) + "]", "17 templates (at most 16)"),
    ],
)
def test_templates_are_validated(templates: str, fragment: str) -> None:
    with pytest.raises(ActionsError, match=r"^t\.yaml:1:\d+: templates.*: ") as e:
        parse_actions(f"templates: {templates}\nactions: []\n", "t.yaml")
    assert fragment in str(e.value)


class _Words:
    """A text encoder for the scorer: a fixed random unit vector per sentence (no model needed)."""

    dim = 8

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, sentences: list[str]):  # type: ignore[no-untyped-def]
        import hashlib

        import numpy as np

        self.seen += sentences
        out = [
            np.random.default_rng(int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)).normal(size=8) for s in sentences
        ]
        e = np.asarray(out, dtype=np.float32).reshape(len(sentences), 8)
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_the_scorer_averages_the_templated_sentences() -> None:
    import numpy as np

    from cezsar.zeroshot import class_prototype
    from edge.scorer import Scorer

    s = parse_actions(TEMPLATED, "t.yaml")
    words = _Words()
    sc = Scorer.build(s, words)  # type: ignore[arg-type]
    assert set(words.seen) == set(s.texts())  # the text tower sees the sentences, not the bare descriptions only
    for i, a in enumerate(s.actions):
        assert np.allclose(sc.action_emb[i], class_prototype(words.encode(s.texts_for(a))), atol=1e-6)
    assert np.allclose(sc.background_emb[0], class_prototype(words.encode(s.background_texts()[0])), atol=1e-6)
    plain = Scorer.build(parse_actions(TEMPLATED.replace('templates: ["a video of {}.", "{}"]\n', ""), "p"), _Words())  # type: ignore[arg-type]
    assert not np.allclose(plain.action_emb[0], sc.action_emb[0])  # the templates change the prototype


# -- checks against the site and the deploy folder --------------------------------------------------
SITE = """\
actions: actions.yaml
sources:
  - {name: door, url: rtsp://door/stream, zones: [{name: porch, rect: [0, 0, 0.5, 1]}]}
  - {name: yard, url: rtsp://yard/stream}
"""


def test_check_warns_about_streams_and_zones_the_site_does_not_have(tmp_path: Path) -> None:
    from edge.actions_check import check_actions_file

    (tmp_path / "site.yaml").write_text(SITE)
    path = tmp_path / "actions.yaml"
    path.write_text(
        "background: [still]\nactions:\n"
        "  - {name: a, descriptions: x, streams: [door, gate]}\n"  # line 3: no stream 'gate'
        "  - {name: b, descriptions: x, streams: yard, zone: porch}\n"  # line 4: yard has no zone 'porch'
        "  - {name: c, descriptions: x, zone: garage}\n"  # line 5: no stream has 'garage'
        "  - {name: d, descriptions: x, zone: porch}\n"  # fine: door has it
    )
    _, warns = check_actions_file(path, config=tmp_path / "site.yaml")
    assert warns == [
        f"{path}:3:41: actions[0] ('a').streams: no stream named 'gate' (streams: door, yard)",
        f"{path}:4:53: actions[1] ('b').zone: zone 'porch' is not defined for yard (zones: door: porch; yard: none)",
        f"{path}:5:38: actions[2] ('c').zone: no stream has a zone named 'garage' (zones: door: porch; yard: none)",
    ]
    # `config check` reads the actions file its site names, with the same warnings
    from typer.testing import CliRunner

    from cezsar.cli import app

    (tmp_path / "deploy").mkdir()
    (tmp_path / "site.yaml").write_text("deploy: deploy\n" + SITE)
    res = CliRunner().invoke(app, ["config", "check", str(tmp_path / "site.yaml")])
    assert res.exit_code == 0, res.output
    assert "warning: " + warns[0] in res.output and "no stream has a zone named 'garage'" in res.output
    path.write_text("actions:\n  - {name: a, descriptions: x, colour: red}\n")
    res = CliRunner().invoke(app, ["config", "check", str(tmp_path / "site.yaml")])
    assert res.exit_code == 2 and f"error: {path}:2:32: actions[0] ('a'): unknown key 'colour'" in res.output


PRE = {"size": 32, "resize": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def test_check_warns_when_the_text_encoder_would_cut_a_sentence(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from typer.testing import CliRunner

    from cezsar.cli import app
    from cezsar.deploy.manifest import Manifest, save_manifest

    deploy = tmp_path / "deploy"
    deploy.mkdir()
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(deploy / "tokenizer.json"))
    save_manifest(
        deploy, Manifest("0" * 64, 17, PRE, 8.0, 8, 4, 4, text_max_length=6, files={"tokenizer": "tokenizer.json"})
    )
    path = tmp_path / "actions.yaml"
    path.write_text(
        'templates: ["a video of {}"]\nbackground: [a still room]\nactions:\n'
        "  - name: wave\n    descriptions:\n      - a hand waving\n      - a person waving both arms high\n"
    )
    res = CliRunner().invoke(app, ["actions", "check", str(path), "--deploy", str(deploy)])
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "tokens" in line]
    # "a video of a person waving both arms high": 9 words, 9 tokens; the others fit in 6
    assert warned == [
        f"warning: {path}:7:9: actions[0] ('wave').descriptions[1]: 'a video of a person waving both arms high' "
        "is 9 tokens; the text encoder reads 6 (the rest is cut off)"
    ]


# -- the JSON Schema ------------------------------------------------------------------------------
def test_the_schema_is_the_models_and_agrees_with_it() -> None:
    import json

    import jsonschema
    import yaml

    from edge.actions import json_schema

    repo = Path(__file__).resolve().parents[1]
    schema = json.loads((repo / "schemas" / "actions.schema.json").read_text())
    assert schema == json.loads(json.dumps(json_schema()))  # regenerate: python -m cezsar schemas
    check = jsonschema.Draft202012Validator(schema)
    for f in [*sorted((repo / "examples" / "actions").glob("*.yaml")), repo / "examples" / "site-actions.yaml"]:
        load_actions(f)
        check.validate(yaml.safe_load(f.read_text()))
    for bad in (
        {"actions": [{"name": "a", "descriptions": "x", "treshold": 1}]},
        {"actions": [{"name": "a", "descriptions": []}]},
        {"actions": [{"name": "a/b", "descriptions": "x"}]},
        {"actions": [{"name": "a", "descriptions": "x", "cooldown": -1}]},
        {"templates": ["no placeholder"], "actions": []},
        {"version": 2, "actions": []},
        {},
    ):
        assert not check.is_valid(bad), bad
        with pytest.raises(ActionsError):
            parse_actions(yaml.safe_dump(bad), "bad")


def test_defaults_cover_every_decision_parameter() -> None:
    from edge.actions import Defaults
    from edge.decisions import PARAM_KEYS, Params

    assert tuple(Defaults.model_fields) == PARAM_KEYS
    assert Defaults().params() == Params()


# -- the store under hostile files ----------------------------------------------------------------
def test_the_store_parses_outside_its_lock_and_refuses_a_bomb_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from edge import actions as actions_module

    path = tmp_path / "actions.yaml"
    path.write_text(GOOD)
    store = ActionStore(path)
    store.load()
    held: list[bool] = []
    real = actions_module._parse_bytes

    def parse(data: bytes, source: str):  # type: ignore[no-untyped-def]
        got = []  # can another thread take the store's lock while this parse runs?

        def take() -> None:
            got.append(store._lock.acquire(timeout=1.0))
            if got[0]:
                store._lock.release()

        t = threading.Thread(target=take)
        t.start()
        t.join()
        held.append(not got[0])
        return real(data, source)

    monkeypatch.setattr(actions_module, "_parse_bytes", parse)
    bomb = (
        "a: &a ["
        + ", ".join(["x"] * 9)
        + "]\n"
        + "".join(
            f"{n}: &{n} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )
    write(path, GOOD + bomb)
    t0 = time.monotonic()
    assert store.poll() is False
    assert time.monotonic() - t0 < 1.0
    assert "refused: more than 50000 values once aliases are expanded" in (store.error or "")
    assert store.current.names() == ["wave", "jump"] and held == [False]
    write(path, GOOD + "  - name: clap\n    descriptions: hands clapping\n")
    assert store.poll() is True and store.error is None and held == [False, False]
