"""Flags as overrides of ``RuntimeSettings``: the one way ``cezsar run`` (and any caller) builds settings.

:data:`OPTIONS` is derived from the model: every key with a ``flag`` is one option (``--hop`` ->
``sampling.hop``); a few options set several keys or a list (``--mqtt HOST[:PORT]``, ``--http
[HOST:]PORT``, ``--source NAME=SRC``, ``--zone STREAM:NAME=x0,y0,x1,y1``). :func:`load_settings`
reads the site file (when given), applies the options that were given on top of it, and validates the
whole once: a problem in the file names its ``file:line:col``, a problem in a flag names the flag.

Precedence: a flag on the command line over the site file over an option's environment variable
(``CEZSAR_MQTT_PASSWORD`` gives way to the file's ``password`` or ``password_env``) over the model's
default. An optional section (``outputs.mqtt``, ``http``, ``media``, ``webhook``) exists when the site
file has it or its anchor flag is given (``--mqtt``, ``--http``, ``--media``, ``--webhook``); any other
flag of an absent section is an error on the command line, and ignored when it comes from the
environment (``CEZSAR_MQTT_PASSWORD`` set for another program does not switch MQTT on).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from cezsar.errors import CezsarError
from cezsar.video import default_stream_name, parse_source
from edge.settings.model import RuntimeSettings, Section, _seconds

Path_ = tuple[str, ...]
HOST_PORT = {"--mqtt": (None, 1883), "--http": ("127.0.0.1", None)}
HOST_PORT_HELP = {
    "--mqtt": "Also publish to this MQTT broker: HOST[:PORT] (port 1883 by default).",
    "--http": "Serve the web console (/console/), /healthz /readyz /metrics (/media) on [HOST:]PORT "
    "(host 127.0.0.1 by default; beyond loopback needs --http-token).",
}


@dataclass(frozen=True)
class Option:
    """One flag of ``cezsar run``: ``param`` (its keyword name), the keys it sets, its type."""

    flag: str
    param: str
    paths: tuple[Path_, ...]
    kind: type  # bool, int, float, str, Path, list (a repeatable str)
    help: str
    metavar: str | None
    default: Any  # the model's default, for --help (None: none to show)
    env: str | None = None
    anchor: Path_ | None = None  # the optional section this flag creates, if any

    def values(self, value: Any) -> dict[Path_, Any]:
        """The keys this option sets from its value (the special ones parse it)."""
        if self.flag in HOST_PORT:
            host, port = parse_host_port(str(value), *HOST_PORT[self.flag], self.flag)
            return {self.paths[0]: host, self.paths[1]: port}
        if self.kind is Path:
            return {self.paths[0]: str(Path(value).expanduser().absolute())}
        if self.flag == "--control" and str(value).lower() in ("", "none", "off"):
            return {self.paths[0]: None}
        return {self.paths[0]: value}


def parse_host_port(value: str, default_host: str | None, default_port: int | None, what: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``PORT`` or ``[v6]:PORT`` -> (host, port); one clear line when wrong."""
    v = value.strip()
    host: str | None
    port_s: str | None
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else (None if not rest else "x")
    elif v.isdigit():
        host, port_s = None, v
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    else:
        host, port_s = v, None
    host = host or default_host
    try:
        port = int(port_s) if port_s is not None else default_port
    except ValueError:
        port = None
    if not host or port is None or not 0 <= port < 65536:
        raise CezsarError(f"{what} {value!r}: expected [HOST:]PORT or HOST[:PORT] with a port 0-65535")
    return host, port


# ---------------------------------------------------------------------------------------------- the table


