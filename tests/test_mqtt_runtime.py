"""The MQTT side of a real runtime (real cameras: an RTSP URL nothing answers, an MJPEG-over-HTTP camera
on 127.0.0.1, a video file) against a real mosquitto: no camera password in any message, retained or
not; a camera that never connects is unavailable in Home Assistant within 10 s; commands switch a
camera and an action off and on; what an earlier run left is cleaned up at start."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install 'cezsar[mqtt]')")

from edge.runtime import Runtime  # noqa: E402
from edge.settings import settings_from  # noqa: E402
from tests.helpers.models import deploy_dir  # noqa: E402
from tests.helpers.mqtt import MOSQUITTO, NO_BROKER, Broker, Sub, retained  # noqa: E402
from tests.helpers.net import free_port, wait_until  # noqa: E402
from tests.helpers.procs import ALWAYS  # noqa: E402
from tests.helpers.video import MjpegCamera, write_video  # noqa: E402

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason=NO_BROKER)
HA_UNAVAILABLE_WITHIN = 10.0


def always_actions(path: Path, names: list[str]) -> Path:
    """Actions on from the first window that never end by themselves (tests/helpers/procs.py ALWAYS)."""
    doc = {
        "version": 1,
        "defaults": ALWAYS,
        "actions": [{"name": n, "descriptions": [f"a shape ({n})"]} for n in names],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def available(config: dict[str, Any], state: dict[str, bytes]) -> bool:
    """Home Assistant's rule for ``availability`` + ``availability_mode: all``."""
    return all(state.get(a["topic"]) == a["payload_available"].encode() for a in config["availability"])


