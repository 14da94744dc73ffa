"""``RuntimeSettings``: the one configuration type of ``cezsar run``, section by section.

The site file (``site.yaml``) is this model written out; every command-line flag of ``cezsar run`` is an
override of one of its keys (edge/settings/options.py); each output takes its own section
(``MqttSink(settings.outputs.mqtt)``). A key's default, help text and flag are written here once, on
its field: ``opt(default, "help", flag="--name")``, or ``file_only="why"`` for a key with no flag. The
option tables of docs/edge.md and docs/integrations.md are generated from this model and a test checks
them (edge/settings/reference.py).

Relative paths in a site file are relative to its folder; paths from flags are relative to the
working directory (made absolute before they are merged). Secrets can stay out of the file:
``password_env`` / ``token_env`` / ``secret_env`` name an environment variable read when the output
starts (:func:`env_secret`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    ValidationInfo,
    field_validator,
)

from cezsar.errors import CezsarError
from cezsar.redact import SECRETS
from cezsar.video import is_url
from edge.settings.base import NAME_PATTERN, Seconds, Section, _resolve, _seconds, _unique, env_secret, opt
from edge.settings.outputs import (
    HistorySettings,
    HttpSettings,
    MediaSettings,
    MqttSettings,
    MqttTls,
    Outputs,
    WebhookSettings,
    ZmqSettings,
)
from edge.zones import Zone

# the one zone type (edge/zones.py): the site file's zones, --zone and the runtime's crop
ZoneSettings = Zone

__all__ = [
    "HistorySettings",
    "HttpSettings",
    "MediaSettings",
    "MqttSettings",
    "MqttTls",
    "Outputs",
    "RunSettings",
    "RuntimeSettings",
    "SamplingSettings",
    "Section",
    "SourceSettings",
    "WebhookSettings",
    "ZmqSettings",
    "ZoneSettings",
    "_seconds",
    "env_secret",
]


class SourceSettings(Section):
    """A stream: ``name`` (topics, events) and ``url`` as for ``--source`` (camera index, URL, GStreamer
    pipeline or video file; a relative file path is relative to the site file)."""

    name: str = opt(help="Stream name: topics, events, MQTT entities.", pattern=NAME_PATTERN)
    url: str = opt(help="Camera index, rtsp/http URL, GStreamer pipeline or video file.", min_length=1)
    zones: list[ZoneSettings] = opt(help="Named regions that actions can require.", default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        if v.isdigit() or is_url(v) or "!" in v:
            return v
        return str(_resolve(Path(v), info))

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, v: list[ZoneSettings]) -> list[ZoneSettings]:
        _unique([z.name for z in v], "zone names must be unique in a source")
        return v

    @property
    def spec(self) -> str:
        """As a ``--source`` value: ``NAME=URL``."""
        return f"{self.name}={self.url}"


class SamplingSettings(Section):
    """How frames become windows."""

    fps: float | None = opt(
        None, "Sampling rate in frames/s (default: the model's, from its manifest).", flag="--fps", gt=0
    )
    hop: int = opt(2, "Sampled frames between two windows.", flag="--hop", ge=1, le=1000)
    realtime: bool = opt(
        True,
        "Files: play at their own pace, dropping like a camera; off: process every sampled frame.",
        flag="--realtime",
    )
    cache: bool = opt(True, "Per-frame feature cache (off: re-encode whole windows).", flag="--cache")
    batch_wait: Seconds = opt(
        0.0,
        "Seconds to wait for the other streams' frames to batch them (adds that much latency).",
        flag="--batch-wait",
        ge=0,
        le=1,
    )
    max_gap: Seconds = opt(
        10.0, "A stream whose frames stop for longer starts its window again.", flag="--max-gap", gt=0
    )
    update_interval: Seconds = opt(
        1.0,
        "Seconds of capture time between two `update` messages of an open event.",
        flag="--update-interval",
        gt=0,
    )


class RunSettings(Section):
    """How long the runtime runs and what it reports."""

    duration: Seconds | None = opt(
        None, "Stop after this long (default: until every source ends).", flag="--duration", gt=0
    )
    status_interval: Seconds = opt(2.0, "Seconds between status messages.", flag="--status-interval", gt=0)
    stats_interval: Seconds = opt(5.0, "Seconds between stats log lines.", flag="--stats-interval", gt=0)
    shutdown_timeout: Seconds = opt(
        0.5,
        "Seconds a stop waits for each reader thread (a camera stuck in a read is left behind).",
        flag="--shutdown-timeout",
        gt=0,
        le=60,
    )
    instance: str | None = opt(
        None,
        "Publisher instance id in every message (default: a new random one per start).",
        flag="--instance",
        pattern=NAME_PATTERN,
    )


# ---------------------------------------------------------------------------------------------- outputs


class RuntimeSettings(Section):
    version: Literal[1] = opt(1, "Site file format version.", file_only="the format's own version")
    deploy: Path | None = opt(None, "Deploy folder (from `cezsar export`).", flag="--deploy")
    actions: Path | None = opt(None, "Actions YAML file (watched: edits apply live).", flag="--actions")
    backend: str = opt("auto", "Inference backend: auto, or one the registry lists.", flag="--backend")
    precision: str = opt("auto", "auto (the best the backend runs), fp32, fp16 or int8.", flag="--precision")
    fallback_backend: str | None = opt(
        None, "Backend to use when --backend cannot load (e.g. onnxruntime-cpu).", flag="--fallback-backend"
    )
    threads: int | None = opt(None, "Inference threads for onnxruntime (default: its own).", flag="--threads", ge=1)
    sources: list[SourceSettings] = opt(
        help="The streams: name, url and zones (rect or polygon).", flag="--source", default_factory=list
    )
    runtime_files: Path | None = opt(
        None,
        "Folder whose video files the control socket and HTTP may add as sources while running.",
        flag="--runtime-files",
    )
    sampling: SamplingSettings = opt(help="How frames become windows.", default_factory=SamplingSettings)
    run: RunSettings = opt(help="How long to run, what to report.", default_factory=RunSettings)
    outputs: Outputs = opt(help="Where results go.", default_factory=Outputs)
    history: HistorySettings | None = opt(None, "Keep every event and window (docs/history.md).")

    @field_validator("deploy", "actions", "runtime_files")
    @classmethod
    def _paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)

    @field_validator("backend", "fallback_backend")
    @classmethod
    def _backend(cls, v: str | None) -> str | None:
        from cezsar.backends.registry import names  # the backends' own declarations

        if v is not None and v not in names():
            raise ValueError(f"unknown backend {v!r}; choose one of {', '.join(names())}")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        from cezsar.backends.registry import PRECISION_CHOICES

        if v not in PRECISION_CHOICES:
            raise ValueError(f"unknown precision {v!r}; choose one of {', '.join(PRECISION_CHOICES)}")
        return v

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: list[SourceSettings]) -> list[SourceSettings]:
        _unique([s.name for s in v], "source names must be unique")
        return v

    def register_secrets(self) -> None:
        """Tell cezsar.redact every secret these settings hold (camera URLs' credentials, passwords,
        tokens), so that no log line, status or answer shows them."""
        for src in self.sources:
            SECRETS.add_url(src.url)
        out = self.outputs
        if out.mqtt is not None:
            SECRETS.add(out.mqtt.secret())
        if out.http is not None:
            SECRETS.add(out.http.secret())
        if out.webhook is not None:
            SECRETS.add_url(out.webhook.url)
            SECRETS.add(out.webhook.bearer(), out.webhook.hmac_key())

    def require(self) -> RuntimeSettings:
        """What a run needs beyond a valid file: a deploy folder, an actions file, a source."""
        if self.deploy is None:
            raise CezsarError("give --deploy (or deploy: in --config)")
        if self.actions is None:
            raise CezsarError("give --actions (or actions: in --config)")
        if not self.sources:
            raise CezsarError("give at least one --source (or sources: in --config)")
        return self

    def source_specs(self) -> list[str]:
        """The sources as ``--source`` values (``NAME=URL``)."""
        return [s.spec for s in self.sources]
