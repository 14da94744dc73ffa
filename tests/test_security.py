"""The runtime as an attacker on 127.0.0.1 meets it (issue 23), every attack against the real parts: a
real Chromium page on another origin, real HTTP requests with forged Host headers and hostile bodies,
the control socket, and a runtime whose camera URL carries a password that must appear nowhere."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.client import ControlClient
from tests.helpers.browser import browser, wait
from tests.helpers.net import free_port
from tests.helpers.video import write_video

pytest.importorskip("aiohttp", reason="aiohttp not installed (pip install 'cezsar[http]')")

SECRET = "S3cretPw-9f2"
TOKEN = "t0ken-for-the-console"
ACTIONS = {"actions": [{"name": "moving", "descriptions": ["a shape moving"]}]}


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), dict(e.headers), e.read()


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def site(request: pytest.FixtureRequest, tmp_path: Path, deploy: Path) -> Iterator[dict[str, Any]]:
    """A runtime with HTTP on loopback (without and with a token), a control socket, and a camera whose
    URL carries a password (nothing listens there: it never connects)."""
    from edge.runtime import Runtime
    from edge.settings import settings_from

    video = write_video(tmp_path / "v.avi", 400)  # 50 s: outlives the test
    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump(ACTIONS))
    control = f"tcp://127.0.0.1:{free_port()}"
    rt = Runtime(
        settings_from(
            deploy=deploy,
            source=[f"v={video}", f"door=rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/live?token={SECRET}x"],
            actions=actions,
            pub="tcp://127.0.0.1:*",
            control=control,
            http="127.0.0.1:0",
            http_token=request.param,
            status_interval=0.3,
            events_log=tmp_path / "events.jsonl",
        )
    )
    t = threading.Thread(target=rt.run, daemon=True)
    rt.start()
    t.start()
    try:
        yield {"rt": rt, "base": rt.http.url, "control": control, "actions": actions, "token": request.param}
    finally:
        rt.stop()
        t.join(20)


def _auth(site: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {site['token']}"} if site["token"] else {}


class Attacker:
    """A page on another origin (another port of 127.0.0.1) that tries every write a page can make."""

    def __init__(self, target: str) -> None:
        self.port = free_port()
        body = f"""<!doctype html><html><body><form id=f method=post action="{target}/sources" enctype="text/plain">
