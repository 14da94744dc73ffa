"""The one YAML loader (cezsar/yamlfile.py): both files (actions, site) get the same mistakes refused with
one ``file:line:col`` line each; alias bombs, recursive aliases, deep nesting and tags are refused before
any value is built, in little time and memory; plain objects (control requests) name the field path."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from cezsar import yamlfile
from cezsar.errors import CezsarError
from cezsar.yamlfile import ConfigError, Limits
from edge.actions import ActionsError, load_actions
from edge.settings import SiteConfigError, load_site_config

ACTIONS = """\
defaults:
  threshold: 0.1
actions:
  - name: wave
    descriptions: [a hand waving]
    cooldown: 3
"""
SITE = """\
actions: actions.yaml
sources:
  - name: cam1
    url: rtsp://cam1/stream
outputs:
  http:
    port: 9000
"""


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: 9 strings, then 8 levels of 9 aliases to the level below (~350 bytes)."""
    lines = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


def expanded_size(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """Values a node stands for once its aliases are expanded (counted on the graph, not built)."""
    memo = {} if memo is None else memo
    if id(node) not in memo:
        children = [x for kv in node.value for x in kv] if isinstance(node, yaml.MappingNode) else node.value
        inner = sum(expanded_size(c, memo) for c in children) if isinstance(children, list) else 0
        memo[id(node)] = 1 + inner
    return memo[id(node)]


# (what, actions file, site file, fragment): the same kind of mistake in each file
CASES = [
    (
        "duplicate key",
        ACTIONS.replace("  threshold: 0.1\n", "  threshold: 0.1\n  threshold: 0.2\n"),
        SITE.replace("    port: 9000\n", "    port: 9000\n    port: 9001\n"),
        "duplicate key",
    ),
    (
        "unknown key",
        ACTIONS.replace("    cooldown: 3\n", "    cooldwon: 3\n"),
        SITE.replace("    port: 9000\n", "    prot: 9000\n"),
        "unknown key",
    ),
    (
        "wrong type",
        ACTIONS.replace("cooldown: 3", "cooldown: [3]"),
        SITE.replace("port: 9000", "port: [9000]"),
        "expected",
    ),
    ("out of range", ACTIONS.replace("cooldown: 3", "cooldown: -3"), SITE.replace("9000", "-9000"), "out of range"),
    ("invalid YAML", ACTIONS.replace("[a hand waving]", "[a hand waving"), SITE + "  x: [\n", "invalid YAML"),
    ("alias bomb", ACTIONS + billion_laughs(), SITE + billion_laughs(), "aliases are expanded"),
    ("recursive alias", ACTIONS + "x: &x [*x]\n", SITE + "x: &x [*x]\n", "recursive alias"),
    (
        "python tag",
        ACTIONS.replace("[a hand waving]", "!!python/object/apply:os.system [echo hi]"),
        SITE.replace("rtsp://cam1/stream", "!!python/object/apply:os.system [echo hi]"),
        "tag !!python/object/apply:os.system is not allowed",
    ),
    ("too deep", ACTIONS + "x: " + "[" * 40 + "]" * 40 + "\n", SITE + "x: " + "[" * 40 + "]" * 40 + "\n", "nested"),
]


@pytest.mark.parametrize(("what", "actions", "site", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_the_same_mistake_is_one_line_in_both_files(
    tmp_path: Path, what: str, actions: str, site: str, fragment: str
) -> None:
    a, s = tmp_path / "actions.yaml", tmp_path / "site.yaml"
    a.write_text(actions)
    s.write_text(site)
    errors: list[ConfigError] = []
    for path, load, kind in ((a, load_actions, ActionsError), (s, load_site_config, SiteConfigError)):
        with pytest.raises(kind) as err:
            load(path)
        errors.append(err.value)
    for path, e in zip((a, s), errors, strict=True):
        assert isinstance(e, ConfigError) and isinstance(e, CezsarError)
        assert len(e.problems) == 1, (what, e.problems)
        problem = e.problems[0]
        assert "\n" not in problem and str(e) == problem, problem
        assert problem.startswith(f"{path}:{e.line}:"), problem  # file:line:col
        assert int(problem.split(":")[2]) >= 1  # a column
        assert fragment in problem, problem


def test_an_alias_bomb_is_refused_in_milliseconds_and_kilobytes() -> None:
    """A 9-level billion laughs (about 350 bytes) stands for 435 million values: refused while composing,
    before a value is built. Measured: the time and the peak of Python allocations (tracemalloc)."""
    text = ACTIONS + billion_laughs()
    assert len(text.encode()) < 500
    # it is a real bomb: the node graph (composed without our limits, never built) expands to 9**9 strings
    graph = yaml.compose(text, Loader=yaml.SafeLoader)
    assert graph is not None and expanded_size(graph) > 387_000_000
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ActionsError, match=r"^a\.yaml:\d+:\d+: refused: more than 50000 values once aliases"):
            yamlfile.parse_text(text, "a.yaml", error=ActionsError)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 0.5, seconds
    assert peak < 2 * 1024 * 1024, peak  # bytes allocated at the peak of the refusal


def test_limits_are_configurable_and_aliases_within_them_work() -> None:
    text = "base: &b {threshold: 0.1}\nother:\n  <<: *b\n  cooldown: 2\nwhen: 2024-05-01\n"
    doc = yamlfile.parse_text(text, "t.yaml")
    assert doc.data["other"] == {"threshold": 0.1, "cooldown": 2}  # merge keys and aliases are plain YAML
    assert doc.data["when"] == "2024-05-01"  # no implicit timestamps: a date-like value stays a string
    with pytest.raises(ConfigError, match=r"t\.yaml:3:7: refused: more than 0 aliases"):
        yamlfile.parse_text(text, "t.yaml", limits=Limits(max_aliases=0))
    with pytest.raises(ConfigError, match="nested more than 1 levels deep"):
        yamlfile.parse_text(text, "t.yaml", limits=Limits(max_depth=1))
    with pytest.raises(ConfigError, match="more than 5 values"):
        yamlfile.parse_text(text, "t.yaml", limits=Limits(max_nodes=5))


def test_reading_caps_the_size_and_names_the_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * 2000 + b"\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: file is over 1000 bytes"):
        yamlfile.read(big, Limits(max_bytes=1000))
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text"):
        yamlfile.read(bad)
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        yamlfile.read(tmp_path / "nope.yaml")


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int = Field(1, ge=1, le=10)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Inner]
    flag: bool = False


