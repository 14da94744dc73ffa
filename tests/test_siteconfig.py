"""Site config (site.yaml): the schema, one-line errors with the line of the key, `cezsar config check`."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cezsar.commands import config as config_cli
from cezsar.errors import CezsarError
from edge.settings import RuntimeSettings as SiteConfig
from edge.settings import (
    SiteConfigError,
    check_site_config,
    load_site_config,
    parse_site_config,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

GOOD = """\
actions: actions.yaml
sources:
  - name: cam1
    url: rtsp://cam1/stream
    zones:
      - name: door
        rect: [0.1, 0.1, 0.5, 0.9]
      - name: path
        polygon: [[0, 0], [1, 0], [0.5, 1]]
  - name: cam2
    url: videos/cam2.mp4
outputs:
  mqtt:
    host: broker.local
  http:
    port: 9000
  media:
    dir: media
    max_bytes: 500MB
    max_age: 12h
"""


def test_example_site_file_is_valid() -> None:
    cfg = load_site_config(EXAMPLES / "site.yaml")
    assert [s.name for s in cfg.sources] == ["entrance", "yard"]
    assert cfg.sources[0].zones[0].name == "door"
    assert cfg.sources[0].zones[0].points()[0] == (0.55, 0.10)
    out = cfg.outputs
    assert out.zmq.pub == "tcp://127.0.0.1:5556" and out.mqtt is not None and out.http is not None
    assert out.media is not None and out.media.max_bytes == 2 << 30 and out.media.max_age == 7 * 86400
    assert out.media.pre_roll == 3.0 and out.media.dir == EXAMPLES / "media"
    assert cfg.actions == EXAMPLES / "site-actions.yaml" and cfg.actions.is_file()
    assert cfg.source_specs() == [
        f"entrance={EXAMPLES / 'videos/entrance.mp4'}",
        f"yard={EXAMPLES / 'videos/yard.mp4'}",
    ]


def test_relative_paths_and_defaults(tmp_path: Path) -> None:
    cfg = parse_site_config(GOOD, "site.yaml", base=tmp_path)
    assert cfg.actions == tmp_path / "actions.yaml"
    assert cfg.sources[0].url == "rtsp://cam1/stream"  # URLs stay as they are
    assert cfg.sources[1].url == str(tmp_path / "videos/cam2.mp4")
    assert cfg.outputs.media is not None and cfg.outputs.media.max_bytes == 500_000_000
    assert cfg.outputs.media.max_age == 12 * 3600
    assert cfg.outputs.mqtt is not None and cfg.outputs.mqtt.port == 1883 and cfg.outputs.mqtt.prefix == "cezsar"
    assert cfg.outputs.http is not None and cfg.outputs.http.bind == "127.0.0.1"
    assert cfg.backend == "auto" and cfg.precision == "auto"


def _replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (_replace("[0.1, 0.1, 0.5, 0.9]", "[0.8, 0.1, 0.5, 0.9]"), 7, "sources[0].zones[0].rect: x0 must be < x1"),
        (_replace("[[0, 0], [1, 0], [0.5, 1]]", "[[0, 0], [1, 0]]"), 9, "at least 3 points"),
        (_replace("[0.1, 0.1, 0.5, 0.9]", "[0.1, 0.1, 1.5, 0.9]"), 7, "normalised to 0..1"),
        (
            _replace("    host: broker.local\n", "    hots: broker.local\n"),
            14,
            "outputs.mqtt: unknown key 'hots' (did you mean 'host'?)",  # not also "missing 'host'"
        ),
        (
            _replace("    host: broker.local\n", "    host: broker.local\n    hots: x\n"),
            15,
            "outputs.mqtt: unknown key 'hots' (allowed: host, port, prefix,",  # host is there: no "did you mean"
        ),
        (_replace("    port: 9000", "    port: ninety"), 16, "outputs.http.port: expected an integer, got str 'nin"),
        (_replace("    url: videos/cam2.mp4\n", ""), 10, "sources[1]: missing required key 'url'"),
        (_replace("name: cam2", "name: cam 2"), 10, "sources[1].name: String should match pattern"),
        (_replace("name: cam2", "name: cam1"), 3, "sources: source names must be unique (repeated: cam1)"),
        (_replace("name: path", "name: door"), 6, "zone names must be unique"),
        (_replace("    max_age: 12h", "    max_age: 12 hours"), 20, "outputs.media.max_age: expected a duration"),
        (_replace("  http:\n", "  http:\n    bind: 0.0.0.0\n"), 16, "listening beyond this machine needs a token"),
        ("backend: tensorrtt\n" + GOOD, 1, "backend: unknown backend 'tensorrtt'; choose one of auto, tensorrt"),
        (
            _replace("outputs:\n", "outputs:\n  zmq:\n    pub: 5556\n"),
            14,
            "outputs.zmq.pub: expected a string, got int 5556",
        ),
        (_replace("outputs:\n", "outputs:\n  zmq:\n    pub: localhost:5556\n"), 14, "expected a ZeroMQ endpoint"),
        (GOOD + "actions: other.yaml\n", 21, "(top level): duplicate key 'actions' (first at line 1)"),
        (_replace("    host: broker.local\n", "    host: broker.local\n    tls: {key: k.pem}\n"), 15, "a client key"),
        ("sources: [\n", 2, "invalid YAML"),
        ("", 1, "the file is empty"),
        ("- a\n- b\n", 1, "expected a mapping"),
    ],
)
def test_invalid_files_name_the_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(SiteConfigError) as err:
        load_site_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}:"), msg
    assert fragment in msg, msg
    assert isinstance(err.value, CezsarError)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    text = _replace("    port: 9000", "    port: ninety").replace("name: cam2", "name: cam 2")
    with pytest.raises(SiteConfigError) as err:
        parse_site_config(text, "s.yaml")
    assert [p.split(":")[1] for p in err.value.problems] == ["10", "16"]  # in file order
    assert str(err.value).endswith("(and 1 more problem)")


def test_check_names_missing_files_with_their_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLES / "site.yaml", site / "site.yaml")
    with pytest.raises(SiteConfigError) as err:
        check_site_config(site / "site.yaml")
    problems = err.value.problems
    assert problems[0].startswith(f"{site / 'site.yaml'}:5:") and "deploy: no such folder" in problems[0]
    assert any(":6:" in p and "actions: no such file" in p for p in problems)
    assert any(":12:" in p and "sources[0].url: no such file" in p for p in problems)
    # with the files in place it passes; --no-files checks the schema only
    shutil.copy(EXAMPLES / "site-actions.yaml", site / "site-actions.yaml")
    (site / "videos").mkdir()
    for name in ("entrance", "yard"):
        (site / "videos" / f"{name}.mp4").write_bytes(b"")
    (tmp_path / "deploy" / "synth").mkdir(parents=True)  # ../deploy/synth from the site file
    assert check_site_config(site / "site.yaml").sources[1].name == "yard"


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _replace("    host: broker.local\n", "    host: broker.local\n    password_env: SITE_TEST_PW\n")
    cfg = parse_site_config(text)
    assert cfg.outputs.mqtt is not None
    monkeypatch.delenv("SITE_TEST_PW", raising=False)
    with pytest.raises(CezsarError, match="SITE_TEST_PW is not set"):
        cfg.outputs.mqtt.secret()
    monkeypatch.setenv("SITE_TEST_PW", "pw")
    assert cfg.outputs.mqtt.secret() == "pw"


def test_backend_names_come_from_the_backend_registry(tmp_path: Path) -> None:
    from cezsar.backends.registry import names

    for name in names():
        assert (
            SiteConfig.model_validate(
                {"actions": "a.yaml", "backend": name, "sources": [{"name": "a", "url": "file:///x.mp4"}]}
            ).backend
            == name
        )


def test_config_check_command(tmp_path: Path) -> None:
    app = typer.Typer()
    config_cli.register(app)

    @app.callback()
    def _root() -> None:  # a group, as in cezsar/cli.py
        pass

    runner = CliRunner()
    r = runner.invoke(app, ["config", "check", str(EXAMPLES / "site.yaml"), "--no-files"])
    assert r.exit_code == 0, r.output
    assert "OK: 2 sources (entrance, yard), 1 zone, outputs: zmq, mqtt, http, media" in r.output
    bad = tmp_path / "site.yaml"
    bad.write_text(textwrap.dedent(_replace("    port: 9000", "    port: 70000")))
    r = runner.invoke(app, ["config", "check", str(bad)])
    assert r.exit_code == 2
    assert f"error: {bad}:16:11: outputs.http.port: 70000 is out of range (at most 65535)" in r.output
