"""A site with a camera whose URL carries a password and that never connects, beside a camera that
works (a video file), run as ``cezsar run`` with every output on. The password appears in none of:
the log, ZeroMQ, HTTP answers (health, sources, status, metrics, the console's page and its data
feed), the events log, the media files; the dead camera is ``down`` within 10 s on /health/streams,
in the status and in a real Prometheus scrape (cezsar_stream_up 0, a series from the start), whose
exposition promtool accepts. (MQTT and Home Assistant: tests/test_mqtt*.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.collect import Collector
from tests.helpers.net import free_port, wait_until
from tests.helpers.procs import ALWAYS, ROOT
from tests.helpers.prometheus import Prometheus, promtool_check
from tests.helpers.video import write_video

pytest.importorskip("aiohttp", reason="aiohttp not installed (pip install 'cezsar[http]')")

SECRET = "Pa55-pl4nted-7c1"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except OSError:  # not listening (yet)
        return 0, b""


def _sse(url: str, seconds: float) -> bytes:
    got = bytearray()
    try:
        with urllib.request.urlopen(url, timeout=seconds) as r:
            t0 = time.time()
            while time.time() - t0 < seconds:
                chunk = r.read1(65536)
                if not chunk:
                    break
                got += chunk
    except OSError:  # the read timed out: what came is what there is
        pass
    return bytes(got)


def test_a_planted_camera_password_is_nowhere_and_the_dead_camera_is_down(tmp_path: Path, deploy: Path) -> None:
    video = write_video(tmp_path / "v.avi", 480)  # 60 s
    actions = tmp_path / "actions.yaml"
    doc = {"defaults": ALWAYS, "actions": [{"name": "moving", "descriptions": ["a shape"]}]}
    actions.write_text(yaml.safe_dump(doc))
    http, pub = free_port(), f"tcp://127.0.0.1:{free_port()}"
    dead = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/live?password={SECRET}&channel=1"
    media, events = tmp_path / "media", tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "cezsar", "-v", "run", "--deploy", str(deploy), "--actions", str(actions),
           "--source", f"v={video}", "--source", f"door={dead}", "--pub", pub, "--control", "none",
           "--http", f"127.0.0.1:{http}", "--media", str(media), "--media-pre-roll", "0.5",
           "--events-log", str(events), "--status-interval", "0.5"]  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("w") as out:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{http}"
    zmq = Collector(pub)
    prom: Prometheus | None = None
    seen: list[bytes] = []
    try:
        wait_until(lambda: _get(base + "/healthz")[0] == 200, 60, "the runtime's HTTP server")
        started = time.time()
        prom = Prometheus(tmp_path / "prom", f"127.0.0.1:{http}", interval=1.0)

        def door_down() -> bool:
            code, body = _get(base + "/health/streams")
            seen.append(body)
            return code == 200 and json.loads(body)["streams"]["door"]["state"] == "down"

        wait_until(door_down, 10, "the dead camera to be down on /health/streams")
        assert time.time() - started < 10
        strict = _get(base + "/health/streams?strict=1")
        assert strict[0] == 503 and json.loads(strict[1])["streams"]["v"]["state"] == "live"
        up = {}

        def scraped() -> bool:
            up.update({r["metric"]["stream"]: r["value"][1] for r in prom.query("cezsar_stream_up")})  # type: ignore[union-attr]
            return up.get("door") == "0" and up.get("v") == "1"

        wait_until(scraped, 15, "Prometheus to scrape cezsar_stream_up")
        assert prom.query('cezsar_frames_in_total{stream="door"}')[0]["value"][1] == "0"  # a series, at 0
        metrics = _get(base + "/metrics")[1].decode()
        check = promtool_check(metrics)
        assert check.returncode == 0, check.stdout + check.stderr
        paths = ("/readyz", "/sources", "/health/streams", "/console/", "/console/api/actions", "/console/console.js")
        for path in paths:
            seen.append(_get(base + path)[1])
        seen.append(metrics.encode())
        feed: list[bytes] = []
        t = threading.Thread(target=lambda: feed.append(_sse(base + "/console/api/stream", 3.0)), daemon=True)
        t.start()
        wait_until(lambda: any(e["phase"] == "start" for e in zmq.of("event")), 40, "an event to start")
        t.join(10)
        seen += feed
    finally:
        if prom is not None:
            prom.close()
        proc.send_signal(signal.SIGINT)  # the open event ends, its snapshot and clip are written
        proc.wait(30)
        time.sleep(0.5)
        zmq.close()
    assert any(e["phase"] == "end" for e in zmq.of("event")) and list(media.rglob("*.mp4"))
    assert b"stream" in b"".join(seen) and any(b"door" in s for s in seen)  # the answers were real
    texts = {"log": log.read_bytes(), "events log": events.read_bytes()}
    texts["zeromq"] = json.dumps([m for _, _, m in zmq.msgs]).encode()
    texts["http"] = b"\n".join(seen)
    texts["media"] = b"\n".join(p.name.encode() + p.read_bytes() for p in media.rglob("*") if p.is_file())
    assert b"rtsp://***@127.0.0.1" in texts["log"]  # the source is named, without its credentials
    statuses = [m for _, _, m in zmq.msgs if m.get("type") == "status"]
    assert any(st["streams"]["door"]["health"]["state"] == "down" for st in statuses)
    for where, data in texts.items():
        assert SECRET.encode() not in data, f"the camera password leaked into {where}"
