"""Home Assistant discovery and the MQTT topics HA reads, against a real mosquitto, read back by
mosquitto_sub (the C client) and a real paho subscriber: devices, ids that cannot collide, per-camera
availability, clean-up of what no longer exists, zone scores, bounded score rates, snapshots."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install 'cezsar[mqtt]')")

from cezsar.opencv import cv2  # noqa: E402
from edge import messages  # noqa: E402
from edge.settings import MediaSettings, MqttSettings  # noqa: E402
from edge.sinks.mqtt import MqttSink  # noqa: E402
from edge.sinks.mqtt.discovery import Features, configs  # noqa: E402
from edge.sinks.mqtt.naming import Topics, action_keys, default_node_id  # noqa: E402
from edge.sinks.mqtt.state import build_catalog  # noqa: E402
from tests.helpers.mqtt import MOSQUITTO, NO_BROKER, Broker, Sub, retained  # noqa: E402
from tests.helpers.net import wait_until  # noqa: E402

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason=NO_BROKER)


def settings(port: int, **kw: Any) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, **kw)


def discovered(port: int) -> dict[str, dict[str, Any]]:
    """Every retained discovery config, as mosquitto_sub reads it."""
    return {t: json.loads(p) for t, p in retained(port, "homeassistant/#").items()}


class Watch(Sub):
    """A paho subscriber to everything of ours that knows the newest payload of each topic (waiting on
    it is quick; the assertions read the broker's retained state with mosquitto_sub)."""

    def __init__(self, port: int) -> None:
        super().__init__(port, ["cezsar/#", "homeassistant/#"])

    def now(self, prefix: str = "") -> dict[str, bytes]:
        """The newest payload of each retained topic (the events topic is never retained)."""
        with self._lock:
            last = {t: p for t, p, _ in self.messages if t.startswith(prefix) and t != "cezsar/events"}
        return {t: p for t, p in last.items() if p}

    def configs(self) -> int:
        return len(self.now("homeassistant/"))


def available(config: dict[str, Any], state: dict[str, bytes]) -> bool:
    """Home Assistant's rule for an entity with an ``availability`` list and ``availability_mode: all``."""
    assert config["availability_mode"] == "all"
    return all(state.get(a["topic"]) == a["payload_available"].encode() for a in config["availability"])


def health(state: str, reason: str | None = None) -> dict[str, Any]:
    return {"state": state, "reason": reason, "since": time.time(), "last_frame_age": None, "reconnects": 0}


def status(streams: dict[str, str], actions: list[str]) -> dict[str, Any]:
    return {
        "type": "status",
        "state": "running",
        "streams": {s: {"health": health(h, None if h == "live" else "cannot open")} for s, h in streams.items()},
        "actions": {"names": actions},
    }


def event(phase: str, stream: str, action: str, n: int, media: dict[str, Any] | None = None) -> dict[str, Any]:
    ev = {"type": "event", "id": f"{n:032x}", "phase": phase, "stream": stream, "action": action, "score": 0.3}
    if media is not None:
        ev["media"] = media
    return ev


def test_one_device_per_camera_via_the_runtime_node_id_origin_configuration_url(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = {"door": ["wave"], "yard": ["wave", "moving left"]}
    expected = 1 + 2 + 3 * 3  # runtime state; a connectivity per camera; binary, score, image per pair
    seen = []
    watch = Watch(broker.port)
    for host in ("container-1a2b", "container-9f8e"):  # the same site in a rebuilt container
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        with MqttSink(settings(broker.port), public_url="https://cams.example:8443", media_dir=tmp_path) as sink:
            sink.set_catalog(["door", "yard"], pairs)
            wait_until(lambda: watch.configs() == expected, what=f"{expected} configs")
            seen.append(discovered(broker.port))
        for topic in seen[-1]:  # the broker forgets them: the second run announces everything itself
            watch.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: watch.configs() == 0, what="configs emptied")
    watch.close()
    assert seen[0] == seen[1], "a rebuilt container announces exactly the same entities"
    cfg = seen[0]
    assert all(t.split("/")[2] == "cezsar" for t in cfg), "node id: the prefix, not the host name"
    assert default_node_id("site/a") == "site_a"
    door = cfg["homeassistant/binary_sensor/cezsar/door-wave/config"]
    assert door["device"]["identifiers"] == ["cezsar:cezsar:door"] and door["device"]["name"] == "cezsar door"
    assert door["device"]["via_device"] == "cezsar:cezsar"
    assert door["device"]["configuration_url"] == "https://cams.example:8443/console/"
    assert door["origin"]["name"] == "cezsar" and door["origin"]["sw_version"]
    assert door["state_topic"] == "cezsar/door/wave" and door["json_attributes_topic"] == "cezsar/door/wave/attributes"
    assert [a["topic"] for a in door["availability"]] == ["cezsar/availability", "cezsar/door/availability"]
    runtime = cfg["homeassistant/sensor/cezsar/runtime-_state/config"]
    assert runtime["device"]["identifiers"] == ["cezsar:cezsar"] and "via_device" not in runtime["device"]
    assert runtime["device"]["configuration_url"] == "https://cams.example:8443/console/"
    conn = cfg["homeassistant/binary_sensor/cezsar/yard-_connectivity/config"]
    assert conn["device_class"] == "connectivity" and conn["state_topic"] == "cezsar/yard/health"
    assert [a["topic"] for a in conn["availability"]] == ["cezsar/availability"]  # shows OFF, not unavailable
    score = cfg["homeassistant/sensor/cezsar/yard-moving_left/config"]
    assert score["state_topic"] == "cezsar/yard/moving_left/score" and "value_template" not in score
    image = cfg["homeassistant/image/cezsar/yard-moving_left/config"]
    assert image["image_topic"] == "cezsar/yard/moving_left/snapshot" and image["content_type"] == "image/jpeg"
    devices = {c["device"]["identifiers"][0] for c in cfg.values()}
    assert devices == {"cezsar:cezsar", "cezsar:cezsar:door", "cezsar:cezsar:yard"}
    assert len({c["unique_id"] for c in cfg.values()}) == expected


def test_ids_and_topics_cannot_collide(broker: Broker) -> None:
    """Issue 23's example (stream a_b + action c, stream a + action "b c") and worse: names whose slugs
    meet, an action called like a camera-level topic, streams with '-'."""
    pairs = {
        "a_b": ["c"],
        "a": ["b c", "b_c", "B C", "scores", "availability"],
        "x-y": ["z"],
        "x": ["y-z", "z"],
        "actions": ["wave"],
    }
    names = sorted({a for v in pairs.values() for a in v})
    keys = action_keys(names)
    assert keys["c"] == "c" and keys["b_c"] == "b_c" and keys["b c"].startswith("b_c_") and keys["B C"] != keys["b c"]
    assert keys["scores"] != "scores" and keys["availability"] != "availability"
    assert action_keys(reversed(names)) == keys  # the set decides, not the order
    sub = Watch(broker.port)
    with MqttSink(settings(broker.port, node_id="n", scores=False)) as sink:
        sink.set_catalog(list(pairs), pairs)
        n_pairs = sum(len(v) for v in pairs.values())
        expected = 1 + len(pairs) + n_pairs  # runtime state, connectivity per stream, a binary sensor per pair
        wait_until(lambda: sub.configs() == expected, what=f"{expected} configs")
        cfg = discovered(broker.port)
        assert (
            "homeassistant/binary_sensor/n/a_b-c/config" in cfg and "homeassistant/binary_sensor/n/a-b_c/config" in cfg
        )
        assert len({c["unique_id"] for c in cfg.values()}) == expected
        states = [c["state_topic"] for c in cfg.values() if c.get("device_class") != "connectivity"]
        assert len(set(states)) == len(states) and cfg["homeassistant/binary_sensor/n/a_b-c/config"]["state_topic"] == (
            "cezsar/a_b/c"
        )
        for s in pairs:  # a camera's own topics are not any action's
            assert f"cezsar/{s}/availability" not in states and f"cezsar/{s}/scores" not in states
        # an event of stream a's "b c" turns on that pair only
        sink.publish("event.a", event("start", "a", "b c", 1))
        topic = f"cezsar/a/{keys['b c']}"
        wait_until(lambda: sub.on(topic)[-1:] == [b"ON"], what="the pair's state")
        state = retained(broker.port, "cezsar/#")
        assert state["cezsar/a_b/c"] == b"OFF" and state["cezsar/a/b_c"] == b"OFF" and state[topic] == b"ON"
    sub.close()
    # with commands (a runtime behind the sink) the switches join in, still without a collision
    cat = build_catalog(list(pairs), pairs, ["spare action"])
    every = configs(Topics("cezsar", "homeassistant", "n"), cat, Features(commands=True))
    ids = [(t.split("/")[1], c["unique_id"]) for t, c in every.items()]
    assert len(set(ids)) == len(ids) == len(every)
    assert len(every) == 1 + 2 * len(pairs) + 3 * n_pairs + len(cat.actions)


def test_clean_up_at_start_removes_what_no_longer_exists(broker: Broker) -> None:
    other = "homeassistant/binary_sensor/other/cam9-wave/config"  # another node's: never touched
    old_style = "homeassistant/binary_sensor/n/cam1_wave/config"  # an earlier version's object id
    watch = Watch(broker.port)
    with MqttSink(settings(broker.port, node_id="n")) as first:
        first.set_catalog(["cam1", "cam2"], ["wave", "clap"])
        wait_until(lambda: first.connected, what="first run connects")
        first.publish("event.cam2", event("start", "cam2", "clap", 1))
        first._client.publish(other, '{"name": "x"}', qos=1, retain=True)
        first._client.publish(old_style, '{"name": "old"}', qos=1, retain=True)
        wait_until(lambda: watch.configs() == 1 + 2 + 2 * 4 + 2, what="first run's configs")
    before = retained(broker.port)
    assert before["cezsar/cam2/clap"] == b"ON" and "homeassistant/sensor/n/cam2-clap/config" in before

    second = MqttSink(settings(broker.port, node_id="n"))
    try:
        wait_until(lambda: second.connected, what="second run connects")
        time.sleep(2.0)  # scanned, but the runtime has not said what exists yet: nothing may go
        assert set(before) <= set(retained(broker.port))
        t0 = time.monotonic()
        second.set_catalog(["cam1"], ["wave"])
        keep = {
            "cezsar/availability",
            "cezsar/cam1/availability",
            "cezsar/cam1/wave",
            "homeassistant/sensor/n/runtime-_state/config",
            "homeassistant/binary_sensor/n/cam1-_connectivity/config",
            "homeassistant/binary_sensor/n/cam1-wave/config",
            "homeassistant/sensor/n/cam1-wave/config",
            other,
        }
        wait_until(lambda: set(watch.now()) == keep, 15, "only what exists")
        took = time.monotonic() - t0
        assert set(retained(broker.port)) == keep
        assert second.cleared >= 13  # cam2 (5 configs + 4 topics), clap on cam1 (2 + 1), the old-style config
        print(f"clean-up at start: {second.cleared} retained topics emptied {took:.2f} s after the catalog")
    finally:
        second.close()
        watch.close()


def test_live_removal_empties_every_retained_topic_of_a_pair(broker: Broker, tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "cam1").mkdir(parents=True)
    ok, jpg = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))
    (media / "cam1" / "e1.jpg").write_bytes(jpg.tobytes())
    watch = Watch(broker.port)
    with MqttSink(settings(broker.port, node_id="n"), media_dir=media) as sink:
        sink.set_catalog(["cam1"], ["wave", "clap"])
        sink.publish("event.cam1", event("end", "cam1", "wave", 1, media={"snapshot": str(media / "cam1/e1.jpg")}))
        sink.publish(
            "media.cam1",
            messages.media(f"{1:032x}", "cam1", {"snapshot": str(media / "cam1/e1.jpg")}, True, None).payload,
        )
        wait_until(lambda: "cezsar/cam1/wave/snapshot" in watch.now(), what="snapshot")
        assert {"cezsar/cam1/wave", "homeassistant/image/n/cam1-wave/config"} <= set(retained(broker.port))
        sink.set_catalog(["cam1"], ["clap"])
        wait_until(lambda: not any("wave" in t for t in watch.now()), what="wave's topics gone")
        after = retained(broker.port)
        assert not any("wave" in t for t in after) and "cezsar/cam1/clap" in after
    watch.close()


