"""The site config file (``site.yaml``): sources with zones, outputs, actions file, backend.

A schema in pydantic v2 validates it; every problem becomes one line that names the file, line and
column of the offending key (pydantic's error location mapped back onto the YAML node marks):

    site.yaml:14:11: sources[1].zones[0].rect: x0 must be < x1 (got [0.8, 0.1, 0.2, 0.9])

Relative paths (``deploy``, ``actions``, ``outputs.media.dir``, TLS files, and file sources) are
relative to the folder of the site file. Secrets can stay out of the file: ``password_env`` /
``token_env`` name an environment variable read when the config is used (:meth:`MqttOutput.secret`,
:meth:`HttpOutput.secret`). See examples/site.yaml for every key and docs/integrations.md.

API: :func:`load_site_config` (schema only) and :func:`check_site_config` (schema, and the files it
names exist) return a :class:`SiteConfig` or raise :class:`SiteConfigError` (a CezsarError whose
``problems`` are all the one-line messages; its message is the first, with a count of the rest).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cezsar.errors import CezsarError

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _seconds(value: Any) -> Any:
    """``30``, ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"500ms"`` -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration (seconds, or a number with ms/s/m/h/d)")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration (seconds, or a number with ms/s/m/h/d), got {value!r}")


Seconds = Annotated[float, BeforeValidator(_seconds)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _base(info: ValidationInfo) -> Path | None:
    ctx = info.context or {}
    base = ctx.get("base")
    return Path(base) if base is not None else None


def _resolve(p: Path | None, info: ValidationInfo) -> Path | None:
    if p is None:
        return None
    p = p.expanduser()
    base = _base(info)
    return p if p.is_absolute() or base is None else base / p


class Zone(_Model):
    """A named region in normalised coordinates (0..1, x to the right, y down): exactly one of
    ``rect: [x0, y0, x1, y1]`` or ``polygon: [[x, y], ...]`` (3 or more points)."""

    name: str = Field(pattern=NAME_PATTERN)
    rect: tuple[float, float, float, float] | None = None
    polygon: list[tuple[float, float]] | None = None

    @field_validator("rect")
    @classmethod
    def _rect(cls, v: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if v is None:
            return v
        if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in v):
            raise ValueError(f"coordinates must be normalised to 0..1 (got {list(v)})")
        if not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError(f"x0 must be < x1 and y0 < y1 (got {list(v)})")
        return v

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is None:
            return v
        if len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 points (got {len(v)})")
        if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for pt in v for c in pt):
            raise ValueError("coordinates must be normalised to 0..1")
        area2 = sum(v[i][0] * v[(i + 1) % len(v)][1] - v[(i + 1) % len(v)][0] * v[i][1] for i in range(len(v)))
        if abs(area2) < 1e-9:
            raise ValueError("the polygon has no area (its points are on one line)")
        return v

    @model_validator(mode="after")
    def _one_shape(self) -> Zone:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("give exactly one of rect: [x0, y0, x1, y1] or polygon: [[x, y], ...]")
        return self

    def points(self) -> list[tuple[float, float]]:
        """The zone as a polygon (a rect as its 4 corners, clockwise from top-left)."""
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        assert self.polygon is not None
        return list(self.polygon)


