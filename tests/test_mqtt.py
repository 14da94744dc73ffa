"""MQTT sink against a real mosquitto broker, read by a real paho subscriber and by mosquitto_sub."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install 'cezsar[mqtt]')")

from cezsar.errors import CezsarError  # noqa: E402
from edge.settings import MqttSettings, MqttTls  # noqa: E402
from edge.sinks.mqtt import MqttSink, slug  # noqa: E402
from tests.helpers.mqtt import MOSQUITTO, MOSQUITTO_PASSWD, NO_BROKER, Broker, Sub, mosquitto_sub  # noqa: E402
from tests.helpers.net import wait_until  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason=NO_BROKER)


def event(phase: str, stream: str, action: str, n: int = 0) -> dict[str, Any]:
    return {
        "type": "event",
        "id": f"{n:032x}",
        "phase": phase,
        "stream": stream,
        "action": action,
        "start": 1.0,
        "end": 2.0 if phase == "end" else None,
        "score": 0.2,
        "peak": 0.3,
        "peak_time": 1.5,
    }


def test_slug() -> None:
    assert slug("moving left") == "moving_left"
    assert slug("Wave / Hand+#") == "wave_hand"
    assert slug("pick-up") == "pick_up"  # no "-": it separates stream and action in object ids
    assert slug("???").startswith("a") and len(slug("???")) == 9


def test_events_states_scores_and_status_reach_paho_and_mosquitto_sub(broker: Broker) -> None:
    sub = Sub(broker.port, ["cezsar/#"])
    with MqttSink(MqttSettings(host="127.0.0.1", port=broker.port, node_id="box1")) as sink:
        wait_until(lambda: sink.connected, what="sink to connect")
        sink.publish("event.cam1", event("start", "cam1", "moving left", 1))
        sink.publish("scores.cam1", {"type": "scores", "stream": "cam1", "smoothed": {"moving left": 0.25}})
        status = {"type": "status", "state": "running", "streams": {"cam1": {}}, "actions": {"names": ["moving left"]}}
        sink.publish("status", status)
        wait_until(lambda: sub.on("cezsar/status"), what="status")
        ev = json.loads(sub.on("cezsar/events")[0])
        assert ev["schema"].startswith("cezsar/") and ev["phase"] == "start" and ev["action"] == "moving left"
        assert sub.on("cezsar/cam1/moving_left") == [b"ON"]
        assert json.loads(sub.on("cezsar/cam1/scores")[0])["smoothed"] == {"moving left": 0.25}
        wait_until(lambda: sub.on("cezsar/cam1/moving_left/score"), what="the action's own score topic")
        assert sub.on("cezsar/cam1/moving_left/score") == [b"0.250"]
        assert sub.on("cezsar/availability")[0] == b"online"
        # a non-Python client sees the retained state and availability
        rows = dict(mosquitto_sub(broker.port, "cezsar/#", wait=1.5))
        assert rows["cezsar/cam1/moving_left"] == "ON"
        assert json.loads(rows["cezsar/cam1/moving_left/attributes"])["phase"] == "start"
        assert rows["cezsar/availability"] == "online"
        assert rows["cezsar/cam1/availability"] == "offline"  # no health said it is live
        assert json.loads(rows["cezsar/status"])["state"] == "running"
        assert "cezsar/cam1/scores" not in rows and "cezsar/events" not in rows  # not retained
        sink.publish("event.cam1", event("end", "cam1", "moving left", 1))
        wait_until(lambda: sub.on("cezsar/cam1/moving_left") == [b"ON", b"OFF"], what="OFF state")
        assert sink.dropped == 0 and sink.unsent == 0 and sink.sent >= 7
    # a clean close publishes offline (retained)
    wait_until(lambda: sub.on("cezsar/availability")[-1:] == [b"offline"], what="offline")
    sub.close()


def test_discovery_taken_from_status_until_set_catalog(broker: Broker) -> None:
    sub = Sub(broker.port, ["homeassistant/#"])
    with MqttSink(MqttSettings(host="127.0.0.1", port=broker.port, node_id="n")) as sink:
        status = {"type": "status", "streams": {"door": {}}, "actions": {"names": ["knock"]}}
        sink.publish("status", status)
        topic = "homeassistant/binary_sensor/n/door-knock/config"
        wait_until(lambda: sub.on(topic), what="discovery from status")
        status["actions"] = {"names": []}
        sink.publish("status", status)
        wait_until(lambda: sub.on(topic)[-1:] == [b""], what="removal from status")
        sink.set_catalog(["door"], ["knock"])  # from here on the catalog decides, not the status
        wait_until(lambda: sub.on(topic)[-1:] != [b""], what="discovery from set_catalog")
        sink.publish("status", status)
        time.sleep(0.5)
        assert sub.on(topic)[-1] != b""
    sub.close()


def test_broker_killed_and_restarted_mid_stream(broker: Broker) -> None:
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port, node_id="box1"), min_backoff=0.1, max_backoff=0.5)
    try:
        sink.set_catalog(["cam1"], ["wave"])
        wait_until(lambda: sink.connected, what="sink to connect")
        sub = Sub(broker.port, ["cezsar/events"])
        assert sink.publish("event.cam1", event("start", "cam1", "wave", 1))
        wait_until(lambda: len(sub.on("cezsar/events")) == 1, what="event before the outage")
        sub.close()

        broker.kill()
        wait_until(lambda: not sink.connected, what="sink to notice the outage")
        before = sink.unsent
        for i in range(20):  # the runtime goes on publishing: accepted, never raises, never blocks
            assert sink.publish("event.cam1", event("update", "cam1", "wave", 1)) is True
            assert sink.publish("scores.cam1", {"type": "scores", "stream": "cam1", "smoothed": {"wave": 0.1 * i}})
        wait_until(lambda: sink.stats()["queued"] == 0, what="queue drained")
        assert sink.unsent - before >= 20 * 2  # the events and scores topics per iteration
        assert sink.dropped == 0

        broker.start()  # same port, empty broker (no persistence)
        wait_until(lambda: sink.connected, 15, what="sink to reconnect")
        assert sink.connects == 2
        sub = Sub(broker.port, ["cezsar/#", "homeassistant/#"])
        sink.publish("event.cam1", event("end", "cam1", "wave", 1))
        wait_until(lambda: sub.on("cezsar/events"), what="event after the restart")
        assert json.loads(sub.on("cezsar/events")[0])["phase"] == "end"
        # the resync after reconnecting put availability and discovery back on the empty broker
        wait_until(lambda: sub.on("homeassistant/binary_sensor/box1/cam1-wave/config"), what="discovery again")
        assert sub.on("cezsar/availability")[-1] == b"online"
        wait_until(lambda: sub.on("cezsar/cam1/wave")[-1:] == [b"OFF"], what="state after the restart")
        sub.close()
    finally:
        sink.close()


def test_publish_never_waits_for_a_stuck_worker_and_counts_drops(broker: Broker) -> None:
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port, discovery=False), queue_size=5)
    try:
        wait_until(lambda: sink.connected and sink.sent >= 1, what="sink to connect and announce itself")
        with sink._lock:  # the worker stops after its first event (its housekeeping takes this lock), as if stuck
            sink.publish("event.cam1", event("start", "cam1", "wave", 1))
            wait_until(lambda: sink.stats()["queued"] == 0, what="worker to take the first message")
            results: list[bool] = []

            def caller() -> None:
                results.extend(sink.publish("scores.cam1", {"type": "scores"}) for _ in range(12))

            t = threading.Thread(target=caller)
            t.start()
            t.join(10)
            assert not t.is_alive(), "publish waited for the worker"
            assert results == [True] * 5 + [False] * 7 and sink.dropped == 7
        wait_until(lambda: sink.stats()["queued"] == 0, what="queue drained after the worker resumed")
    finally:
        sink.close()


def test_sink_started_before_the_broker_connects_later(tmp_path: Path) -> None:
    b = Broker(tmp_path)
    sink = MqttSink(MqttSettings(host="127.0.0.1", port=b.port), min_backoff=0.1, max_backoff=0.3)
    try:
        assert sink.publish("status", {"type": "status"})
        wait_until(lambda: sink.unsent >= 1, what="unsent count while no broker")
        assert not sink.connected
        b.start()
        wait_until(lambda: sink.connected, 15, what="first connection")
    finally:
        sink.close()
        b.kill()


def test_last_will_marks_a_killed_runtime_offline(broker: Broker) -> None:
    sub = Sub(broker.port, ["lw/availability"])
    code = (
        "import sys, time\n"
        "from edge.settings import MqttSettings\n"
        "from edge.sinks.mqtt import MqttSink\n"
        f"s = MqttSink(MqttSettings(host='127.0.0.1', port={broker.port}, prefix='lw', discovery=False))\n"
        "while not s.connected: time.sleep(0.02)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        wait_until(lambda: sub.on("lw/availability")[-1:] == [b"online"], what="online")
        proc.send_signal(signal.SIGKILL)  # no clean disconnect: the broker sends the will
        proc.wait(10)
        wait_until(lambda: sub.on("lw/availability")[-1:] == [b"offline"], what="last will")
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd not installed")
def test_username_password(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run([str(MOSQUITTO_PASSWD), "-b", "-c", str(pw), "cam", "s3cret"], check=True, capture_output=True)
    b = Broker(tmp_path, extra=f"allow_anonymous false\npassword_file {pw}\n")
    b.start()
    try:
        bad = MqttSink(
            MqttSettings(host="127.0.0.1", port=b.port, username="cam", password="wrong"),
            min_backoff=0.2,
            max_backoff=0.5,
        )
        good = MqttSink(MqttSettings(host="127.0.0.1", port=b.port, username="cam", password="s3cret"))
        try:
            wait_until(lambda: good.connected, what="authenticated connection")
            sub = Sub(b.port, ["cezsar/status"], username="cam", password="s3cret")
            good.publish("status", {"type": "status", "state": "running"})
            wait_until(lambda: sub.on("cezsar/status"), what="status with credentials")
            bad.publish("status", {"type": "status", "state": "bad"})
            wait_until(lambda: bad.unsent >= 1, what="unsent with bad credentials")
            assert not bad.connected and bad.last_error
            sub.close()
        finally:
            bad.close()
            good.close()
    finally:
        b.kill()


def _certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with the openssl command."""
    assert OPENSSL is not None
    p = {name: folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "san.ext")}
    p["san.ext"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p["ca.key"]), "-out", str(p["ca.crt"]),
        "-days", "2", "-subj", "/CN=cezsar test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p["server.key"]), "-out", str(p["server.csr"]),
        "-subj", "/CN=localhost")  # fmt: skip
    run("x509", "-req", "-in", str(p["server.csr"]), "-CA", str(p["ca.crt"]), "-CAkey", str(p["ca.key"]),
        "-CAcreateserial", "-out", str(p["server.crt"]), "-days", "2", "-extfile", str(p["san.ext"]))  # fmt: skip
    return p


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_tls_verified_by_ca_refused_without_it_and_insecure_flag(tmp_path: Path) -> None:
    c = _certificates(tmp_path)
    tls_conf = f"cafile {c['ca.crt']}\ncertfile {c['server.crt']}\nkeyfile {c['server.key']}\nallow_anonymous true\n"
    b = Broker(tmp_path, extra=tls_conf)
    b.start()
    sinks = []
    try:
        verified = MqttSink(
            MqttSettings(host="127.0.0.1", port=b.port, tls=MqttTls(ca=c["ca.crt"])), min_backoff=0.2, max_backoff=0.5
        )
        untrusted = MqttSink(
            MqttSettings(host="127.0.0.1", port=b.port, tls=MqttTls()), min_backoff=0.2, max_backoff=0.5
        )  # system CAs
        insecure = MqttSink(MqttSettings(host="127.0.0.1", port=b.port, prefix="insecure", tls=MqttTls(insecure=True)))
        sinks = [verified, untrusted, insecure]
        wait_until(lambda: verified.connected and insecure.connected, what="TLS connections")
        sub = Sub(b.port, ["cezsar/status", "insecure/status"], ca=c["ca.crt"])
        verified.publish("status", {"type": "status", "state": "tls"})
        insecure.publish("status", {"type": "status", "state": "insecure"})
        wait_until(lambda: sub.on("cezsar/status") and sub.on("insecure/status"), what="messages over TLS")
        assert json.loads(sub.on("cezsar/status")[0])["state"] == "tls"
        untrusted.publish("status", {"type": "status"})
        wait_until(lambda: untrusted.unsent >= 1, what="unsent without a trusted CA")
        assert not untrusted.connected
        sub.close()
    finally:
        for s in sinks:
            s.close()
        b.kill()
    with pytest.raises(CezsarError, match="mqtt TLS CA .*: no such file"):
        MqttSink(MqttSettings(host="127.0.0.1", port=1883, tls=MqttTls(ca=tmp_path / "missing.crt")))