<input name='{{"source": "evil' value='rtsp://attacker/x"}}'></form><script>
const t = "{target}";
const act = JSON.stringify({{op: "add", action: {{name: "pwned", descriptions: ["owned"]}}}});
const tries = [
  fetch(t + "/console/api/actions", {{method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"Content-Type": "text/plain"}}, body: act}}),
  fetch(t + "/console/api/actions", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/json", "X-Cezsar-Request": "1"}}, body: act}}),
  fetch(t + "/sources", {{method: "POST", mode: "no-cors", credentials: "include",
    body: JSON.stringify({{source: "evil2=rtsp://attacker/y"}})}}),
  fetch(t + "/sources/v", {{method: "DELETE", mode: "no-cors", credentials: "include"}}),
];
Promise.allSettled(tries).then(() => {{ document.title = "done"; document.getElementById("f").submit(); }});
</script></body></html>""".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_page_on_another_origin_cannot_write(site: dict[str, Any], tmp_path: Path) -> None:
    """Without a token (the default loopback setup) and with one (the page's browser holds the console's
    SameSite cookie, which another port of the same host still gets): nothing is added or removed."""
    attacker = Attacker(site["base"])
    driver = browser(tmp_path / "chromium")
    try:
        if site["token"]:
            driver.get(f"{site['base']}/console/?token={site['token']}")  # the operator logged in earlier
            assert "token" not in driver.current_url
        driver.get(f"http://127.0.0.1:{attacker.port}/")
        wait(lambda: driver.title == "done" or "error" in driver.page_source, 20, "the attack page to finish")
        time.sleep(1.0)
    finally:
        driver.quit()
        attacker.close()
    with ControlClient(site["control"], timeout=5) as c:
        assert [a["name"] for a in c.list()["actions"]] == ["moving"]
        assert sorted(s["name"] for s in c.request({"op": "sources"})["sources"]) == ["door", "v"]
    assert "pwned" not in site["actions"].read_text()


def test_forged_hosts_plain_text_writes_and_frames_are_refused(site: dict[str, Any]) -> None:
    base, auth = site["base"], _auth(site)
    port = base.rsplit(":", 1)[1]
    assert request(base + "/healthz", headers={"Host": f"evil.example:{port}"})[0] == 421  # DNS rebinding
    assert request(base + "/healthz", headers={"Host": f"localhost:{port}"})[0] == 200
    add = json.dumps({"source": "x=rtsp://127.0.0.1:9/x"}).encode()
    code, _, body = request(base + "/sources", add, {**auth, "Content-Type": "text/plain"})
    assert code == 415 and b"application/json" in body
    code, _, body = request(
        base + "/sources", add, {**auth, "Content-Type": "application/json", "Origin": "http://evil.example"}
    )
    assert code == 403 and b"cross-origin" in body
    own = f"http://127.0.0.1:{port}"
    code, _, body = request(base + "/sources", add, {**auth, "Content-Type": "application/json", "Origin": own})
    assert code == 403 and b"X-Cezsar-Request" in body  # a browser write needs the console's header
    for path in ("/healthz", "/console/"):
        _, headers, _ = request(base + path, headers=auth)
        assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert request(base + "/", headers=auth)[0] == 200  # / leads to the console (redirect followed)


HOSTILE = {
    "a 5,000-digit integer": b'{"source": ' + b"9" * 5000 + b"}",
    "deep JSON": b"[" * 100_000 + b"]" * 100_000,
    "a 900 KB source string": json.dumps({"source": "x=rtsp://h/" + "a" * 900_000}).encode(),
    "not UTF-8": b'{"source": "\xff\xfe"}',
}


def test_hostile_bodies_get_400_with_one_line_and_the_runtime_goes_on(site: dict[str, Any]) -> None:
    base, auth = site["base"], {**_auth(site), "Content-Type": "application/json"}
    for what, body in HOSTILE.items():
        for path in ("/sources", "/console/api/actions", "/console/api/try"):
            code, _, answer = request(base + path, body, auth)
            assert code in (400, 413), (what, path, code, answer[:200])
            if code == 400:
                error = json.loads(answer)["error"]
                assert "\n" not in error and "Traceback" not in error and len(error) < 300, (what, path, error)
        with ControlClient(site["control"], timeout=5) as c:
            reply = c.request_raw(body[:60_000])
            assert reply["ok"] is False and "\n" not in reply["error"], (what, reply)
    assert request(base + "/healthz")[0] == 200
    with ControlClient(site["control"], timeout=5) as c:
        assert c.ping()["ok"]


def test_files_cannot_be_added_while_running_without_runtime_files(site: dict[str, Any], tmp_path: Path) -> None:
    video = write_video(tmp_path / "elsewhere.avi", 20)
    base, auth = site["base"], {**_auth(site), "Content-Type": "application/json"}
    for text in (f"x=file://{video}", f"x={video}", "x=file:///etc/passwd", "x=/etc/passwd"):
        code, _, answer = request(base + "/sources", json.dumps({"source": text}).encode(), auth)
        assert code == 400 and "--runtime-files" in json.loads(answer)["error"], (text, answer)
        with ControlClient(site["control"], timeout=5) as c:
            reply = c.request({"op": "add_source", "source": text}, check=False)
            assert not reply["ok"] and "--runtime-files" in reply["error"]
    code, _, answer = request(base + "/sources", json.dumps({"source": "x=ftp://cam/x"}).encode(), auth)
    assert code == 400 and "ftp:// cannot be added" in json.loads(answer)["error"]
