"""RuntimeSettings: one settings type from flag to sink. Flags override the site file, a bad flag names
the flag, every key has a flag or a documented reason, and the docs' tables are the model's."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cezsar.errors import CezsarError
from edge.settings import OPTIONS, RuntimeSettings, SiteConfigError, load_settings, settings_from
from edge.settings.options import walk
from edge.settings.reference import BLOCKS, block, render

ROOT = Path(__file__).resolve().parents[1]

SITE = """\
actions: actions.yaml
sources:
  - name: cam1
    url: videos/cam1.mp4
    zones:
      - name: door
        rect: [0.1, 0.1, 0.5, 0.9]
  - name: cam2
    url: rtsp://cam2/stream
sampling:
  hop: 4
outputs:
  mqtt:
    host: broker.local
    prefix: site
  media:
    dir: media
    max_age: 12h
"""


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(SITE)
    return p


def test_every_key_has_a_flag_or_says_why_not() -> None:
    for path, f, _ in walk():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        assert extra.get("flag") or extra.get("file_only"), f"{'.'.join(path)}: no flag and no file_only reason"
        assert f.description, f"{'.'.join(path)}: no help text"
    flags = [o.flag for o in OPTIONS.values()]
    assert len(flags) == len(set(flags))


def test_the_docs_tables_are_the_models() -> None:
    for rel, name in BLOCKS.items():
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert block(text, name) == render(name), f"{rel}: regenerate with `python -m edge.settings.reference`"


def test_flags_override_the_file_and_relative_paths_follow_their_origin(site: Path, tmp_path: Path) -> None:
    s = load_settings(site)
    assert s.sampling.hop == 4 and s.outputs.mqtt is not None and s.outputs.mqtt.prefix == "site"
    assert s.sources[0].url == str(tmp_path / "videos/cam1.mp4")  # relative to the site file
    assert s.outputs.media is not None and s.outputs.media.max_age == 12 * 3600
    s = load_settings(site, {"hop": 3, "mqtt": "other:1884", "media_max_age": "7d", "events_log": Path("ev.jsonl")})
    assert s.sampling.hop == 3 and s.outputs.mqtt is not None
    assert (s.outputs.mqtt.host, s.outputs.mqtt.port, s.outputs.mqtt.prefix) == ("other", 1884, "site")
    assert s.outputs.media is not None and s.outputs.media.max_age == 7 * 86400
    assert s.outputs.events_log == Path.cwd() / "ev.jsonl"  # a flag's path: relative to the working folder
    # --source replaces the file's sources; a stream of the same name keeps its zones; --zone adds one
    s = load_settings(site, {"source": ["cam1=rtsp://x/1", "rtsp://y/2"], "zone": ["s1:gate=0,0,0.5,0.5"]})
    assert [(x.name, x.url) for x in s.sources] == [("cam1", "rtsp://x/1"), ("s1", "rtsp://y/2")]
    assert [z.name for z in s.sources[0].zones] == ["door"] and s.sources[1].zones[0].rect == (0, 0, 0.5, 0.5)


def test_a_bad_flag_names_the_flag_and_a_bad_key_its_line(site: Path, tmp_path: Path) -> None:
    with pytest.raises(CezsarError, match=r"^--hop 0: Input should be greater than or equal to 1$"):
        load_settings(site, {"hop": 0})
    with pytest.raises(CezsarError, match=r"^--mqtt 'h:99999': expected \[HOST:\]PORT"):
        settings_from(mqtt="h:99999")
    with pytest.raises(CezsarError, match=r"^--zone 'nope:z=0,0,1,1': no stream named 'nope'"):
        load_settings(site, {"zone": ["nope:z=0,0,1,1"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text(SITE.replace("hop: 4", "hop: 0"))
    with pytest.raises(SiteConfigError, match=r"bad\.yaml:11:8: sampling\.hop: 0 is out of range \(at least 1\)"):
        load_settings(bad, {"mqtt_prefix": "x"})
    with pytest.raises(CezsarError, match="unknown run option"):
        settings_from(hopp=3)


def test_an_output_option_needs_its_output_unless_it_comes_from_the_environment() -> None:
    with pytest.raises(CezsarError, match=r"^--mqtt-prefix needs --mqtt \(or outputs\.mqtt: in --config\)$"):
        settings_from(mqtt_prefix="x")
    with pytest.raises(CezsarError, match=r"^--media-max-age needs --media"):
        settings_from(media_max_age="1d")
    s = load_settings(None, {"mqtt_password": "pw"}, from_env={"mqtt_password"})
    assert s.outputs.mqtt is None  # CEZSAR_MQTT_PASSWORD set for something else does not switch MQTT on
    data = {"outputs": {"mqtt": {"host": "b", "password_env": "PW_FOR_CEZSAR"}}}
    from edge.settings.options import merge

    merge(data, {"mqtt_password": "from-env"}, {"mqtt_password"})
    assert data["outputs"]["mqtt"] == {"host": "b", "password_env": "PW_FOR_CEZSAR"}  # the file wins over the env
    merge(data, {"mqtt_password": "flag"})
    assert data["outputs"]["mqtt"]["password"] == "flag"  # a flag wins over the file
    s = settings_from(mqtt="broker", mqtt_password="pw", http="0.0.0.0:9000", http_token="long-enough")
    assert s.outputs.mqtt is not None and s.outputs.mqtt.secret() == "pw"
    assert s.outputs.http is not None and (s.outputs.http.bind, s.outputs.http.port) == ("0.0.0.0", 9000)
    with pytest.raises(CezsarError, match="needs a token"):
        settings_from(http="0.0.0.0:9000")


def test_require_names_what_a_run_lacks() -> None:
    with pytest.raises(CezsarError, match=r"give --deploy"):
        RuntimeSettings().require()
    with pytest.raises(CezsarError, match=r"give at least one --source"):
        settings_from(deploy=Path("d"), actions=Path("a.yaml")).require()


def test_run_help_lists_every_option_readably() -> None:
    from cezsar.cli import app

    r = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    for o in OPTIONS.values():
        assert o.flag in r.output, o.flag
    ours = [line for line in r.output.splitlines() if "Show this message" not in line]  # --help is click's
    assert not [line for line in ours if "<bool>" in line or line.rstrip(" │").endswith(" .")]
    assert "[default:" not in r.output
    assert "(default: 2)" in r.output  # --hop, from the model
