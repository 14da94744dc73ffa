"""The HTTP endpoint with real requests (urllib) to the real aiohttp server; Prometheus text parsed
with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="aiohttp not installed (pip install 'cezsar[http]')")
pytest.importorskip("prometheus_client", reason="prometheus-client not installed (pip install 'cezsar[http]')")

from prometheus_client import REGISTRY  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cezsar.errors import CezsarError  # noqa: E402
from edge.http import HttpServer, Metrics, is_loopback_host  # noqa: E402
from edge.http.health import HealthRoutes  # noqa: E402
from tests.helpers.http import serve  # noqa: E402


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_readyz_follow_the_ready_callback() -> None:
    state: dict[str, Any] = {"ok": False, "reasons": ["models not loaded", "cam1: connecting"]}
    health = HealthRoutes(ready=lambda: (state["ok"], state["reasons"]))
    with HttpServer("127.0.0.1", 0).add_router(health) as srv:
        assert srv.port != 0
        code, _, body = get(srv.url + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        code, headers, body = get(srv.url + "/readyz")
        assert code == 503 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body) == {"ready": False, "reasons": ["models not loaded", "cam1: connecting"]}
        state.update(ok=True, reasons=[])
        code, _, body = get(srv.url + "/readyz")
        assert code == 200 and json.loads(body) == {"ready": True, "reasons": []}

        def broken() -> tuple[bool, list[str]]:
            raise RuntimeError("status unavailable")

        health.ready = broken
        code, _, body = get(srv.url + "/readyz")
        assert code == 503 and "status unavailable" in json.loads(body)["reasons"][0]
        assert get(srv.url + "/nope")[0] == 404
    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens any more
        urllib.request.urlopen(srv.url + "/healthz", timeout=2)


def test_metrics_in_prometheus_text() -> None:
    zmq = pytest.importorskip("zmq")
    from edge.sinks.zmq import Publisher

    m = Metrics()
    for _ in range(3):
        m.frame_in("cam1")
    m.frame_in("cam2", 5)
    m.frame_dropped("cam1")
    m.frame_encoded("cam1", 2)
    for seconds in (0.004, 0.03, 0.2):
        m.window_latency(seconds, "cam1")
    m.event("cam1", "moving left")
    m.event("cam1", "moving left")
    m.set_actions(4)
    m.set_info("onnxruntime-cpu", "fp32", version="0.1.0")
    pub = Publisher("tcp://127.0.0.1:*", context=zmq.Context())  # a real sink's own counters
    pub.publish("status", {"type": "status"})
    m.watch_sink("zmq", lambda: {"sent": pub.sent, "dropped": pub.dropped})
    m.watch_sink("mqtt", lambda: {"sent": 7, "dropped": 1, "unsent": 12, "connected": False})
    try:
        with serve(metrics=m) as srv:
            code, headers, body = get(srv.url + "/metrics")
    finally:
        pub.close(0)
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    s = samples(body.decode())
    assert s[("cezsar_frames_in_total", (("stream", "cam1"),))] == 3
    assert s[("cezsar_frames_in_total", (("stream", "cam2"),))] == 5
    assert s[("cezsar_frames_dropped_total", (("stream", "cam1"),))] == 1
    assert s[("cezsar_frames_encoded_total", (("stream", "cam1"),))] == 2
    assert s[("cezsar_window_latency_seconds_count", (("stream", "cam1"),))] == 3
    assert s[("cezsar_window_latency_seconds_bucket", (("le", "0.005"), ("stream", "cam1")))] == 1
    assert s[("cezsar_window_latency_seconds_bucket", (("le", "0.05"), ("stream", "cam1")))] == 2
    assert s[("cezsar_window_latency_seconds_bucket", (("le", "+Inf"), ("stream", "cam1")))] == 3
    assert abs(s[("cezsar_window_latency_seconds_sum", (("stream", "cam1"),))] - 0.234) < 1e-9
    assert s[("cezsar_events_total", (("action", "moving left"), ("stream", "cam1")))] == 2
    assert s[("cezsar_actions", ())] == 4
    info = (("backend", "onnxruntime-cpu"), ("precision", "fp32"), ("version", "0.1.0"))
    assert s[("cezsar_runtime_info", info)] == 1
    assert s[("cezsar_sink_messages_total", (("outcome", "sent"), ("sink", "zmq")))] == 1
    assert s[("cezsar_sink_messages_total", (("outcome", "unsent"), ("sink", "mqtt")))] == 12
    assert s[("cezsar_sink_connected", (("sink", "mqtt"),))] == 0
    # its own registry: nothing leaked into prometheus_client's global one, and a second instance is fine
    assert REGISTRY.get_sample_value("cezsar_frames_in_total", {"stream": "cam1"}) is None
    assert samples(Metrics(process=False).render()[0].decode()).get(("cezsar_actions", ())) == 0


def test_token_guards_everything_but_healthz(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "cam1").mkdir(parents=True)
    (media / "cam1" / "e1.jpg").write_bytes(b"\xff\xd8jpeg")
    with serve(metrics=Metrics(process=False), token="t0ken", media_dir=media) as srv:
        assert get(srv.url + "/healthz")[0] == 200
        for path in ("/readyz", "/metrics", "/media/cam1/e1.jpg"):
            code, headers, _ = get(srv.url + path)
            assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert get(srv.url + path, token="wrong")[0] == 401
            assert get(srv.url + path, token="t0ken")[0] == 200, path
        assert get(srv.url + "/media/cam1/e1.jpg", token="t0ken")[2] == b"\xff\xd8jpeg"
        assert get(srv.url + "/media/../../etc/passwd", token="t0ken")[0] in (403, 404)


def test_browser_token_as_cookie_or_query() -> None:
    """A browser cannot set headers on <img> or EventSource: the cookie (or ?token= once) stands in."""
    with serve(metrics=Metrics(process=False), token="t0ken") as srv:

        def code(path: str, cookie: str | None = None) -> int:
            req = urllib.request.Request(srv.url + path)
            if cookie is not None:
                req.add_header("Cookie", f"cezsar_token={cookie}")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return int(e.code)

        assert code("/readyz") == 401
        assert code("/readyz", cookie="t0ken") == 200 and code("/readyz", cookie="wrong") == 401
        assert code("/readyz?token=t0ken") == 200 and code("/readyz?token=wrong") == 401
        assert code("/readyz?token=") == 401 and code("/readyz", cookie="") == 401


def test_non_loopback_without_token_refuses_to_start() -> None:
    with pytest.raises(CezsarError, match=r"0\.0\.0\.0:8080: listening beyond this machine needs a token"):
        HttpServer("0.0.0.0", 8080)
    assert "\n" not in str(pytest.raises(CezsarError, HttpServer, "192.168.1.10", 80).value)
    HttpServer("0.0.0.0", 0, token="x")  # allowed with a token (not started)
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("")


def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(CezsarError, match=rf"http 127\.0\.0\.1:{port}: cannot listen"):
            HttpServer("127.0.0.1", port).start()


def test_grafana_dashboard_queries_exported_metrics() -> None:
    import re

    dash = json.loads((Path(__file__).resolve().parents[1] / "examples" / "grafana-dashboard.json").read_text())
    m = Metrics()
    m.frame_in("a")
    m.frame_dropped("a")
    m.frame_encoded("a")
    m.window_latency(0.1, "a")
    m.event("a", "x")
    m.set_info("b", "fp32")
    m.watch_sink("s", lambda: {"sent": 1, "connected": True})
    exported = {s.name for fam in text_string_to_metric_families(m.render()[0].decode()) for s in fam.samples}
    queried = {
        name
        for panel in dash["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:cezsar|process)_[a-z_]+)\{", target["expr"])
    }
    assert len(queried) >= 8 and queried <= exported, queried - exported