def test_per_camera_availability_follows_health(broker: Broker) -> None:
    watch = Watch(broker.port)
    with MqttSink(settings(broker.port, node_id="n")) as sink:
        sink.publish("status", status({"door": "live", "yard": "down"}, ["wave"]))
        wait_until(lambda: watch.configs() == 1 + 2 + 2 * 2, what="configs")
        cfg = discovered(broker.port)
        wait_until(lambda: watch.now().get("cezsar/door/availability") == b"online", what="door online")
        state = retained(broker.port, "cezsar/#")
        door, yard = (cfg[f"homeassistant/binary_sensor/n/{s}-wave/config"] for s in ("door", "yard"))
        assert available(door, state) and not available(yard, state)
        yard_conn = cfg["homeassistant/binary_sensor/n/yard-_connectivity/config"]
        assert available(yard_conn, state) and json.loads(state["cezsar/yard/health"])["state"] == "down"
        sink.publish("status", status({"door": "stalled", "yard": "live"}, ["wave"]))
        wait_until(lambda: watch.now().get("cezsar/yard/availability") == b"online", what="yard online")
        wait_until(lambda: watch.now().get("cezsar/door/availability") == b"offline", what="door offline")
        state = retained(broker.port, "cezsar/#")
        assert available(yard, state) and not available(door, state)
    state = retained(broker.port, "cezsar/#")  # the runtime gone: every entity unavailable
    assert not any(available(c, state) for c in cfg.values())
    watch.close()