def test_outputs_together_zmq_mqtt_metrics_and_media(broker: Broker, tmp_path: Path) -> None:
    """The new outputs side by side, driven as the runtime will drive them: one event goes out over
    ZeroMQ and MQTT with its media URLs, which the HTTP server then serves; /metrics counts it all."""
    import urllib.request

    import cv2
    import numpy as np

    zmq = pytest.importorskip("zmq")
    pytest.importorskip("aiohttp")
    from edge.client import Subscriber
    from edge.http import Metrics
    from edge.media import MediaRecorder
    from edge.settings import MediaSettings
    from edge.sinks.zmq import Publisher
    from tests.helpers.http import serve

    metrics = Metrics(process=False)
    with serve(metrics=metrics, media_dir=tmp_path / "media") as srv:
        media = MediaRecorder(MediaSettings(dir=tmp_path / "media", pre_roll=1.0), base_url=srv.url + "/media")
        ctx = zmq.Context()
        pub = Publisher("tcp://127.0.0.1:*", context=ctx)
        sink = MqttSink(MqttSettings(host="127.0.0.1", port=broker.port, node_id="box"))
        metrics.watch_sink("zmq", lambda: {"sent": pub.sent, "dropped": pub.dropped})
        metrics.watch_sink("mqtt", sink.stats)
        sink.set_catalog(["cam1"], ["wave"])
        mqtt_sub = Sub(broker.port, ["cezsar/events"])
        zmq_sub = Subscriber(pub.endpoint, topics=["event."], context=ctx)
        try:
            wait_until(lambda: sink.connected, what="MQTT")
            time.sleep(0.3)  # ZeroMQ's slow joiner: let the subscription reach the PUB socket
            for i in range(41):  # 4 s of a 10 fps stream, an event from 2.0 to 3.5 s
                t = i / 10
                img = np.zeros((48, 64, 3), np.uint8)
                img[:, i % 64] = 255
                metrics.frame_in("cam1")
                media.add_frame("cam1", t, img)
                msg = None
                if i == 20:
                    media.event_start("ev1", "cam1", 2.0)
                    msg = event("start", "cam1", "wave", 1)
                    metrics.event("cam1", "wave")
                elif i == 35:
                    res = media.event_end("ev1", 3.5, peak_time=3.0)
                    assert res is not None
                    msg = {**event("end", "cam1", "wave", 1), **res.as_message()}
                if msg is not None:
                    for out in (pub, sink):
                        out.publish("event.cam1", msg)
            got = [zmq_sub.recv(timeout=5), zmq_sub.recv(timeout=5)]
            assert [m.data["phase"] for m in got if m is not None] == ["start", "end"]
            end = got[1].data if got[1] is not None else {}
            wait_until(lambda: len(mqtt_sub.on("cezsar/events")) == 2, what="both events over MQTT")
            assert json.loads(mqtt_sub.on("cezsar/events")[1])["snapshot"] == end["snapshot"]
            assert media.flush(30) and media.written == 1
            with urllib.request.urlopen(end["snapshot"], timeout=10) as r:
                snap = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
            assert snap is not None and int(np.argmax(snap[:, :, 1].mean(axis=0))) == 30  # frame at 3.0 s
            with urllib.request.urlopen(end["clip"], timeout=10) as r:
                assert r.headers["Content-Length"] and int(r.headers["Content-Length"]) > 0
            with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
                text = r.read().decode()
            assert 'cezsar_frames_in_total{stream="cam1"} 41.0' in text
            assert 'cezsar_events_total{action="wave",stream="cam1"} 1.0' in text
            assert 'cezsar_sink_messages_total{outcome="sent",sink="zmq"} 2.0' in text
            assert 'cezsar_sink_connected{sink="mqtt"} 1.0' in text
        finally:
            zmq_sub.close()
            mqtt_sub.close()
            sink.close()
            pub.close(0)
            media.close()
            ctx.term()
