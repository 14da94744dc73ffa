"""The runtime's outputs wired together: ZeroMQ + MQTT (real mosquitto) + HTTP (real requests) +
media (real files), on real video files, and a broker killed and restarted mid-run."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml

from edge.client import Subscriber
from edge.runtime import Runtime
from edge.settings import settings_from
from tests.helpers.models import deploy_dir
from tests.helpers.mqtt import MOSQUITTO, NO_BROKER, Broker, Sub
from tests.helpers.net import wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason=NO_BROKER)

ACTIONS = {
    "background": ["a shape staying still"],
    "actions": [
        {"name": "left", "descriptions": "something moving left"},
        {"name": "right", "descriptions": "something moving right"},
    ],
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from cezsar.data.synthetic import render_stream

    d = tmp_path_factory.mktemp("outputs")
    a, b = d / "a.mp4", d / "b.mp4"
    render_stream(a, [("staying still", 1.5), ("moving left", 3.0), ("staying still", 1.5)], seed=3)
    render_stream(b, [("staying still", 1.5), ("moving right", 3.0), ("staying still", 1.5)], seed=5)
    return [a, b]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except OSError:  # the server is gone (after close)
        return 0, b""


def test_zmq_mqtt_http_and_media_at_once(tmp_path: Path, videos: list[Path], broker: Broker) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump(ACTIONS))
    cfg = settings_from(
        deploy=deploy_dir(),
        source=[f"a={videos[0]}", f"b={videos[1]}"],
        actions=actions,
        pub="tcp://127.0.0.1:*",
        control="none",
        realtime=True,  # 6 s at the files' pace: readiness and scrapes happen while frames flow
        status_interval=0.2,
        mqtt=f"127.0.0.1:{broker.port}",
        http="127.0.0.1:0",
        media=tmp_path / "media",
        media_pre_roll=1.0,
    )
    sub = Sub(broker.port, ["cezsar/#", "homeassistant/#"])
    rt = Runtime(cfg)
    mqtt = rt.outputs.sink("mqtt")
    assert rt.http is not None and [type(getattr(t, "__self__", t)).__name__ for t in rt.outputs.taps] == ["Console"]
    tapped: list[tuple[str, float]] = []
    rt.outputs.taps.append(lambda stream, t, bgr: tapped.append((stream, t)))
    console_hits: list[int] = []

    class Extra:  # one more router: its routes are added before start()
        def attach(self, app: Any) -> None:
            app.router.add_get("/extra-hook", self.hook)

        async def hook(self, request: Any) -> Any:
            from aiohttp import web

            console_hits.append(1)
            return web.Response(text="console")

    rt.http.add_router(Extra(), "/extra-hook")
    ok, reasons = rt.ready()
    assert not ok and reasons == ["runtime not started yet"]  # the process is ready once it runs
    rt.start()  # the HTTP server listens from here on (and the sources start; files wait for the loop)
    zsub = Subscriber(rt.publisher.endpoint, [""])
    for _ in range(100):  # slow joiner
        rt.publish_status()
        if zsub.recv(0.05) is not None:
            break
    wait_until(lambda: mqtt.connected, 10, "the MQTT sink to connect")
    base = rt.http.url
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/extra-hook") == (200, b"console") and console_hits == [1]
    zmq_msgs: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            m = zsub.recv(0.1)
            if m is not None:
                zmq_msgs.append((m.topic, m.data))

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready_codes: list[int] = []
    scraped: list[str] = []
    healths: list[dict[str, Any]] = []

    def probe() -> None:  # real HTTP requests while the runtime runs
        while not done.is_set():
            ready_codes.append(get(base + "/readyz")[0])
            code, body = get(base + "/health/streams")
            if code == 200:
                healths.append(json.loads(body))
            code, body = get(base + "/metrics")
            if code == 200:
                scraped.append(body.decode())
            time.sleep(0.05)

    p = threading.Thread(target=probe, daemon=True)
    p.start()
    try:
        assert rt.run() == 0
    finally:
        done.set()
        t.join(2)
        p.join(5)
        zsub.close()
    assert 200 in ready_codes  # ready once it runs
    live = [h for h in healths if h["live"] == 2]
    assert live and set(live[0]["streams"]) == {"a", "b"} and live[0]["streams"]["a"]["state"] == "live"

    # ZeroMQ: events with media on their end, then a media message once written
    events = [d for tp, d in zmq_msgs if d["type"] == "event"]
    ends = [e for e in events if e["phase"] == "end"]
    assert {e["stream"] for e in ends} == {"a", "b"}
    media_msgs = {d["event"]: d for tp, d in zmq_msgs if d["type"] == "media"}
    for e in ends:
        m = e["media"]
        assert m["snapshot"].startswith(base + "/media/") and m["clip"].endswith(".mp4")
        written = media_msgs[e["id"]]
        assert written["written"] is True and written["clip"] == m["clip"]
        rel = m["clip"][len(base + "/media/") :]
        clip = tmp_path / "media" / rel
        snap = tmp_path / "media" / m["snapshot"][len(base + "/media/") :]
        assert snap.stat().st_size > 0 and cv2.imread(str(snap)) is not None
        cap = cv2.VideoCapture(str(clip))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        assert n > 0

    # MQTT: the same events, ON/OFF states, discovery per stream x action
    wait_until(lambda: len(sub.on("cezsar/events")) >= len(events), 10, "MQTT events")
    mq = [json.loads(b) for b in sub.on("cezsar/events")]
    assert [(d["id"], d["phase"]) for d in mq] == [(e["id"], e["phase"]) for e in events]
    topics = {tp for tp, _, _ in sub.messages}
    for stream in ("a", "b"):
        for action in ("left", "right"):
            assert any(
                tp.startswith("homeassistant/binary_sensor/") and tp.endswith(f"/{stream}-{action}/config")
                for tp in topics
            ), (stream, action)
            assert f"cezsar/{stream}/{action}" in topics
    assert "cezsar/a/media" in topics or "cezsar/b/media" in topics
    sub.close()

    # Prometheus, as scraped over HTTP during the run: frames counted per stream (never more than the
    # sources decoded), windows observed; the final counts (the same registry) match the runtime exactly
    def parse(text: str) -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(text)}

    def per_stream(fams: dict[str, Any], name: str) -> dict[str, float]:
        return {s.labels["stream"]: s.value for s in fams[name].samples if s.name.endswith("_total")}

    assert scraped
    during = parse(scraped[-1])
    decoded = {s.name: s.stats.frames for s in rt.streams.sources}
    seen = per_stream(during, "cezsar_frames_in")
    assert seen and all(0 < seen[k] <= decoded[k] for k in seen)
    assert rt.metrics is not None
    final = parse(rt.metrics.render()[0].decode())
    assert per_stream(final, "cezsar_frames_in") == {k: float(v) for k, v in decoded.items()}
    encoded = per_stream(final, "cezsar_frames_encoded")
    assert sum(encoded.values()) == rt.recognizer.embedder.frames_encoded
    count = sum(s.value for s in final["cezsar_window_latency_seconds"].samples if s.name.endswith("_count"))
    assert count == rt.recognizer.embedder.windows_out
    started = sum(s.value for s in final["cezsar_events"].samples if s.name.endswith("_total"))
    assert started == len([e for e in events if e["phase"] == "start"])
    sinks = {(s.labels["sink"], s.labels["outcome"]): s.value for s in during["cezsar_sink_messages"].samples}
    assert sinks[("mqtt", "sent")] > 0 and sinks[("zmq", "sent")] > 0
    fam = during.get("cezsar_runtime") or during["cezsar_runtime_info"]
    info = fam.samples[0].labels
    assert info["backend"] and info["precision"]
    assert {s for s, _ in tapped} == {"a", "b"}


def test_broker_killed_and_restarted_mid_run(tmp_path: Path, broker: Broker) -> None:
    """The runtime never stops for the broker: ZeroMQ goes on while it is down, the MQTT sink counts
    what it could not send, and events after the restart arrive over MQTT."""
    from cezsar.data.synthetic import render_stream

    video = tmp_path / "long.mp4"
    plan = [("staying still", 1.0)] + [("moving left", 2.0), ("staying still", 2.0)] * 3
    render_stream(video, plan, seed=7)
    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump(ACTIONS))
    cfg = settings_from(
        deploy=deploy_dir(),
        source=[f"cam={video}"],
        actions=actions,
        pub="tcp://127.0.0.1:*",
        control="none",
        realtime=True,  # plays at the file's pace (13 s), so the outage falls mid-run
        status_interval=0.2,
        mqtt=f"127.0.0.1:{broker.port}",
    )
    rt = Runtime(cfg)
    mqtt = rt.outputs.sink("mqtt")
    assert mqtt is not None
    mqtt._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # reconnect quickly in a test
    zsub = Subscriber(rt.publisher.endpoint, ["event.", "status"])
    zmq_events: list[tuple[float, dict[str, Any]]] = []
    zmq_status: list[float] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            m = zsub.recv(0.1)
            if m is not None and m.type == "event":
                zmq_events.append((time.monotonic(), m.data))
            elif m is not None:
                zmq_status.append(time.monotonic())

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(rt.run()), daemon=True)
    wait_until(lambda: mqtt.connected, 10, "the MQTT sink to connect")
    runner.start()
    time.sleep(3.0)
    broker.kill()
    killed = time.monotonic()
    time.sleep(2.5)
    assert runner.is_alive()
    broker.start()
    restarted = time.monotonic()
    sub = Sub(broker.port, ["cezsar/events"])
    runner.join(60)
    done.set()
    t.join(2)
    zsub.close()
    assert result == [0] and rt.stop_reason == "finished"
    assert mqtt.unsent > 0  # what fell into the outage was counted, not queued without bound
    assert sum(killed + 0.5 < ts < restarted for ts in zmq_status) >= 5  # ZeroMQ went on during the outage
    after = [json.loads(b) for b in sub.on("cezsar/events")]
    zmq_after = [d for ts, d in zmq_events if ts > restarted + 1.0]
    assert zmq_after, "the video has events after the restart"
    got = {(d["id"], d["phase"]) for d in after}
    assert {(d["id"], d["phase"]) for d in zmq_after} <= got
    sub.close()


def test_host_port_parsing_and_http_beyond_loopback_needs_a_token(tmp_path: Path, videos: list[Path]) -> None:
    from cezsar.errors import CezsarError
    from edge.settings import parse_host_port

    assert parse_host_port("8080", "127.0.0.1", None, "--http") == ("127.0.0.1", 8080)
    assert parse_host_port("0.0.0.0:9000", "127.0.0.1", None, "--http") == ("0.0.0.0", 9000)
    assert parse_host_port("[::1]:9000", "127.0.0.1", None, "--http") == ("::1", 9000)
    assert parse_host_port("broker.lan", None, 1883, "--mqtt") == ("broker.lan", 1883)
    assert parse_host_port("broker.lan:8883", None, 1883, "--mqtt") == ("broker.lan", 8883)
    for bad in ("host:port", "h:70000", ""):
        with pytest.raises(CezsarError, match="expected"):
            parse_host_port(bad, None, None, "--http")
    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump(ACTIONS))
    with pytest.raises(CezsarError, match="needs a token") as e:
        Runtime(
            settings_from(
                deploy=deploy_dir(),
                source=[str(videos[0])],
                actions=actions,
                pub="tcp://127.0.0.1:*",
                control="none",
                http="0.0.0.0:0",
            )
        )
    assert "\n" not in str(e.value)


def test_cezsar_run_config_example_site(tmp_path: Path, videos: list[Path], broker: Broker) -> None:
    """``cezsar run --config`` with examples/site.yaml (its sources pointed at two real video files,
    its ports at free ones): ZeroMQ and MQTT at once, Home Assistant discovery per stream x action,
    /metrics counting frames over real HTTP, a snapshot and a clip on disk per event."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.helpers.mqtt import mosquitto_sub
    from tests.helpers.net import free_port

    repo = Path(__file__).resolve().parents[1]
    site = yaml.safe_load((repo / "examples" / "site.yaml").read_text())
    shutil.copy(repo / "examples" / "site-actions.yaml", tmp_path / "site-actions.yaml")
    (tmp_path / "videos").mkdir()
    for src, dst in zip(videos, ("entrance", "yard"), strict=True):
        shutil.copy(src, tmp_path / "videos" / f"{dst}.mp4")
    pub, control, http_port = free_port(), free_port(), free_port()
    site["deploy"] = str(deploy_dir())
    site["outputs"]["zmq"] = {"pub": f"tcp://127.0.0.1:{pub}", "control": f"tcp://127.0.0.1:{control}"}
    site["outputs"]["mqtt"]["port"] = broker.port
    site["outputs"]["http"]["port"] = http_port
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    env = {**os.environ, "CEZSAR_MQTT_PASSWORD": "secret", "PYTHONPATH": str(repo)}
    check = subprocess.run(
        [sys.executable, "-m", "cezsar", "config", "check", str(tmp_path / "site.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    sub = Sub(broker.port, ["cezsar/events"])
    zsub = Subscriber(f"tcp://127.0.0.1:{pub}", ["event.", "media."])
    proc = subprocess.Popen(
        [sys.executable, "-m", "cezsar", "run", "--config", str(tmp_path / "site.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    got: list[dict[str, Any]] = []
    frames_seen: dict[str, float] = {}
    try:
        from prometheus_client.parser import text_string_to_metric_families

        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            m = zsub.recv(0.1)
            if m is not None:
                got.append(m.data)
            code, body = get(f"http://127.0.0.1:{http_port}/metrics")
            if code == 200:
                for fam in text_string_to_metric_families(body.decode()):
                    if fam.name == "cezsar_frames_in":
                        for smp in fam.samples:
                            if smp.name.endswith("_total"):
                                frames_seen[smp.labels["stream"]] = smp.value
        while (m := zsub.recv(0.5)) is not None:
            got.append(m.data)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate(timeout=30)[0].decode()
        zsub.close()
    assert proc.returncode == 0, out[-3000:]
    assert frames_seen.get("entrance", 0) > 20 and frames_seen.get("yard", 0) > 20, (frames_seen, out[-2000:])
    events = [d for d in got if d["type"] == "event"]
    ends = [e for e in events if e["phase"] == "end"]
    assert ends, out[-3000:]
    media_dir = tmp_path / "media"
    for e in ends:
        rel = e["media"]["clip"].split("/media/", 1)[1]
        assert (media_dir / rel).stat().st_size > 0
        assert (media_dir / rel).with_suffix(".jpg").stat().st_size > 0
    wait_until(lambda: len(sub.on("cezsar/events")) >= len(events), 10, "the events over MQTT")
    assert {json.loads(b)["id"] for b in sub.on("cezsar/events")} >= {e["id"] for e in events}
    sub.close()
    configs = {t for t, _ in mosquitto_sub(broker.port, "homeassistant/#", wait=1.5) if _}
    actions = ["moving_left", "spinning"]
    for stream in ("entrance", "yard"):
        for a in actions:
            assert any(t.endswith(f"/{stream}-{a}/config") and "/binary_sensor/" in t for t in configs), (stream, a)
            assert any(t.endswith(f"/{stream}-{a}/config") and "/sensor/" in t for t in configs), (stream, a)