def _section_type(annotation: Any) -> type[Section] | None:
    """The Section class of a field annotation (``X``, ``X | None``), else None."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for a in args:
        if isinstance(a, type) and issubclass(a, Section):
            return a
    return None


def walk(model: type[BaseModel] = RuntimeSettings, prefix: Path_ = ()) -> Iterator[tuple[Path_, FieldInfo, bool]]:
    """Every leaf key of the settings: (path, field, inside an optional section)."""
    yield from _walk(model, prefix, False)


def _walk(model: type[BaseModel], prefix: Path_, optional: bool) -> Iterator[tuple[Path_, FieldInfo, bool]]:
    for name, f in model.model_fields.items():
        sub = _section_type(f.annotation)
        if sub is not None and name != "sources":
            yield from _walk(sub, (*prefix, name), optional or not f.is_required() and f.default is None)
        else:
            yield (*prefix, name), f, optional


def _meta(f: FieldInfo) -> dict[str, Any]:
    extra = f.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def _kind(f: FieldInfo) -> tuple[type, str | None]:
    """The flag's Python type and metavar: durations ("30s", "7d") and sizes ("2GiB") are text."""
    text = str(f.annotation)
    if "_seconds" in text or any(getattr(m, "func", None) is _seconds for m in f.metadata):
        return str, "DURATION"
    if "ByteSize" in text:
        return str, "SIZE"
    args = typing.get_args(f.annotation) or (f.annotation,)
    if any(typing.get_origin(a) is typing.Literal for a in args) or typing.get_origin(f.annotation) is typing.Literal:
        lits = [x for a in args for x in (typing.get_args(a) or (a,))]
        return (int, None) if all(isinstance(x, int) for x in lits) else (str, None)
    for t in (bool, int, float, Path):
        if t in args:
            return t, None
    return str, None


def _anchor(path: Path_) -> Path_:
    return path[:-1]


def build_options() -> dict[str, Option]:
    """The options, keyed by their keyword name (``--mqtt-prefix`` -> ``mqtt_prefix``)."""
    grouped: dict[str, list[tuple[Path_, FieldInfo, bool]]] = {}
    for path, f, optional in walk():
        flag = _meta(f).get("flag")
        if flag and flag != "--source":  # --source and --zone: below
            grouped.setdefault(flag, []).append((path, f, optional))
    out: dict[str, Option] = {}
    for flag, items in grouped.items():
        path, f, optional = items[0]
        kind, metavar = (str, "HOST:PORT") if flag in HOST_PORT else _kind(f)
        required = f.is_required() or flag in HOST_PORT
        out[flag[2:].replace("-", "_")] = Option(
            flag=flag,
            param=flag[2:].replace("-", "_"),
            paths=tuple(p for p, _, _ in items),
            kind=kind,
            help=HOST_PORT_HELP.get(flag, f.description or ""),
            metavar=metavar,
            default=None if required else f.default,
            env=_meta(f).get("env"),
            anchor=_anchor(path) if optional and required else None,
        )
    out["source"] = Option("--source", "source", (("sources",),), list, SOURCE_HELP, "NAME=SRC", None)
    out["zone"] = Option("--zone", "zone", (("sources",),), list, ZONE_HELP, "STREAM:NAME=x0,y0,x1,y1", None)
    return out


SOURCE_HELP = (
    "NAME=SRC: a camera index, rtsp/http URL, video file or GStreamer pipeline (door=rtsp://cam2/stream). "
    "Without NAME= a camera is cam<index>, a file its stem, a URL s<position>. Repeat for several; "
    "replaces the sources of --config."
)
ZONE_HELP = (
    "STREAM:NAME=x0,y0,x1,y1: a named rectangle of a stream (0..1, x right, y down) that actions can require "
    "(zone: NAME). Repeat; adds to the zones of --config."
)
OPTIONS: dict[str, Option] = build_options()


# ---------------------------------------------------------------------------------------------- merging


