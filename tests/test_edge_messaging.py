"""Publisher, subscriber and control socket over real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import zmq

from cezsar.errors import CezsarError
from edge import messages
from edge.actions import ActionStore, load_actions
from edge.client import ControlClient, ControlError, Subscriber
from edge.control import ControlHandler, ControlServer
from edge.sinks.zmq import Publisher
from tests.helpers.net import free_port


def test_message_format_round_trip() -> None:
    frame = messages.encode("event.cam1", {"type": "event", "score": float("nan"), "x": "é"})
    topic, data = messages.decode(frame)
    assert frame.startswith(b"event.cam1 {")
    assert topic == "event.cam1" and data["schema"] == "cezsar/1" and data["score"] is None and data["x"] == "é"
    assert messages.schema_major(data) == 1
    with pytest.raises(ValueError):
        messages.encode("a b", {})
    with pytest.raises(ValueError):
        messages.decode(b"nospace")


def _keys(obj: object) -> object:
    """The structure of a JSON value: keys in order, recursively (values dropped)."""
    if isinstance(obj, dict):
        return [(k, _keys(v)) for k, v in obj.items()]
    return None


def _doc_example(prefix: str) -> dict:  # type: ignore[type-arg]
    """The first example line of docs/messages.md that starts with ``prefix``, decoded."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "messages.md"
    line = next(x for x in doc.read_text(encoding="utf-8").splitlines() if x.startswith(prefix))
    return messages.decode(line.encode("utf-8"))[1] if not prefix.startswith("{") else json.loads(line)


def test_the_builders_make_the_documented_messages() -> None:
    """edge/messages.py builds what docs/messages.md shows: the same fields, in the same order."""
    import numpy as np

    from edge.actions import actions_from_obj
    from edge.decisions import Event
    from edge.embedder import Window
    from edge.recognizer import WindowResult

    seq = messages.Sequencer("5c2e9f1a7b30", "edge-01")
    ev = Event("3f0c", "cam1", "moving left", "start", 6.375, None, 0.0831, 0.0831, 7.375, 3, wall=99.0)
    got = seq.stamp(messages.event(ev, 100.0, actions_version=1, model="9b1d"))
    assert got.topic == "event.cam1" and got.payload["latency_ms"] == 1000.0
    assert _keys(messages.decode(messages.encode(*got))[1]) == _keys(_doc_example("event.cam1 {"))
    doc = _doc_example("scores.cam1 {")
    w = Window("cam1", 0.0, 1.75, 8, 0, 7, 99.5, np.ones(4, np.float32))
    r = WindowResult(w, doc["scores"], doc["cosine"], doc["background"], doc["smoothed"])
    got = seq.stamp(messages.scores(r, 100.0))
    assert got.topic == "scores.cam1" and got.payload["window"] == doc["window"]
    assert _keys(messages.decode(messages.encode(*got))[1]) == _keys(doc)
    doc = _doc_example("status {")
    stamps = ("seq", "topic_seq", "host", "instance")
    parts = {k: v for k, v in doc.items() if k not in ("schema", "type", "time", "uptime", "latency_ms", *stamps)}
    got = seq.stamp(messages.status(now=100.0, started_at=98.0, latency=doc["latency_ms"], **parts))
    assert got.topic == "status" and got.payload["uptime"] == 2.0
    assert _keys(messages.decode(messages.encode(*got))[1]) == _keys(doc)
    aset = actions_from_obj({"background": ["still"], "actions": [{"name": "wave", "descriptions": "a hand waving"}]})
    listed = messages.reply_ok("list", messages.action_set(aset, 1, "actions.yaml", None))
    assert _keys(json.loads(messages.encode_reply(listed))) == _keys(_doc_example('{"schema":"cezsar/1","ok":true'))
    err = messages.reply_error("no action named 'nope'", "remove")
    assert json.loads(messages.encode_reply(err)) == _doc_example('{"schema":"cezsar/1","ok":false,"op":"remove"')


def connect(pub: Publisher, sub: Subscriber) -> None:
    """Wait out the PUB/SUB slow-joiner: publish pings until the subscriber hears one."""
    for _ in range(200):
        pub.publish("status", {"type": "status", "ping": True})
        m = sub.recv(0.02)
        if m is not None:
            while sub.recv(0.05) is not None:
                pass
            return
    raise AssertionError("subscriber never connected")


def test_publish_and_filter_by_topic() -> None:
    pub = Publisher("tcp://127.0.0.1:*")
    assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
    all_sub = Subscriber(pub.endpoint)
    cam1 = Subscriber(pub.endpoint, ["event.cam1 ", "status"])
    try:
        connect(pub, all_sub)
        connect(pub, cam1)
        while all_sub.recv(0.1) is not None:  # the pings sent while cam1 connected
            pass
        pub.publish("event.cam1", {"type": "event", "n": 1})
        pub.publish("event.cam10", {"type": "event", "n": 2})
        pub.publish("scores.cam1", {"type": "scores", "n": 3})
        got_all = [all_sub.recv(1.0) for _ in range(3)]
        assert [m.data["n"] for m in got_all if m] == [1, 2, 3]
        m = cam1.recv(1.0)
        assert m is not None and m.topic == "event.cam1" and m.data["n"] == 1 and m.type == "event"
        assert cam1.recv(0.2) is None  # event.cam10 and scores.cam1 filtered out
    finally:
        all_sub.close()
        cam1.close()
        pub.close()


