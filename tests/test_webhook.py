"""The webhook sink against a real HTTP server on a loopback port: delivery, signature, retries while the
server is down and after it comes back, refusals, a full queue, and a whole runtime with --webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.settings import WebhookSettings, settings_from
from edge.sinks.webhook import WebhookSink, safe_url
from tests.helpers.net import free_port, wait_until


class Receiver:
    """A real HTTP server that records every POST; ``status`` is what it answers; it can be stopped and
    started again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(rec.status)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.posts]


def event(n: int, phase: str = "start") -> dict[str, Any]:
    return {"type": "event", "id": f"{n:032x}", "phase": phase, "stream": "cam1", "action": "wave", "peak": 0.3}


@pytest.fixture()
def receiver() -> Any:
    r = Receiver().start()
    yield r
    r.stop()


def test_events_are_posted_signed_and_counted(receiver: Receiver) -> None:
    s = WebhookSettings(url=receiver.url, token="tok-123", secret="shared-secret")
    sink = WebhookSink(s)
    try:
        assert sink.publish("event.cam1", event(1))
        assert not sink.publish("scores.cam1", {"type": "scores", "stream": "cam1"})  # events only by default
        assert sink.publish("event.cam1", event(1, "end"))
        wait_until(lambda: sink.sent == 2, 5, "two POSTs")
    finally:
        sink.close()
    (h1, b1), _ = receiver.posts
    assert h1["content-type"] == "application/json" and h1["authorization"] == "Bearer tok-123"
    assert h1["x-cezsar-topic"] == "event.cam1"
    want = hmac.new(b"shared-secret", b1, hashlib.sha256).hexdigest()
    assert h1["x-cezsar-signature"] == f"sha256={want}"
    assert [(d["topic"], d["phase"]) for d in receiver.bodies()] == [("event.cam1", "start"), ("event.cam1", "end")]
    st = sink.stats()
    assert st["sent"] == 2 and st["dropped"] == st["unsent"] == st["rejected"] == 0 and st["connected"]
    assert "tok-123" not in json.dumps(st) and "shared-secret" not in json.dumps(st)


def test_a_server_that_is_down_and_comes_back_gets_every_event() -> None:
    receiver = Receiver()  # not listening yet
    sink = WebhookSink(WebhookSettings(url=receiver.url, retries=8, max_backoff=0.4), min_backoff=0.05)
    try:
        for n in range(3):
            sink.publish("event.cam1", event(n))
        wait_until(lambda: sink.retries >= 2, 5, "retries while the server is down")
        assert sink.sent == 0 and sink.connected is False and "Connection refused" in (sink.last_error or "")
        receiver.start()
        wait_until(lambda: sink.sent == 3, 10, "delivery after the server came back")
        assert [d["id"] for d in receiver.bodies()] == [f"{n:032x}" for n in range(3)]  # in order, none lost
        assert sink.connected and sink.unsent == 0
        receiver.status = 503  # down again (as a proxy would say): retried, then given up and counted
        sink.retries = 0
        sink.publish("event.cam1", event(9))
        wait_until(lambda: sink.unsent == 1, 10, "an event given up after its retries")
        assert sink.retries == 8 and sink.connected is False
    finally:
        sink.close(0.5)
        receiver.stop()


def test_a_refusal_is_not_retried_and_a_full_queue_drops(receiver: Receiver) -> None:
    receiver.status = 400
    sink = WebhookSink(WebhookSettings(url=receiver.url, queue=1), min_backoff=0.05)
    try:
        sink.publish("event.cam1", event(1))
        wait_until(lambda: sink.rejected == 1, 5, "a refused POST")
        assert len(receiver.posts) == 1 and sink.retries == 0 and sink.unsent == 0
        receiver.stop()  # nothing answers: the one queued message waits, the rest are dropped
        accepted = [sink.publish("event.cam1", event(n)) for n in range(2, 12)]
        assert accepted.count(False) >= 8 and sink.dropped == accepted.count(False)
    finally:
        sink.close(0.5)


def test_logs_and_status_never_show_the_urls_secrets() -> None:
    assert safe_url("https://user:pa55@hooks.example.com:8443/x/y?key=s3cret") == "https://hooks.example.com:8443/x/y"


def test_a_runtime_with_webhook_posts_its_events_and_counts_them_in_metrics(
    tmp_path: Path, receiver: Receiver, deploy: Path
) -> None:
    from cezsar.data.synthetic import render_stream
    from edge.runtime import Runtime

    video = tmp_path / "v.mp4"
    render_stream(video, [("staying still", 1.0), ("moving left", 3.0), ("staying still", 1.0)], seed=3)
    actions = tmp_path / "actions.yaml"
    always = {"threshold": -2.0, "hysteresis": 0.0, "min_duration": 0.0, "cooldown": 0.0, "smoothing": 1.0}
    actions.write_text(yaml.safe_dump({"defaults": always, "actions": [{"name": "left", "descriptions": "left"}]}))
    rt = Runtime(
        settings_from(
            deploy=deploy,
            source=[f"cam={video}"],
            actions=actions,
            pub="tcp://127.0.0.1:*",
            control="none",
            realtime=False,
            http="127.0.0.1:0",
            webhook=receiver.url,
            webhook_token="runtime-token",
        )
    )
    assert rt.run() == 0
    got = receiver.bodies()
    assert {d["phase"] for d in got} >= {"start", "end"} and all(d["type"] == "event" for d in got)
    assert {d["stream"] for d in got} == {"cam"}
    assert all(h["authorization"] == "Bearer runtime-token" for h, _ in receiver.posts)
    sent = rt.status()["outputs"]["webhook"]["sent"]
    assert sent == len(got) > 0
    body = rt.metrics.render()[0].decode()
    assert f'cezsar_sink_messages_total{{outcome="sent",sink="webhook"}} {float(sent)}' in body
    assert "runtime-token" not in json.dumps(rt.status())
