"""The site file (``site.yaml``): YAML -> raw settings, every problem as one ``file:line:col`` line.

The file is :class:`edge.settings.RuntimeSettings` written out (examples/site.yaml shows every section).
It goes through the one YAML loader (cezsar/yamlfile.py, as the actions file does: the same limits on
size, aliases, nesting and tags). Problems become one line each that names the file, line and column of
the offending key (pydantic's error location mapped back onto the YAML node marks):

    site.yaml:14:11: sources[1].zones[0].rect: x0 must be < x1 (got [0.8, 0.1, 0.2, 0.9])

API: :func:`load_site_config` (schema only) and :func:`check_site_config` (schema, and the files it
names exist) return :class:`RuntimeSettings` or raise :class:`SiteConfigError` (a CezsarError whose
``problems`` are all the one-line messages; its message is the first, with a count of the rest).
``cezsar run --config`` reads the file with :func:`read_site_file` and applies its flags on top
(edge/settings/options.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cezsar import yamlfile
from cezsar.video import is_url
from cezsar.yamlfile import ConfigError
from edge.settings.model import RuntimeSettings

SiteConfig = RuntimeSettings  # the site file is the runtime's settings


class SiteConfigError(ConfigError):
    """An invalid site file. ``problems``: every problem as one ``file:line:col: where: what`` line."""


_EMPTY = "a mapping with actions: and sources:"


def site_document(text: str, source: str) -> yamlfile.Document:
    """YAML text -> the composed site file (its data, and the nodes that locate problems)."""
    doc = yamlfile.parse_text(text, source, empty=_EMPTY, error=SiteConfigError)
    if not isinstance(doc.data, dict):
        _, line, col = doc.locate(())
        raise SiteConfigError(f"{source}:{line}:{col}: expected {_EMPTY}, got {yamlfile.what(doc.data)}", line)
    return doc


def parse_site_text(text: str, source: str) -> tuple[dict[str, Any], Callable[[ValidationError], list[str]]]:
    """YAML text -> (the raw mapping, a function that turns a ValidationError into its lines)."""
    doc = site_document(text, source)
    return doc.data, lambda e: doc.problems(e, RuntimeSettings)


def read_site_file(path: Path) -> tuple[dict[str, Any], Callable[[ValidationError], list[str]]]:
    return parse_site_text(yamlfile.read(path, error=SiteConfigError), str(path))


def parse_site_config(text: str, source: str = "site.yaml", base: str | Path | None = None) -> RuntimeSettings:
    """YAML text -> RuntimeSettings; raises SiteConfigError. ``base``: folder for relative paths."""
    context = {"base": Path(base) if base is not None else None}
    return site_document(text, source).validate(RuntimeSettings, context)


def load_site_config(path: str | os.PathLike[str]) -> RuntimeSettings:
    """Read and validate a site file (the schema; relative paths resolved against its folder)."""
    p = Path(path)
    return parse_site_config(yamlfile.read(p, error=SiteConfigError), str(p), p.parent)


def check_site_config(path: str | os.PathLike[str], files: bool = True) -> RuntimeSettings:
    """:func:`load_site_config`, then (``files``) that the files it names exist: the actions file,
    the deploy folder, TLS files, file sources. Problems name the line of the key."""
    p = Path(path)
    doc = site_document(yamlfile.read(p, error=SiteConfigError), str(p))
    cfg = doc.validate(RuntimeSettings, {"base": p.parent})
    if not files:
        return cfg
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
            where, line, col = doc.locate(loc)
            what = "no such file" if kind == "file" else "no such folder"
            problems.append((line, f"{p}:{line}:{col}: {where}: {what}: {target}"))
    if problems:
        problems.sort(key=lambda x: x[0])
        raise SiteConfigError([m for _, m in problems], problems[0][0])
    return cfg
