"""Sources added and removed while the runtime runs: over the control socket and over HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from cezsar.errors import CezsarError
from edge.client import ControlClient, ControlError, Subscriber
from edge.runtime import Runtime
from edge.settings import settings_from
from tests.helpers.models import deploy_dir


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cezsar.data.synthetic import render_stream

    d = tmp_path_factory.mktemp("live")
    render_stream(d / "long.mp4", [("staying still", 1.0), ("moving left", 3.0), ("staying still", 6.0)], seed=3)
    render_stream(d / "extra.mp4", [("staying still", 0.5), ("moving left", 3.0), ("staying still", 1.0)], seed=5)
    return d


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def test_add_and_remove_sources_while_running(tmp_path: Path, folder: Path) -> None:
    actions = tmp_path / "actions.yaml"
    actions.write_text(
        yaml.safe_dump(
            {"background": ["a shape staying still"], "actions": [{"name": "left", "descriptions": "moving left"}]}
        )
    )
    cfg = settings_from(
        deploy=deploy_dir(),
        source=[f"main={folder / 'long.mp4'}"],
        actions=actions,
        pub="tcp://127.0.0.1:*",
        control="tcp://127.0.0.1:*",
        realtime=True,
        status_interval=0.2,
        http="127.0.0.1:0",
        runtime_files=folder,
    )
    rt = Runtime(cfg)
    assert rt.control is not None and rt.http is not None
    with pytest.raises(CezsarError, match="not running"):
        rt.host.add_source(f"x={folder / 'extra.mp4'}")
    rt.start()  # the HTTP server listens (port known) and the sources start; run() below goes on from here
    sub = Subscriber(rt.publisher.endpoint, ["event.", "scores."])
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            m = sub.recv(0.1)
            if m is not None:
                got.append(m.data)

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(rt.run()), daemon=True)
    runner.start()
    base = rt.http.url
    try:
        with ControlClient(rt.control.endpoint, 15.0) as ctl:
            reply = ctl.request({"op": "add_source", "source": f"extra={folder / 'extra.mp4'}"})
            assert reply["name"] == "extra" and {s["name"] for s in reply["sources"]} == {"main", "extra"}
            with pytest.raises(ControlError, match="exists"):
                ctl.request({"op": "add_source", "source": f"extra={folder / 'extra.mp4'}"})
            with pytest.raises(ControlError, match="--runtime-files"):
                ctl.request({"op": "add_source", "source": f"y={tmp_path / 'actions.yaml'}"})
            with pytest.raises(ControlError, match="GStreamer"):
                ctl.request({"op": "add_source", "source": "g=videotestsrc ! appsink"})
            time.sleep(2.0)
            # over HTTP: list, then remove the added stream while it plays
            code, listed = http("GET", base + "/sources")
            assert code == 200 and {s["name"] for s in listed["sources"]} == {"main", "extra"}
            deadline = time.monotonic() + 10
            while not any(d.get("stream") == "extra" and d["type"] == "event" for d in got):
                assert time.monotonic() < deadline, "the added stream's motion should start an event"
                time.sleep(0.1)
            code, removed = http("DELETE", base + "/sources/extra")
            assert code == 200 and removed["sources"] == ["main"]
            code, err = http("DELETE", base + "/sources/extra")
            assert code == 400 and "no source named" in err["error"]
            code, added = http("POST", base + "/sources", {"source": f"again={folder / 'extra.mp4'}"})
            assert code == 200 and added["name"] == "again"
            reply = ctl.request({"op": "remove_source", "name": "again"})
            assert reply["name"] == "again" and [x["name"] for x in reply["sources"]] == ["main"]
    finally:
        runner.join(60)
        done.set()
        t.join(2)
        sub.close()
    assert result == [0]
    extra = [d for d in got if d.get("stream") == "extra"]
    assert any(d["type"] == "scores" for d in extra)
    ends = [d for d in extra if d["type"] == "event" and d["phase"] == "end"]
    assert ends and ends[-1]["reason"] == "source_removed"
    assert any(d.get("stream") == "main" and d["type"] == "scores" for d in got)  # main never stopped
