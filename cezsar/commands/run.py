"""`cezsar run`: recognise actions on live streams (edge/runtime), settings from flags over the site file."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import typer

from cezsar.errors import CezsarError
from edge.endpoints import DEFAULT_CONTROL, DEFAULT_PUB

log = logging.getLogger("cezsar.edge")


def _install_signals(stop: Any) -> None:
    """First Ctrl-C/SIGTERM: clean stop (open events ended, final status). Second: hard interrupt."""

    def handler(signum: int, frame: Any) -> None:
        stop(signal.Signals(signum).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_cmd(
    config: Path = typer.Option(
        None,
        "--config",
        help="Site config file (site.yaml: sources, zones, outputs, actions, backend); flags given override it.",
    ),
    deploy: Path = typer.Option(None, "--deploy", help="Deploy folder (from `cezsar export`); or deploy: in --config."),
    source: list[str] = typer.Option(
        [],
        "--source",
        "-s",
        help="NAME=SRC: camera index, rtsp/http URL, video file or GStreamer pipeline (e.g. door=rtsp://cam2/stream); "
        "without NAME= the stream is s0, s1, ... Repeat for several; replaces the sources of --config.",
    ),
    zone: list[str] = typer.Option(
        [],
        "--zone",
        help="STREAM:NAME=x0,y0,x1,y1: a named rectangle of a stream (0..1, x right, y down) that actions can "
        "require (zone: NAME); repeat; adds to / replaces the zones of --config.",
    ),
    actions: Path = typer.Option(
        None, "--actions", "-a", help="Actions YAML file (watched; edits apply live); or actions: in --config."
    ),
    pub: str = typer.Option(
        None, "--pub", help=f"ZeroMQ PUB endpoint for events, scores and status [default: {DEFAULT_PUB}]."
    ),
    control: str = typer.Option(
        None, "--control", help=f"ZeroMQ REP endpoint for actions; 'none' = off [default: {DEFAULT_CONTROL}]."
    ),
    backend: str = typer.Option(
        None, "--backend", help="auto|tensorrt|onnxruntime|torch (see docs/edge.md) [default: auto]."
    ),
    precision: str = typer.Option(
        None, "--precision", help="auto|fp32|fp16|int8 (auto: the best the chosen backend runs) [default: auto]."
    ),
    realtime: bool = typer.Option(
        True,
        "--realtime/--no-realtime",
        help="Files: play at their own pace, dropping like a camera (default), or process every sampled frame.",
    ),
    hop: int = typer.Option(2, "--hop", help="Sampled frames between two windows."),
    fps: float = typer.Option(
        None, "--fps", help="Sampling rate in frames/s [default: the model's, from the manifest]."
    ),
    events_log: Path = typer.Option(None, "--events-log", help="Append every event as one JSON line."),
    output: Path = typer.Option(None, "--output", help="Annotated video (out.mp4; several streams: out.<stream>.mp4)."),
    duration: float = typer.Option(0.0, "--duration", help="Stop after this many seconds (0: run until done)."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Per-frame feature cache (off: re-encode windows)."),
    scores: bool = typer.Option(True, "--scores/--no-scores", help="Publish per-window scores."),
    status_interval: float = typer.Option(2.0, "--status-interval", help="Seconds between status messages."),
    stats_interval: float = typer.Option(5.0, "--stats-interval", help="Seconds between stats log lines."),
    threads: int = typer.Option(0, "--threads", help="Inference threads for onnxruntime (0: its default)."),
    batch_wait: float = typer.Option(
        0.0,
        "--batch-wait",
        help="Seconds (e.g. 0.02) to wait for the other streams' frames to batch them; adds up to that latency.",
    ),
    hwm: int = typer.Option(
        1000, "--hwm", help="Messages queued per subscriber before it misses some (bounded memory)."
    ),
    fallback_backend: str = typer.Option(
        None, "--fallback-backend", help="Backend to use when --backend cannot load (e.g. onnxruntime-cpu)."
    ),
    curve_secret: Path = typer.Option(
        None,
        "--curve-secret",
        help="This runtime's CURVE secret key file (from `cezsar keys`): encrypt + authenticate.",
    ),
    curve_clients: Path = typer.Option(
        None, "--curve-clients", help="Folder of the allowed clients' public key files (*.key)."
    ),
    runtime_files: Path = typer.Option(
        None,
        "--runtime-files",
        help="Folder whose video files the control socket / HTTP may add as sources while running "
        "(without it only URLs and cameras can be added).",
    ),
    mqtt: str = typer.Option(
        None,
        "--mqtt",
        help="Also publish to this MQTT broker: HOST[:PORT] (port 1883 by default).",
    ),
    mqtt_prefix: str = typer.Option(
        None, "--mqtt-prefix", help="MQTT topic prefix: PREFIX/<stream>/<action> ... [default: cezsar]."
    ),
    mqtt_username: str = typer.Option(None, "--mqtt-username", help="MQTT user name."),
    mqtt_password: str = typer.Option(
        None,
        "--mqtt-password",
        envvar="CEZSAR_MQTT_PASSWORD",
        show_envvar=True,
        help="MQTT password; prefer the environment variable (a flag shows in the process list).",
    ),
    mqtt_tls_ca: Path = typer.Option(None, "--mqtt-tls-ca", help="CA file: MQTT over TLS."),
    mqtt_tls_cert: Path = typer.Option(None, "--mqtt-tls-cert", help="Client certificate file for MQTT TLS."),
    mqtt_tls_key: Path = typer.Option(None, "--mqtt-tls-key", help="Client key file for MQTT TLS."),
    mqtt_tls_insecure: bool = typer.Option(
        False, "--mqtt-tls-insecure", help="TLS without checking the broker's certificate and host name (tests only)."
    ),
    mqtt_discovery: bool = typer.Option(
        None,
        "--mqtt-discovery/--no-mqtt-discovery",
        help="Home Assistant MQTT discovery (binary_sensor + score per stream x action) [default: on].",
    ),
    http: str = typer.Option(
        None,
        "--http",
        help="Serve the web console (/console/) and /healthz /readyz /metrics (/media) on [HOST:]PORT "
        "(default host 127.0.0.1).",
    ),
    http_token: str = typer.Option(
        None,
        "--http-token",
        envvar="CEZSAR_HTTP_TOKEN",
        show_envvar=True,
        help="Bearer token for every HTTP path but /healthz; required for a non-loopback --http.",
    ),
    media: Path = typer.Option(None, "--media", help="Folder for a JPEG snapshot and an MP4 clip per event."),
    pre_roll: float = typer.Option(
        None, "--pre-roll", help="Seconds of video before an event's start in its clip [default: 3]."
    ),
    media_max_age: float = typer.Option(
        None, "--media-max-age", help="Seconds a snapshot/clip is kept (retention) [default: 604800, 7 days]."
    ),
    media_max_mb: float = typer.Option(
        None, "--media-max-mb", help="Most megabytes the media folder may hold; oldest files go first [default: 2048]."
    ),
    console: bool = typer.Option(
        True, "--console/--no-console", help="Serve the web console (/console/) when --http is on."
    ),
) -> None:
    """Recognise actions described in words on live video streams; publish events over ZeroMQ (and MQTT)."""
    from edge.runtime import MediaOptions, MqttOptions, Runtime, RuntimeConfig, parse_host_port
    from edge.sinks.mqtt import MqttTls
    from edge.siteconfig import load_site_config
    from edge.sources import quiet_opencv

    if not log.isEnabledFor(logging.DEBUG):
        quiet_opencv()
    site = load_site_config(config) if config else None
    out = site.outputs if site else None
    deploy_dir = deploy or (site.deploy if site else None)
    actions_file = actions or (site.actions if site else None)
    sources = list(source) or (site.source_specs() if site else [])
    if deploy_dir is None:
        raise CezsarError("give --deploy (or deploy: in --config)")
    if actions_file is None:
        raise CezsarError("give --actions (or actions: in --config)")
    if not sources:
        raise CezsarError("give at least one --source (or sources: in --config)")
    if control is None:
        control = (out.zmq.control or "none") if out else DEFAULT_CONTROL
    cfg = RuntimeConfig(
        deploy=deploy_dir,
        sources=sources,
        actions=actions_file,
        pub=pub or (out.zmq.pub if out else DEFAULT_PUB),
        control=None if control.lower() in ("", "none", "off") else control,
        backend=backend or (site.backend if site else "auto"),
        precision=precision or (site.precision if site else "auto"),
        realtime=realtime,
        hop=hop,
        fps=fps or None,
        events_log=events_log,
        output=output,
        duration=duration or None,
        cache=cache,
        scores=scores,
        status_interval=status_interval,
        stats_interval=stats_interval,
        threads=threads or None,
        batch_wait=max(0.0, batch_wait),
        hwm=max(1, hwm),
        fallback_backend=fallback_backend or None,
        curve_secret=curve_secret,
        curve_clients=curve_clients,
        runtime_files=runtime_files,
        console=console,
    )
    from cezsar.video import parse_sources
    from edge.zones import Zone, parse_zone_flag

    names = {sp.name for sp in parse_sources(sources)}
    zones: dict[str, dict[str, Zone]] = {}
    for src in site.sources if site else []:
        if src.name in names:  # --source may have replaced the file's sources
            for sz in src.zones:
                zones.setdefault(src.name, {})[sz.name] = Zone(sz.name, tuple(sz.points()))
    for text in zone:  # an unknown stream here is an error (Runtime)
        name, fz = parse_zone_flag(text)
        zones.setdefault(name, {})[fz.name] = fz
    cfg.zones = zones
    mq = out.mqtt if out else None
    if mqtt or mq is not None:
        host, port = parse_host_port(mqtt, None, 1883, "--mqtt") if mqtt else (mq.host, mq.port)  # type: ignore[union-attr]
        tls = None
        if mqtt_tls_ca or mqtt_tls_cert or mqtt_tls_insecure:
            tls = MqttTls(ca=mqtt_tls_ca, cert=mqtt_tls_cert, key=mqtt_tls_key, insecure=mqtt_tls_insecure)
        elif mq is not None and mq.tls is not None:
            tls = MqttTls(ca=mq.tls.ca, cert=mq.tls.cert, key=mq.tls.key, insecure=mq.tls.insecure)
        cfg.mqtt = MqttOptions(
            host,
            port,
            prefix=mqtt_prefix or (mq.prefix if mq else "cezsar"),
            username=mqtt_username or (mq.username if mq else None),
            password=mqtt_password or (mq.secret() if mq else None),
            tls=tls,
            discovery=mqtt_discovery if mqtt_discovery is not None else (mq.discovery if mq else True),
            discovery_prefix=mq.discovery_prefix if mq else "homeassistant",
            node_id=mq.node_id if mq else None,
            client_id=mq.client_id if mq else None,
            scores=mq.scores if mq else True,
            qos=mq.qos if mq else 1,
        )
    ho = out.http if out else None
    if http:
        cfg.http = parse_host_port(http, "127.0.0.1", None, "--http")
    elif ho is not None:
        cfg.http = (ho.bind, ho.port)
    if cfg.http is not None:
        cfg.http_token = http_token or (ho.secret() if ho else None) or None
    mo = out.media if out else None
    if media or mo is not None:
        cfg.media = MediaOptions(
            media or mo.dir,  # type: ignore[union-attr]
            pre_roll=pre_roll if pre_roll is not None else (mo.pre_roll if mo else 3.0),
            max_clip=mo.max_clip if mo else 120.0,
            max_age=media_max_age if media_max_age is not None else (mo.max_age if mo else 7 * 86400.0),
            max_bytes=int(media_max_mb * 2**20) if media_max_mb is not None else (int(mo.max_bytes) if mo else 2 << 30),
        )
    rt = Runtime(cfg)
    for line in rt.summary():
        log.info("%s", line)
    _install_signals(rt.stop)
    code = rt.run()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