class Running:
    """A Runtime in a thread; ``stop()`` ends it and returns its exit code."""

    def __init__(self, rt: Runtime) -> None:
        self.rt, self.result = rt, []
        self.thread = threading.Thread(target=lambda: self.result.append(rt.run()), daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def stop(self, timeout: float = 60) -> int | None:
        self.rt.stop()
        self.thread.join(timeout)
        return self.result[0] if self.result else None


def test_no_camera_password_on_mqtt_and_a_dead_camera_is_unavailable_within_10s(tmp_path: Path, broker: Broker) -> None:
    secret = "Pw-5ecr3t-" + "x7q"
    dead = f"rtsp://admin:{secret}@127.0.0.1:{free_port()}/live"  # nothing listens there
    video = write_video(tmp_path / "file.avi", 40)  # 5 s at 8 fps
    # an earlier run left a stream that no longer exists: its entity and state go at this start
    plant = Sub(broker.port, ["x/none"])
    for topic, body in (("homeassistant/binary_sensor/cezsar/gone-moving/config", '{"name": "gone"}'),
                        ("cezsar/gone/moving", "ON")):  # fmt: skip
        plant.client.publish(topic, body, qos=1, retain=True).wait_for_publish(5)
    plant.close()
    cfg = settings_from(
        deploy=deploy_dir(),
        source=[f"dead={dead}", f"file={video}"],
        actions=always_actions(tmp_path / "actions.yaml", ["moving"]),
        pub="tcp://127.0.0.1:*",
        control="none",
        realtime=True,
        status_interval=0.5,
        mqtt=f"127.0.0.1:{broker.port}",
        media=tmp_path / "media",
        http="127.0.0.1:0",
        public_url="https://cams.example:8443",
        duration=12.0,
    )
    sub = Sub(broker.port, ["#"])
    rt = Runtime(cfg)
    run = Running(rt)

    def dead_unavailable() -> bool:
        avail = [p for t, p, _ in sub.messages if t == "cezsar/dead/availability"]
        return avail[-1:] == [b"offline"] and any(t == "homeassistant/binary_sensor/cezsar/dead-moving/config"
                                                   for t, _, _ in sub.messages)  # fmt: skip

    wait_until(dead_unavailable, HA_UNAVAILABLE_WITHIN, "the dead camera's entities to be unavailable")
    took_unavailable = time.monotonic() - run.started

    def dead_down() -> bool:
        hs = [json.loads(p) for t, p, _ in sub.messages if t == "cezsar/dead/health" and p]
        return bool(hs) and hs[-1]["state"] == "down"

    wait_until(dead_down, HA_UNAVAILABLE_WITHIN, "the dead camera's health 'down'")
    took_down = time.monotonic() - run.started
    run.thread.join(60)  # until the duration: the file ends (its event with it), the dead camera keeps retrying
    assert run.result == [0] and rt.stop_reason == "duration"
    state = retained(broker.port, "#")  # every retained message, as any client (HA too) reads it after the run
    sub.close()

    everything = [(t, p) for t, p, _ in sub.messages] + list(state.items())
    assert len(everything) > 50
    for needle in {secret, quote(secret, safe=""), f"admin:{secret}"}:
        leaks = [t for t, p in everything if needle.encode() in p or needle in t]
        assert not leaks, f"{needle!r} published on {sorted(set(leaks))[:5]}"
    # the retained view after the run: the dead camera is down, its entities unavailable, the file's snapshot
    configs = {t: json.loads(p) for t, p in state.items() if t.startswith("homeassistant/")}
    dead_binary = configs["homeassistant/binary_sensor/cezsar/dead-moving/config"]
    assert "cezsar/dead/availability" in [a["topic"] for a in dead_binary["availability"]]
    assert dead_binary["device"]["configuration_url"] == "https://cams.example:8443/console/"  # not the bind address
    state_during = {**state, "cezsar/availability": b"online"}  # as it was while the runtime ran
    assert not available(dead_binary, state_during)
    assert json.loads(state["cezsar/dead/health"])["state"] == "stopped"  # the final word: the runtime stopped it
    assert b"online" in [p for t, p, _ in sub.messages if t == "cezsar/file/availability"]
    assert state["cezsar/file/moving/snapshot"][:2] == b"\xff\xd8"  # a JPEG, from the event that ended with the file
    attributes = json.loads(state["cezsar/file/moving/attributes"])
    assert attributes["phase"] == "end" and attributes["media"]["snapshot"].startswith(
        "https://cams.example:8443/media/"
    )
    status = json.loads(state["cezsar/status"])
    assert status["final"] and status["streams"]["dead"]["reconnects"] >= 3
    assert "homeassistant/binary_sensor/cezsar/gone-moving/config" not in state and "cezsar/gone/moving" not in state
    print(f"dead camera: entities unavailable {took_unavailable:.2f} s, health down {took_down:.2f} s after start")


def test_commands_switch_a_camera_and_an_action_off_and_on(tmp_path: Path, broker: Broker) -> None:
    cam = MjpegCamera(free_port())
    cam.start()
    cfg = settings_from(
        deploy=deploy_dir(),
        source=[f"cam={cam.url}"],
        actions=always_actions(tmp_path / "actions.yaml", ["moving", "waving"]),
        pub="tcp://127.0.0.1:*",
        control="none",
        realtime=True,
        status_interval=0.5,
        mqtt=f"127.0.0.1:{broker.port}",
    )
    sub = Sub(broker.port, ["cezsar/#", "homeassistant/#"])
    rt = Runtime(cfg)
    run = Running(rt)
    mqtt = rt.outputs.sink("mqtt")

    def events(**match: Any) -> list[dict[str, Any]]:
        out = [json.loads(p) for p in sub.on("cezsar/events")]
        return [e for e in out if all(e.get(k) == v for k, v in match.items())]

    def last(topic: str) -> bytes | None:
        got = sub.on(topic)
        return got[-1] if got else None

    def command(topic: str, payload: str) -> None:  # as Home Assistant's switch sends it
        sub.client.publish(topic, payload, qos=1, retain=False).wait_for_publish(5)

    try:
        wait_until(lambda: last("cezsar/cam/moving") == b"ON" and last("cezsar/cam/waving") == b"ON", 60, "events")
        assert last("cezsar/cam/enabled") == b"ON" and last("cezsar/actions/waving/enabled") == b"ON"
        switch = json.loads(sub.on("homeassistant/switch/cezsar/cam-_detect/config")[-1])
        assert switch["command_topic"] == "cezsar/cam/enabled/set" and switch["state_topic"] == "cezsar/cam/enabled"
        action_switch = json.loads(sub.on("homeassistant/switch/cezsar/runtime-waving/config")[-1])
        assert action_switch["command_topic"] == "cezsar/actions/waving/enabled/set"
        assert action_switch["device"]["identifiers"] == ["cezsar:cezsar"]

        # an action off: its event ends, its state and switch say OFF, it leaves the scores; the other goes on
        command("cezsar/actions/waving/enabled/set", "OFF")
        wait_until(lambda: events(action="waving", phase="end"), 10, "waving to end")
        assert events(action="waving", phase="end")[0]["reason"] == "action_disabled"
        wait_until(lambda: last("cezsar/actions/waving/enabled") == b"OFF", 5, "the action switch OFF")
        wait_until(lambda: last("cezsar/cam/waving") == b"OFF", 5, "its sensor OFF")  # its own message: no order
        assert last("cezsar/cam/moving") == b"ON"
        n_scores = len(sub.on("cezsar/cam/scores"))
        time.sleep(2.0)
        later = [json.loads(p) for p in sub.on("cezsar/cam/scores")[n_scores:]]
        assert later and all("waving" not in m["smoothed"] and "moving" in m["smoothed"] for m in later)
        assert len(events(action="waving", phase="start")) == 1 and not events(action="moving", phase="end")
        command("cezsar/actions/waving/enabled/set", "ON")
        wait_until(lambda: len(events(action="waving", phase="start")) == 2, 10, "waving to start again")
        assert last("cezsar/actions/waving/enabled") == b"ON" and last("cezsar/cam/waving") == b"ON"

        # the camera off: both its events end, no more windows; the reader goes on (still live)
        command("cezsar/cam/enabled/set", "OFF")
        wait_until(lambda: len(events(phase="end", reason="stream_paused")) == 2, 10, "the camera's events to end")
        wait_until(lambda: last("cezsar/cam/enabled") == b"OFF", 5, "the camera switch OFF")
        time.sleep(0.5)
        n_scores = len(sub.on("cezsar/cam/scores"))
        time.sleep(2.0)
        assert len(sub.on("cezsar/cam/scores")) == n_scores and last("cezsar/cam/availability") == b"online"
        command("cezsar/cam/enabled/set", "ON")
        wait_until(lambda: len(events(action="moving", phase="start")) == 2, 20, "moving to start again")
        assert last("cezsar/cam/enabled") == b"ON"

        # refused: another payload, a stream that does not exist
        command("cezsar/cam/enabled/set", "maybe")
        command("cezsar/nosuch/enabled/set", "OFF")
        wait_until(lambda: mqtt.refused == 2, 5, "two refused commands")
        assert mqtt.commands == 4 and last("cezsar/cam/enabled") == b"ON"

        # unplugged: the camera's entities turn unavailable within 10 s
        configs = {t: json.loads(p) for t, p in retained(broker.port, "homeassistant/#").items()}
        moving = configs["homeassistant/binary_sensor/cezsar/cam-moving/config"]
        assert available(moving, retained(broker.port, "cezsar/#"))
        cam.stop()
        t0 = time.monotonic()
        wait_until(lambda: last("cezsar/cam/availability") == b"offline", HA_UNAVAILABLE_WITHIN, "camera offline")
        took = time.monotonic() - t0
        assert not available(moving, retained(broker.port, "cezsar/#"))
        print(f"unplugged camera: entities unavailable {took:.2f} s later")
    finally:
        run.stop(60)
        cam.stop()
        sub.close()
