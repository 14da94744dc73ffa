"""The outputs' settings sections (``outputs.*`` of the site file): each sink takes its own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    ByteSize,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.endpoints import DEFAULT_CONTROL, DEFAULT_PUB
from edge.settings.base import (
    _LEVEL,
    _LOOPBACK,
    ENV_ONLY,
    NAME_PATTERN,
    Seconds,
    Section,
    _one_of,
    _resolve,
    env_secret,
    opt,
)


def _check_endpoint(v: str | None) -> str | None:
    if v is None or v.lower() in ("", "none", "off"):
        return None
    if not re.match(r"^(tcp|ipc|inproc)://\S+$", v):
        raise ValueError(f"expected a ZeroMQ endpoint such as tcp://127.0.0.1:5556 (got {v!r})")
    return v


class ZmqSettings(Section):
    pub: str = opt(DEFAULT_PUB, "ZeroMQ PUB endpoint: events, scores, status.", flag="--pub")
    control: str | None = opt(
        DEFAULT_CONTROL, "ZeroMQ REP endpoint for actions and sources; none: off.", flag="--control"
    )
    hwm: int = opt(1000, "Messages queued per subscriber before it misses some (bounded memory).", flag="--hwm", ge=1)
    curve_secret: Path | None = opt(
        None,
        "This runtime's CURVE secret key file (`cezsar keys`): encrypt and authenticate both sockets.",
        flag="--curve-secret",
    )
    curve_clients: Path | None = opt(
        None, "Folder of the allowed clients' CURVE public key files (*.key).", flag="--curve-clients"
    )

    @field_validator("pub", "control")
    @classmethod
    def _endpoint(cls, v: str | None, info: ValidationInfo) -> str | None:
        checked = _check_endpoint(v)
        if checked is None and info.field_name == "pub":
            raise ValueError("the PUB socket cannot be off")
        return checked

    @field_validator("curve_secret", "curve_clients")
    @classmethod
    def _path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)

    @model_validator(mode="after")
    def _curve_pair(self) -> ZmqSettings:
        if (self.curve_secret is None) != (self.curve_clients is None):
            raise ValueError("CURVE needs both curve_secret (--curve-secret) and curve_clients (--curve-clients)")
        return self


class MqttTls(Section):
    ca: Path | None = opt(None, "CA file to verify the broker (default: the system's).", flag="--mqtt-tls-ca")
    cert: Path | None = opt(None, "Client certificate file.", flag="--mqtt-tls-cert")
    key: Path | None = opt(None, "Client key file (needs cert).", flag="--mqtt-tls-key")
    insecure: bool = opt(
        False, "TLS without checking the broker's certificate and host name (tests only).", flag="--mqtt-tls-insecure"
    )

    @field_validator("ca", "cert", "key")
    @classmethod
    def _path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTls:
        if self.key is not None and self.cert is None:
            raise ValueError("key: a client key needs its certificate (cert)")
        return self


class MqttSettings(Section):
    host: str = opt(help="Broker host (--mqtt HOST[:PORT]).", flag="--mqtt", min_length=1)
    port: int = opt(1883, "Broker port (--mqtt HOST:PORT).", flag="--mqtt", ge=1, le=65535)
    prefix: str = opt("cezsar", "Topic prefix: PREFIX/<stream>/<action> ...", flag="--mqtt-prefix", pattern=_LEVEL)
    username: str | None = opt(None, "User name.", flag="--mqtt-username")
    password: str | None = opt(
        None,
        "Password; prefer its environment variable or password_env (a flag shows in the process list).",
        flag="--mqtt-password",
        env="CEZSAR_MQTT_PASSWORD",
    )
    password_env: str | None = opt(None, "Environment variable that holds the password.", file_only=ENV_ONLY)
    client_id: str | None = opt(None, "MQTT client id (default: random per start).", flag="--mqtt-client-id")
    node_id: str | None = opt(
        None,
        "Home Assistant node id: in every discovery topic and unique_id (default: the prefix as one level, "
        "cezsar; never the host name, so a rebuilt container keeps its entities).",
        flag="--mqtt-node-id",
        pattern=NAME_PATTERN,
    )
    discovery: bool = opt(
        True,
        "Home Assistant MQTT discovery: a device per camera (connectivity, detection switch; per action an "
        "ON/OFF sensor, a score and a snapshot) and one for the runtime (state, action switches).",
        flag="--mqtt-discovery",
    )
    discovery_prefix: str = opt(
        "homeassistant", "Home Assistant's discovery prefix.", flag="--mqtt-discovery-prefix", pattern=_LEVEL
    )
    scores: bool = opt(
        True,
        "Publish scores on MQTT: every scores message, and each action's score at most every score_interval "
        "(off: events, states and status only).",
        flag="--mqtt-scores",
    )
    score_interval: Seconds = opt(
        1.0,
        "Least time between two values on one action's score topic (a Home Assistant score sensor).",
        flag="--mqtt-score-interval",
        ge=0.1,
        le=3600,
    )
    snapshots: bool = opt(
        True,
        "Publish each event's snapshot (with outputs.media) retained on PREFIX/<stream>/<action>/snapshot.",
        flag="--mqtt-snapshots",
    )
    snapshot_max_bytes: ByteSize = opt(
        ByteSize(512 << 10),
        "Largest snapshot published (256KB, 1MiB); a bigger one is scaled down until it fits.",
        flag="--mqtt-snapshot-max-bytes",
        ge=4096,
        le=64 << 20,
    )
    commands: bool = opt(
        True,
        "Accept ON/OFF on PREFIX/<stream>/enabled/set and PREFIX/actions/<action>/enabled/set (switch a "
        "camera's detection or an action off and on; restrict these topics in the broker's ACL).",
        flag="--mqtt-commands",
    )
    qos: Literal[0, 1, 2] = opt(1, "MQTT quality of service of every message.", flag="--mqtt-qos")
    tls: MqttTls | None = opt(None, "TLS to the broker (any --mqtt-tls-* flag turns it on).")

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        _one_of(self, "password")
        return self

    def secret(self) -> str | None:
        """The password (from ``password_env`` when set)."""
        return env_secret(self.password, self.password_env, "outputs.mqtt.password_env")


class HttpSettings(Section):
    bind: str = opt(
        "127.0.0.1", "Address to listen on (--http HOST:PORT); beyond loopback needs a token.", flag="--http"
    )
    port: int = opt(8080, "Port (--http [HOST:]PORT; 0: any free port).", flag="--http", ge=0, le=65535)
    token: str | None = opt(
        None,
        "Bearer token for every path but /healthz; prefer its environment variable or token_env.",
        flag="--http-token",
        env="CEZSAR_HTTP_TOKEN",
        min_length=8,
    )
    token_env: str | None = opt(None, "Environment variable that holds the token.", file_only=ENV_ONLY)
    console: bool = opt(True, "Serve the web console (/console/) on the HTTP server.", flag="--console")
    public_url: str | None = opt(
        None,
        "The address users reach this server at (https://cams.example:8443): media URLs, Home Assistant's "
        "configuration_url, the one other origin allowed to write.",
        flag="--public-url",
        pattern=r"^https?://[^/\s?#]+/?$",
    )
    allowed_hosts: list[str] = opt(
        help="Host names this server answers for besides IP literals, localhost, this machine's name and "
        "the public URL's host (against DNS rebinding).",
        file_only="a list, set once per site",
        default_factory=list,
    )
    max_connections: int | None = opt(
        None,
        "Open HTTP connections at most (default: a quarter of the file limit, 16-1024).",
        flag="--http-max-connections",
        ge=4,
        le=65536,
    )
    header_timeout: Seconds = opt(
        10.0, "Seconds a connection has to send a complete request head.", flag="--http-header-timeout", gt=0, le=300
    )
    idle_timeout: Seconds = opt(
        15.0, "Seconds an idle keep-alive connection stays open.", flag="--http-idle-timeout", gt=0, le=3600
    )

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> HttpSettings:
        _one_of(self, "token")
        if not _LOOPBACK.match(self.bind) and self.token is None and self.token_env is None:
            raise ValueError(f"bind {self.bind}: listening beyond this machine needs a token (token or token_env)")
        return self

    def secret(self) -> str | None:
        """The bearer token (from ``token_env`` when set)."""
        return env_secret(self.token, self.token_env, "outputs.http.token_env")


class MediaSettings(Section):
    dir: Path = opt(help="Folder for a JPEG snapshot and an MP4 clip per event.", flag="--media")
    pre_roll: Seconds = opt(
        3.0, "Seconds of video before an event's start in its clip.", flag="--media-pre-roll", ge=0, le=60
    )
    max_clip: Seconds = opt(
        120.0, "Longest clip; a longer event's clip is cut there.", flag="--media-max-clip", gt=0, le=3600
    )
    max_bytes: ByteSize = opt(
        ByteSize(2 << 30),
        "Most the folder may hold (500MB, 2GiB); oldest files go first.",
        flag="--media-max-bytes",
        gt=0,
    )
    max_age: Seconds = opt(7 * 86400.0, "How long a snapshot or clip is kept (7d).", flag="--media-max-age", gt=0)

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: Path, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)


class WebhookSettings(Section):
    url: str = opt(help="POST every event as JSON to this http(s) URL.", flag="--webhook", pattern=r"^https?://\S+$")
    token: str | None = opt(
        None,
        "Bearer token sent with each POST; prefer its environment variable or token_env.",
        flag="--webhook-token",
        env="CEZSAR_WEBHOOK_TOKEN",
    )
    token_env: str | None = opt(None, "Environment variable that holds the token.", file_only=ENV_ONLY)
    secret: str | None = opt(
        None,
        "HMAC-SHA256 key: each POST carries X-Cezsar-Signature: sha256=<hex of the body>.",
        flag="--webhook-secret",
        env="CEZSAR_WEBHOOK_SECRET",
        min_length=8,
    )
    secret_env: str | None = opt(None, "Environment variable that holds the HMAC key.", file_only=ENV_ONLY)
    topics: list[Literal["event", "media", "status"]] = opt(
        ["event"], "Message types to POST.", file_only="a list; rarely changed", min_length=1
    )
    timeout: Seconds = opt(5.0, "Seconds one POST may take.", flag="--webhook-timeout", gt=0, le=120)
    retries: int = opt(
        5, "Attempts after the first one, with exponential backoff.", flag="--webhook-retries", ge=0, le=100
    )
    max_backoff: Seconds = opt(30.0, "Longest wait between two attempts.", flag="--webhook-max-backoff", gt=0)
    queue: int = opt(
        1000, "Messages waiting to be sent; beyond it new ones are dropped (counted).", flag="--webhook-queue", ge=1
    )

    @model_validator(mode="after")
    def _one_each(self) -> WebhookSettings:
        _one_of(self, "token", "secret")
        return self

    def bearer(self) -> str | None:
        return env_secret(self.token, self.token_env, "outputs.webhook.token_env")

    def hmac_key(self) -> str | None:
        return env_secret(self.secret, self.secret_env, "outputs.webhook.secret_env")


class Outputs(Section):
    scores: bool = opt(True, "Publish per-window scores (ZeroMQ, MQTT, console).", flag="--scores")
    zmq: ZmqSettings = opt(help="The ZeroMQ sockets.", default_factory=ZmqSettings)
    events_log: Path | None = opt(None, "Append every event as one JSON line to this file.", flag="--events-log")
    video: Path | None = opt(None, "Annotated video (out.mp4; several streams: out.<stream>.mp4).", flag="--output")
    mqtt: MqttSettings | None = opt(None, "An MQTT broker (Home Assistant discovery).")
    http: HttpSettings | None = opt(None, "The HTTP server: console, health, metrics, media.")
    media: MediaSettings | None = opt(None, "A snapshot and a clip per event.")
    webhook: WebhookSettings | None = opt(None, "An HTTP endpoint that receives every event.")

    @field_validator("events_log", "video")
    @classmethod
    def _path(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(v, info)


# ---------------------------------------------------------------------------------------------- history


class HistorySettings(Section):
    """The history (docs/history.md): every event and every window's embedding in one SQLite file or a
    PostgreSQL database, for review, search by a sentence and backtests."""

    url: str = opt(
        help="SQLite file (a folder: history.sqlite in it; `auto`: beside the media folder) or "
        "postgresql://user@host/db (several boxes, one history).",
        flag="--history",
        min_length=1,
    )
    password_env: str | None = opt(None, "Environment variable that holds the PostgreSQL password.", file_only=ENV_ONLY)
    embedding: Literal["int8", "fp16"] = opt(
        "int8",
        "How window embeddings are kept: int8 (~0.6 kB a window) or fp16 (~1.1 kB).",
        flag="--history-embedding",
    )
    queue: int = opt(
        20000,
        "Windows, events and thumbnails waiting for the store; beyond it new ones are dropped (counted).",
        flag="--history-queue",
        ge=10,
    )
    thumbnails: Seconds = opt(
        5.0, "Seconds between two kept thumbnails of a stream (0: none).", flag="--history-thumbnails", ge=0
    )
    thumbnail_width: int = opt(160, "Thumbnail width in pixels.", file_only="rarely changed", ge=16, le=1280)
    windows_max_age: Seconds = opt(
        30 * 86400.0, "How long windows are kept (30d).", flag="--history-windows-max-age", gt=0
    )
    windows_max_bytes: ByteSize = opt(
        ByteSize(20 << 30),
        "Most the windows may take (20GiB); oldest go first.",
        flag="--history-windows-max-bytes",
        gt=0,
    )
    thumbnails_max_age: Seconds = opt(
        7 * 86400.0, "How long thumbnails are kept (7d).", flag="--history-thumbnails-max-age", gt=0
    )
    thumbnails_max_bytes: ByteSize = opt(
        ByteSize(2 << 30), "Most the thumbnails may take (2GiB).", flag="--history-thumbnails-max-bytes", gt=0
    )
    events_max_age: Seconds = opt(
        365 * 86400.0, "How long events are kept (365d).", flag="--history-events-max-age", gt=0
    )
    events_max_bytes: ByteSize = opt(
        ByteSize(1 << 30), "Most the events may take (1GiB).", flag="--history-events-max-bytes", gt=0
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        if v == "auto" or "://" in v:
            return v
        return str(_resolve(Path(v), info))

    def location(self, media: Path | None) -> str:
        """Where the history is: ``auto`` -> history.sqlite beside the media folder (else here)."""
        if self.url != "auto":
            return self.url
        return str((media.parent if media is not None else Path.cwd()) / "history.sqlite")

    def secret(self) -> str | None:
        """The PostgreSQL password from ``password_env`` (None when not set)."""
        return env_secret(None, self.password_env, "history.password_env")


# ---------------------------------------------------------------------------------------------- the whole