def test_every_problem_in_one_pass_in_file_order() -> None:
    text = "items:\n  - name: a\n    size: 11\n  - nmae: b\n  - name: c\n    size: x\nflag: [1]\n"
    with pytest.raises(ConfigError) as err:
        yamlfile.parse(text, Outer, "o.yaml", label_key="name")
    assert err.value.problems == [
        "o.yaml:3:11: items[0] ('a').size: 11 is out of range (at most 10)",
        "o.yaml:4:5: items[1]: unknown key 'nmae' (did you mean 'name'?)",  # not also "missing 'name'"
        "o.yaml:6:11: items[2] ('c').size: expected an integer, got str 'x'",
        "o.yaml:7:7: flag: expected true or false, got a list",
    ]
    assert err.value.line == 3 and str(err.value).endswith("(and 3 more problems)")


def test_plain_objects_name_the_field_path() -> None:
    with pytest.raises(ConfigError) as err:
        yamlfile.validate_obj({"items": [{"name": "a", "size": 0}, {}]}, Outer, "request", "body", label_key="name")
    assert err.value.problems == [
        "request: body.items[0] ('a').size: 0 is out of range (at least 1)",
        "request: body.items[1]: missing required key 'name'",
    ]
    assert err.value.line is None
    with pytest.raises(ConfigError, match=r"^request: body: expected a mapping, got a list$"):
        yamlfile.validate_obj([1], Outer, "request", "body")


def test_located_points_into_a_value_and_at_the_first_occurrence() -> None:
    from pydantic import field_validator

    class Unique(BaseModel):
        names: list[str]

        @field_validator("names")
        @classmethod
        def _unique(cls, v: list[str]) -> list[str]:
            for i, n in enumerate(v):
                if n in v[:i]:
                    raise yamlfile.Located(f"'{n}' again", (i,), (v.index(n),))
            return v

    with pytest.raises(ConfigError, match=r"^u\.yaml:4:5: names\[2\]: 'a' again \(first at line 2\)$"):
        yamlfile.parse("names:\n  - a\n  - b\n  - a\n", Unique, "u.yaml")
    with pytest.raises(ConfigError, match=r"^req: names\[1\]: 'x' again \(first at names\[0\]\)$"):
        yamlfile.validate_obj({"names": ["x", "x"]}, Unique, "req")


def test_document_locates_keys_for_later_checks() -> None:
    doc = yamlfile.parse_text(SITE, "site.yaml")
    assert doc.locate(("sources", 0, "url")) == ("sources[0].url", 4, 10)
    assert doc.locate(("outputs", "http", "bind")) == ("outputs.http", 7, 5)  # not there: its mapping
    with pytest.raises(ConfigError, match=r"^site\.yaml:1:1: the file is empty \(expected a site\)$"):
        yamlfile.parse_text("# nothing\n", "site.yaml", empty="a site")


@pytest.mark.parametrize("verb", ["actions", "config"])
def test_a_recursive_alias_is_one_line_from_the_command_line(tmp_path: Path, verb: str) -> None:
    """It was a 2,993-line traceback (RecursionError) from `actions check` and at start."""
    from cezsar.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text((ACTIONS if verb == "actions" else SITE) + "x: &x [a, *x]\n")
    res = CliRunner().invoke(app, [verb, "check", str(bad)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert lines == [
        f"error: {bad}:{len(bad.read_text().splitlines())}:11: refused: recursive alias *x (inside its own anchor)"
    ]


def test_a_secret_is_never_shown_in_a_message() -> None:
    class Out(BaseModel):
        password: str = Field("x", min_length=8)
        token: int = 0
        name: str = "x"

    with pytest.raises(ConfigError) as err:
        yamlfile.parse("password: hunter2\ntoken: s3cr3t-t0ken\nname: 5\n", Out, "o.yaml")
    text = "\n".join(err.value.problems)
    assert "hunter2" not in text and "s3cr3t" not in text, text
    assert err.value.problems[1] == "o.yaml:2:8: token: expected an integer, got str"
    assert err.value.problems[2] == "o.yaml:3:7: name: expected a string, got int 5"  # not a secret: shown