def test_publisher_never_blocks_without_or_with_slow_subscribers() -> None:
    pub = Publisher("tcp://127.0.0.1:*", hwm=10)
    slow = Subscriber(pub.endpoint, conflate=True)
    try:
        connect(pub, slow)
        t0 = time.perf_counter()
        for i in range(20000):
            pub.publish("scores.x", {"i": i, "pad": "x" * 200})
        assert time.perf_counter() - t0 < 5.0
        time.sleep(0.3)
        m = slow.recv(1.0)
        assert m is not None and m.data["i"] > 100  # CONFLATE: only a recent message is kept
    finally:
        slow.close()
        pub.close()


def test_bind_error_is_one_clear_line() -> None:
    port = free_port()
    a = Publisher(f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(CezsarError, match=f"--pub tcp://127.0.0.1:{port}: cannot bind"):
            Publisher(f"tcp://127.0.0.1:{port}")
    finally:
        a.close()


@pytest.fixture()
def control(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "actions.yaml"
    path.write_text("background: [still]\nactions:\n  - name: wave\n    descriptions: a hand waving\n")
    store = ActionStore(path)
    store.load()
    server = ControlServer("tcp://127.0.0.1:*", ControlHandler(store, lambda: {"type": "status", "ok": 1}))
    server.start()
    client = ControlClient(server.endpoint, timeout=3.0)
    yield client, store, path
    client.close()
    server.stop()


def test_control_list_add_update_remove(control) -> None:  # type: ignore[no-untyped-def]
    client, store, path = control
    assert client.ping()["ok"] is True
    listed = client.list()
    assert listed["schema"] == "cezsar/1" and [a["name"] for a in listed["actions"]] == ["wave"]
    assert listed["actions"][0]["threshold"] == 0.05 and listed["background"] == ["still"]
    r = client.add({"name": "clap", "descriptions": ["hands clapping"], "threshold": 0.2})
    assert r["ok"] and [a["name"] for a in r["actions"]] == ["wave", "clap"]
    assert load_actions(path).get("clap").threshold == 0.2  # type: ignore[union-attr]  # written back
    client.update("clap", threshold=0.3, cooldown=5)
    clap = load_actions(path).get("clap")
    assert clap is not None and clap.threshold == 0.3 and clap.cooldown == 5
    client.remove("wave")
    assert store.current.names() == ["clap"] and load_actions(path).names() == ["clap"]
    assert client.status() == {"type": "status", "ok": 1}
    r = client.request({"op": "list", "id": 42})
    assert r["id"] == 42


@pytest.mark.parametrize(
    "raw, pattern",
    [
        (b"not json", "request is not valid JSON"),
        (b"\xff\xfe", "request is not UTF-8"),
        (b"[" * 30_000 + b"]" * 30_000, r"nested too deeply \(at most 8 levels\)"),
        (b'{"op": "list", "id": ' + b"9" * 5000 + b"}", "not usable JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"op": "explode"}', "unknown op 'explode'"),
        (b'{"op": "add"}', "missing 'action'"),
        (b'{"op": "add", "action": {"name": "x"}}', r"add: action \('x'\): missing required key 'descriptions'"),
        (b'{"op": "add", "action": {"name": "wave", "descriptions": "y"}}', "already exists"),
        (b'{"op": "add", "action": {"name": "z", "descriptions": "y", "thresh": 1}}', "unknown key 'thresh'"),
        (b'{"op": "update", "name": "wave"}', "'fields' must be a non-empty object"),
        (b'{"op": "update", "name": "wave", "fields": {"threshold": "hi"}}', "expected a number"),
        (b'{"op": "remove", "name": "nope"}', "no action named 'nope'"),
        (b'{"op": "remove"}', "'name' must be a non-empty string"),
        (b'{"op": "list", "extra": 1}', "unknown field"),
    ],
)
def test_malformed_requests_get_error_replies(control, raw: bytes, pattern: str) -> None:  # type: ignore[no-untyped-def]
    client, store, _ = control
    reply = client.request_raw(raw)
    assert reply["ok"] is False and reply["schema"] == "cezsar/1"
    assert re.search(pattern, reply["error"]), reply["error"]
    assert store.current.names() == ["wave"]  # nothing changed
    assert client.ping()["ok"]  # and the server still answers


def test_oversized_request_gets_an_error_reply(control) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = control
    big = json.dumps({"op": "add", "action": {"name": "x", "descriptions": ["y" * 100] * 1000}}).encode()
    reply = client.request_raw(big)
    assert reply["ok"] is False and "at most 65536" in reply["error"]
    with pytest.raises(ControlError, match="no action named"):
        client.remove("ghost")


def test_non_zeromq_bytes_do_not_wedge_the_control_socket(control) -> None:  # type: ignore[no-untyped-def]
    """Random bytes from a plain TCP client (not ZeroMQ) are refused at the handshake; the next real
    request is answered. Without the refusal most of these rounds leave the REP socket deaf."""
    import os
    import socket

    client, _, _ = control
    host, port = client.endpoint.rsplit("/", 1)[1].split(":")
    for i in range(8):
        with socket.create_connection((host, int(port)), timeout=2) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(4096))
            time.sleep(0.05)
        assert client.ping()["ok"], i


def test_no_server_is_a_clear_timeout() -> None:
    c = ControlClient(f"tcp://127.0.0.1:{free_port()}", timeout=0.3)
    with pytest.raises(CezsarError, match="no reply within 0.3 s"):
        c.ping()
    c.close()
    assert zmq.Context.instance() is not None
