"""The site file (``site.yaml``): YAML -> raw settings, every problem as one ``file:line:col`` line.

The file is :class:`edge.settings.RuntimeSettings` written out (examples/site.yaml shows every section).
Problems become one line each that names the file, line and column of the offending key (pydantic's
error location mapped back onto the YAML node marks):

    site.yaml:14:11: sources[1].zones[0].rect: x0 must be < x1 (got [0.8, 0.1, 0.2, 0.9])

API: :func:`load_site_config` (schema only) and :func:`check_site_config` (schema, and the files it
names exist) return :class:`RuntimeSettings` or raise :class:`SiteConfigError` (a CezsarError whose
``problems`` are all the one-line messages; its message is the first, with a count of the rest).
``cezsar run --config`` reads the file with :func:`read_site_file` and applies its flags on top
(edge/settings/options.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cezsar.errors import CezsarError
from cezsar.video import is_url
from edge.settings.model import RuntimeSettings

SiteConfig = RuntimeSettings  # the site file is the runtime's settings


class SiteConfigError(CezsarError):
    """An invalid site file. ``problems``: every problem as one ``file:line:col: where: what`` line."""

    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)
        self.problems = problems


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _duplicates(node: yaml.Node | None, source: str, out: list[str], path: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
            line, col = _mark(k)
            where = f"{path}.{key}" if path else key
            if key in seen:
                out.append(f"{source}:{line}:{col}: {where}: duplicate key (first at line {seen[key]})")
            else:
                seen[key] = line
            _duplicates(v, source, out, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _duplicates(v, source, out, f"{path}[{i}]")


def _locate(root: yaml.Node, loc: tuple[int | str, ...]) -> tuple[yaml.Node, bool]:
    """The YAML node at a pydantic error location (False: a key that is not there; then its mapping)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    node = v
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return node, False
            node = node.value[part]
        # anything else (a union member's name pydantic puts into the location) is not a YAML level
    return node, True


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(part)):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _message(err: dict[str, Any]) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    value = err.get("input")
    if kind not in ("value_error", "assertion_error") and isinstance(value, str | int | float | bool):
        shown = repr(value)
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return msg


def _problems(e: ValidationError, root: yaml.Node, source: str) -> list[tuple[int, str]]:
    out = []
    for err in e.errors(include_url=False):
        loc = tuple(err["loc"])
        node, found = _locate(root, loc)
        line, col = _mark(node)
        where = _where(loc)
        if not found and err["type"] == "missing":
            out.append((line, f"{source}:{line}:{col}: {where}: missing required key (in the mapping starting here)"))
        else:
            out.append((line, f"{source}:{line}:{col}: {where}: {_message(dict(err))}"))
    return out


def _compose(text: str, source: str) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise SiteConfigError([f"{where}: invalid YAML: {e.problem or e.context}"]) from None
    if root is None:
        raise SiteConfigError([f"{source}:1:1: empty file; expected a mapping with actions: and sources:"])
    if not isinstance(root, yaml.MappingNode):
        line, col = _mark(root)
        raise SiteConfigError([f"{source}:{line}:{col}: expected a mapping with actions: and sources:"])
    dups: list[str] = []
    _duplicates(root, source, dups)
    if dups:
        raise SiteConfigError(dups)
    return root


def parse_site_text(text: str, source: str) -> tuple[dict[str, Any], Callable[[ValidationError], list[str]]]:
    """YAML text -> (the raw mapping, a function that turns a ValidationError into its lines)."""
    root = _compose(text, source)
    data = yaml.safe_load(text)

    def problems_of(e: ValidationError) -> list[str]:
        return [m for _, m in sorted(_problems(e, root, source), key=lambda p: p[0])]

    return data, problems_of


def read_site_file(path: Path) -> tuple[dict[str, Any], Callable[[ValidationError], list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SiteConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SiteConfigError([f"{path}: cannot read ({e})"]) from None
    return parse_site_text(text, str(path))


def parse_site_config(text: str, source: str = "site.yaml", base: str | Path | None = None) -> RuntimeSettings:
    """YAML text -> RuntimeSettings; raises SiteConfigError. ``base``: folder for relative paths."""
    data, problems_of = parse_site_text(text, source)
    try:
        return RuntimeSettings.model_validate(data, context={"base": Path(base) if base is not None else None})
    except ValidationError as e:
        raise SiteConfigError(problems_of(e)) from None


def load_site_config(path: str | os.PathLike[str]) -> RuntimeSettings:
    """Read and validate a site file (the schema; relative paths resolved against its folder)."""
    p = Path(path)
    data, problems_of = read_site_file(p)
    try:
        return RuntimeSettings.model_validate(data, context={"base": p.parent})
    except ValidationError as e:
        raise SiteConfigError(problems_of(e)) from None


def check_site_config(path: str | os.PathLike[str], files: bool = True) -> RuntimeSettings:
    """:func:`load_site_config`, then (``files``) that the files it names exist: the actions file,
    the deploy folder, TLS files, file sources. Problems name the line of the key."""
    cfg = load_site_config(path)
    if not files:
        return cfg
    p = Path(path)
    root = yaml.compose(p.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    assert root is not None
    checks: list[tuple[tuple[int | str, ...], Path | None, str]] = [
        (("actions",), cfg.actions, "file"),
        (("deploy",), cfg.deploy, "dir"),
    ]
    if cfg.outputs.mqtt is not None and cfg.outputs.mqtt.tls is not None:
        tls = cfg.outputs.mqtt.tls
        for key in ("ca", "cert", "key"):
            checks.append((("outputs", "mqtt", "tls", key), getattr(tls, key), "file"))
    for i, s in enumerate(cfg.sources):
        if not (s.url.isdigit() or is_url(s.url) or "!" in s.url):
            checks.append((("sources", i, "url"), Path(s.url), "file"))
    problems: list[tuple[int, str]] = []
    for loc, target, kind in checks:
        if target is None:
            continue
        ok = target.is_file() if kind == "file" else target.is_dir()
        if not ok:
            line, col = _mark(_locate(root, loc)[0])
            what = "no such file" if kind == "file" else "no such folder"
            problems.append((line, f"{p}:{line}:{col}: {_where(loc)}: {what}: {target}"))
    if problems:
        raise SiteConfigError([m for _, m in sorted(problems, key=lambda x: x[0])])
    return cfg