def test_zone_scores_on_their_own_topic_and_score_sensors_at_a_bounded_rate(broker: Broker) -> None:
    sub = Sub(broker.port, ["cezsar/#"])
    every = 0.5
    with MqttSink(settings(broker.port, node_id="n", score_interval=every)) as sink:
        sink.set_catalog(["cam1"], ["wave", "knock"])  # knock is decided on the zone "door"
        wait_until(lambda: sink.connected, what="connect")
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 3.0:  # 20 windows a second: full frame and zone alternate
            full = n % 2 == 0
            body = {
                "type": "scores",
                "stream": "cam1",
                "zone": None if full else "door",
                "smoothed": {"wave": round(n / 1000, 3)} if full else {"knock": round(n / 1000, 3)},
            }
            sink.publish("scores.cam1", body)
            n += 1
            time.sleep(0.05)
        last_wave = (n - 1 if (n - 1) % 2 == 0 else n - 2) / 1000
        wait_until(lambda: sub.on("cezsar/cam1/wave/score")[-1:] == [f"{last_wave:.3f}".encode()], 5, "newest score")
    full_msgs = [json.loads(b) for b in sub.on("cezsar/cam1/scores")]
    zone_msgs = [json.loads(b) for b in sub.on("cezsar/cam1/scores/door")]
    assert full_msgs and zone_msgs and len(full_msgs) + len(zone_msgs) == n
    assert all("wave" in m["smoothed"] and m["zone"] is None for m in full_msgs)
    assert all("knock" in m["smoothed"] and m["zone"] == "door" for m in zone_msgs)
    for action in ("wave", "knock"):
        got = len(sub.on(f"cezsar/cam1/{action}/score"))
        assert 4 <= got <= 3.0 / every + 2, (action, got)  # 30 windows each, at most one value per 0.5 s
    print(f"scores: {n} windows in 3 s; per action score topic {len(sub.on('cezsar/cam1/wave/score'))} values")
    sub.close()