def _set(data: dict[str, Any], path: Path_, value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _has(data: Mapping[str, Any], path: Path_) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or node.get(part) is None:
            return False
        node = node[part]
    return True


def _sources(texts: Sequence[str], file_sources: list[Any]) -> list[dict[str, Any]]:
    """``--source`` values -> source entries; a file source of the same name keeps its zones."""
    zones = {s.get("name"): s.get("zones", []) for s in file_sources if isinstance(s, dict)}
    taken: set[str] = set()
    out = []
    for i, text in enumerate(texts):
        spec = parse_source(text, default_stream_name(text, i, taken))
        if spec.name in taken:
            raise CezsarError(f"--source {text!r}: stream name {spec.name!r} is used twice")
        taken.add(spec.name)
        target = str(Path(spec.target).expanduser().absolute()) if spec.kind == "file" else spec.target
        out.append({"name": spec.name, "url": target, "zones": list(zones.get(spec.name, []))})
    return out


def _zones(texts: Sequence[str], sources: list[Any]) -> None:
    from edge.zones import parse_zone_flag

    by_name = {s.get("name"): s for s in sources if isinstance(s, dict)}
    for text in texts:
        stream, z = parse_zone_flag(text)
        src = by_name.get(stream)
        if src is None:
            raise CezsarError(f"--zone {text!r}: no stream named {stream!r} (streams: {', '.join(map(str, by_name))})")
        kept = [dict(x) for x in src.get("zones", []) if isinstance(x, dict) and x.get("name") != z.name]
        src["zones"] = [*kept, z.model_dump(exclude_none=True)]


def merge(data: dict[str, Any], options: Mapping[str, Any], from_env: set[str] = frozenset()) -> dict[Path_, str]:  # type: ignore[assignment]
    """Apply the given options to the raw settings ``data`` in place. Returns which keys each flag set
    (path -> the flag as given), to name the flag in an error."""
    given = {k: v for k, v in options.items() if v is not None and v != [] and v != ()}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise CezsarError(f"unknown run option(s): {', '.join(unknown)}")
    origin: dict[Path_, str] = {}
    anchors = {o.anchor for o in OPTIONS.values() if o.anchor is not None}
    present = {a for a in anchors if _has(data, a)}
    for name in given:  # the anchors first: they create their sections
        o = OPTIONS[name]
        if o.anchor is not None:
            present.add(o.anchor)
    if "source" in given:
        data["sources"] = _sources(given.pop("source"), list(data.get("sources") or []))
    if "zone" in given:
        _zones(given.pop("zone"), list(data.get("sources") or []))
    for name, value in given.items():
        o = OPTIONS[name]
        section = next((a for a in anchors if o.paths[0][: len(a)] == a), None)
        if section is not None and section not in present:
            if name in from_env:
                continue
            anchor = next(x for x in OPTIONS.values() if x.anchor == section)
            raise CezsarError(f"{o.flag} needs {anchor.flag} (or {'.'.join(section)}: in --config)")
        if name in from_env and any(_has(data, p) or _has(data, (*p[:-1], p[-1] + "_env")) for p in o.paths):
            continue  # the environment gives way to what the file says (a flag does not)
        for path, v in o.values(value).items():
            _set(data, path, v)
            origin[path] = f"{o.flag} {value!r}" if o.kind is not bool else o.flag
    return origin


def _flag_problem(err: Mapping[str, Any], origin: Mapping[Path_, str]) -> str | None:
    loc = tuple(str(p) for p in err["loc"])
    for path, flag in origin.items():
        if loc[: len(path)] == path or path[: len(loc)] == loc:
            msg = str(err["msg"]).removeprefix("Value error, ")
            return f"{flag}: {msg}"
    return None


def validate(
    data: dict[str, Any],
    origin: Mapping[Path_, str],
    base: Path | None,
    problems_of: Callable[[ValidationError], list[str]] | None = None,
) -> RuntimeSettings:
    """The merged data -> RuntimeSettings; a flag's problem names the flag, a file's its line
    (``problems_of``: the site file's own mapping of errors onto lines)."""
    from edge.settings.sitefile import SiteConfigError

    try:
        return RuntimeSettings.model_validate(data, context={"base": base})
    except ValidationError as e:
        flagged = [p for err in e.errors(include_url=False) if (p := _flag_problem(err, origin)) is not None]
        if flagged:
            raise CezsarError(flagged[0] + (f" (and {len(flagged) - 1} more)" if len(flagged) > 1 else "")) from None
        if problems_of is not None:
            raise SiteConfigError(problems_of(e)) from None
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise CezsarError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None


def load_settings(
    config: str | Path | None = None, options: Mapping[str, Any] | None = None, from_env: set[str] | None = None
) -> RuntimeSettings:
    """The site file (when given) with the options on top, validated once. ``options`` are keyword names
    of :data:`OPTIONS` (``hop=3``, ``mqtt="broker:1884"``, ``source=["cam=0"]``); None means not given."""
    from edge.settings.sitefile import read_site_file

    if config is not None:
        data, problems_of = read_site_file(Path(config))
        base: Path | None = Path(config).parent
    else:
        data, problems_of, base = {}, None, None
    origin = merge(data, options or {}, from_env or set())
    return validate(data, origin, base, problems_of)


def settings(**options: Any) -> RuntimeSettings:
    """Settings from options alone, as the flags would give them: ``settings(deploy=d, source=[...])``."""
    return load_settings(None, options)