class Source(_Model):
    """A stream: ``name`` (topics, events) and ``url`` as for ``--source`` (camera index, URL, GStreamer
    pipeline or video file; a relative file path is relative to the site file)."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(min_length=1)
    zones: list[Zone] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        if v.isdigit() or _URL.match(v) or "!" in v:
            return v
        resolved = _resolve(Path(v), info)
        return str(resolved)

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, v: list[Zone]) -> list[Zone]:
        names = [z.name for z in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"zone names must be unique in a source (repeated: {', '.join(dup)})")
        return v

    @property
    def spec(self) -> str:
        """As a ``--source`` value: ``NAME=URL``."""
        return f"{self.name}={self.url}"


def _check_endpoint(v: str | None) -> str | None:
    if v is None or v.lower() in ("none", "off"):
        return None
    if not re.match(r"^(tcp|ipc|inproc)://\S+$", v):
        raise ValueError(f"expected a ZeroMQ endpoint such as tcp://127.0.0.1:5556 (got {v!r})")
    return v


class ZmqOutput(_Model):
    pub: str = "tcp://127.0.0.1:5556"
    control: str | None = "tcp://127.0.0.1:5557"  # null or "none": no control socket

    @field_validator("pub", "control")
    @classmethod
    def _endpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        checked = _check_endpoint(v)
        if checked is None and info.field_name == "pub":
            raise ValueError("the PUB socket cannot be off")
        return checked


def _env_secret(value: str | None, env: str | None, what: str) -> str | None:
    if env is None:
        return value
    got = os.environ.get(env)
    if got is None:
        raise CezsarError(f"{what}: environment variable {env} is not set")
    return got


class MqttTls(_Model):
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False  # no verification of the broker's certificate and host name

    @field_validator("ca", "cert", "key")
    @classmethod
    def _path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTls:
        if self.key is not None and self.cert is None:
            raise ValueError("key: a client key needs its certificate (cert)")
        return self


class MqttOutput(_Model):
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("cezsar", pattern=r"^[^+#\s]+$")
    username: str | None = None
    password: str | None = None
    password_env: str | None = None  # read the password from this environment variable
    client_id: str | None = None
    node_id: str | None = None  # Home Assistant node (default: the host name)
    discovery: bool = True
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^+#\s]+$")
    scores: bool = True
    qos: Literal[0, 1, 2] = 1
    tls: MqttTls | None = None

    @model_validator(mode="after")
    def _one_password(self) -> MqttOutput:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        return self

    def secret(self) -> str | None:
        """The password (from ``password_env`` when set)."""
        return _env_secret(self.password, self.password_env, "outputs.mqtt.password_env")


_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost)$")


class HttpOutput(_Model):
    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = Field(None, min_length=8)
    token_env: str | None = None

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> HttpOutput:
        if self.token is not None and self.token_env is not None:
            raise ValueError("give token or token_env, not both")
        if not _LOOPBACK.match(self.bind) and self.token is None and self.token_env is None:
            raise ValueError(f"bind {self.bind}: listening beyond this machine needs a token (token or token_env)")
        return self

    def secret(self) -> str | None:
        """The bearer token (from ``token_env`` when set)."""
        return _env_secret(self.token, self.token_env, "outputs.http.token_env")


class MediaOutput(_Model):
    dir: Path
    pre_roll: Seconds = Field(3.0, ge=0, le=60)
    max_clip: Seconds = Field(120.0, gt=0, le=3600)
    max_bytes: ByteSize = Field(ByteSize(2 << 30), gt=0)  # 2 GiB; "500MB", "2GiB" ...
    max_age: Seconds = Field(7 * 86400.0, gt=0)  # "7d"

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: Path, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)


class Outputs(_Model):
    zmq: ZmqOutput = Field(default_factory=ZmqOutput)
    mqtt: MqttOutput | None = None
    http: HttpOutput | None = None
    media: MediaOutput | None = None


class SiteConfig(_Model):
    version: Literal[1] = 1
    deploy: Path | None = None  # the deploy folder (from `cezsar export`); else --deploy
    actions: Path
    backend: str = "auto"
    precision: str = "auto"
    sources: list[Source] = Field(min_length=1)
    outputs: Outputs = Field(default_factory=Outputs)

    @field_validator("deploy", "actions")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        # the names come from the backends' own declarations (cezsar.backends.registry)
        from cezsar.backends.registry import names

        if v not in names():
            raise ValueError(f"unknown backend {v!r}; choose one of {', '.join(names())}")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        from cezsar.backends.registry import PRECISIONS

        if v not in PRECISIONS:
            raise ValueError(f"unknown precision {v!r}; choose one of {', '.join(PRECISIONS)}")
        return v

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[Source]) -> list[Source]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique (repeated: {', '.join(dup)})")
        return v

    def source_specs(self) -> list[str]:
        """The sources as ``--source`` values (``NAME=URL``)."""
        return [s.spec for s in self.sources]


# ---------------------------------------------------------------------------------------------- loading


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


def parse_site_config(text: str, source: str = "site.yaml", base: str | Path | None = None) -> SiteConfig:
    """YAML text -> SiteConfig; raises SiteConfigError. ``base``: folder for relative paths."""
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
    data = yaml.safe_load(text)
    try:
        return SiteConfig.model_validate(data, context={"base": Path(base) if base is not None else None})
    except ValidationError as e:
        problems = sorted(_problems(e, root, source), key=lambda p: p[0])
        raise SiteConfigError([m for _, m in problems]) from None


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and validate a site file (the schema; relative paths resolved against its folder)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SiteConfigError([f"{p}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SiteConfigError([f"{p}: cannot read ({e})"]) from None
    return parse_site_config(text, str(p), p.parent)


def check_site_config(path: str | os.PathLike[str], files: bool = True) -> SiteConfig:
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
        if not (s.url.isdigit() or _URL.match(s.url) or "!" in s.url):
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