def test_event_snapshot_retained_per_camera_and_action_bounded_in_size(broker: Broker, tmp_path: Path) -> None:
    from edge.media import MediaRecorder

    media_dir = tmp_path / "media"
    rec = MediaRecorder(MediaSettings(dir=media_dir, pre_roll=0.5), base_url="https://cams.example/media")
    limit = 64 << 10
    sink = MqttSink(settings(broker.port, node_id="n", snapshot_max_bytes=limit), media_dir=media_dir)
    watch = Watch(broker.port)
    try:
        sink.set_catalog(["cam1"], ["wave"])
        for i in range(20):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, i * 3] = 255
            rec.add_frame("cam1", i / 10, img)
        rec.event_start("ev1", "cam1", 0.5)
        res = rec.event_end("ev1", 1.5, peak_time=1.0)
        assert res is not None and res.snapshot.startswith("https://cams.example/media/cam1/")
        sink.publish("event.cam1", {**event("end", "cam1", "wave", 0), "id": "ev1", "media": res.as_message()})
        assert rec.flush(30)
        sink.publish("media.cam1", messages.media("ev1", "cam1", res.as_message(), True, None).payload)
        wait_until(lambda: "cezsar/cam1/wave/snapshot" in watch.now(), what="snapshot")
        assert retained(broker.port, "cezsar/#")["cezsar/cam1/wave/snapshot"] == res.snapshot_path.read_bytes()

        # a 1600x1200 noise picture is far over the limit: scaled down until it fits
        noise = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
        big = media_dir / "cam1" / "ev2.jpg"
        big.write_bytes(cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
        assert big.stat().st_size > 10 * limit
        sink.publish("event.cam1", {**event("end", "cam1", "wave", 0), "id": "ev2", "media": {"snapshot": str(big)}})
        sink.publish("media.cam1", messages.media("ev2", "cam1", {"snapshot": str(big)}, True, None).payload)
        wait_until(lambda: sink.snapshots == 2, what="the big snapshot")
        data = retained(broker.port, "cezsar/#")["cezsar/cam1/wave/snapshot"]
        small = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert len(data) <= limit and small is not None and small.shape[1] < 1600
        print(f"snapshot: {big.stat().st_size} bytes -> {len(data)} bytes ({small.shape[1]}x{small.shape[0]})")

        # a media message naming a file outside the media folder is not read
        outside = tmp_path / "secret.jpg"
        outside.write_bytes(big.read_bytes()[:1000])
        sink.publish(
            "event.cam1", {**event("end", "cam1", "wave", 0), "id": "ev3", "media": {"snapshot": str(outside)}}
        )
        sink.publish("media.cam1", messages.media("ev3", "cam1", {"snapshot": "../../secret.jpg"}, True, None).payload)
        wait_until(lambda: sink.snapshots_skipped == 1, what="the outside file refused")
        assert sink.snapshots == 2
    finally:
        sink.close()
        rec.close()
        watch.close()
