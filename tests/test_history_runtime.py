"""The history with the real runtime and the real (test) model on rendered streams, real SQLite files:
events and windows kept by ``cezsar run --history``, surviving a restart and served over HTTP; the
backtest of the live action set gives back exactly the live events; search finds a planted moment
first among other windows; ``cezsar index`` resumes; another model's windows are refused."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cezsar.errors import CezsarError
from tests.helpers.models import deploy_dir
from tests.helpers.net import free_port
from tests.helpers.procs import ROOT, actions_doc

pytestmark = pytest.mark.slow

PLAN = [
    ("staying still", 4.0),
    ("spinning", 8.0),
    ("staying still", 4.0),
    ("moving left", 8.0),
    ("staying still", 6.0),
]


def _settings(tmp: Path, video: Path, history: Path, **kw: Any) -> Any:
    from edge.settings import settings_from

    return settings_from(
        deploy=str(deploy_dir()),
        source=[f"cam={video}"],
        actions=str(tmp / "actions.yaml"),
        realtime=False,
        pub=f"tcp://127.0.0.1:{free_port()}",
        control="none",
        history=str(history),
        history_thumbnails="2s",
        **kw,
    )


def _service(history: Path, background: list[str] | None = None) -> Any:
    from edge.history.service import deploy_service
    from edge.history.store import open_store

    return deploy_service(open_store(history), deploy_dir(), background=background or [])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One live run with the history on: its events log is the reference."""
    from cezsar.data.synthetic import render_stream
    from edge.runtime import Runtime

    tmp = tmp_path_factory.mktemp("live")
    video = tmp / "cam.mp4"
    render_stream(video, PLAN, seed=21)
    (tmp / "actions.yaml").write_text(actions_doc(["moving left", "spinning"]))
    history = tmp / "history.sqlite"
    rt = Runtime(_settings(tmp, video, history, events_log=str(tmp / "events.jsonl")))
    assert rt.run() == 0
    status = rt.status(final=True)["outputs"]["history"]
    live_events = [json.loads(x) for x in (tmp / "events.jsonl").read_text().splitlines()]
    yield {"tmp": tmp, "video": video, "history": history, "events": live_events, "status": status}


def test_live_run_keeps_every_window_and_event(live: dict[str, Any]) -> None:
    st = live["status"]
    assert st["connected"] and st["dropped"] == 0 and st["unsent"] == 0
    con = sqlite3.connect(live["history"])
    windows = con.execute("SELECT count(*) FROM windows").fetchone()[0]
    assert windows == st["written"]["windows"] > 40
    ends = [e for e in live["events"] if e["phase"] == "end"]
    stored = con.execute('SELECT id, action, start, "end", peak, reason FROM events ORDER BY start').fetchall()
    assert [(e["id"], e["action"], e["start"], e["end"], e["peak"], e["reason"]) for e in ends] == stored
    phases = con.execute("SELECT count(*) FROM event_phases").fetchone()[0]
    assert phases == len(live["events"])
    assert con.execute("SELECT count(*) FROM thumbnails").fetchone()[0] >= 10
    con.close()


def test_backtest_of_the_live_actions_gives_back_the_live_events(live: dict[str, Any]) -> None:
    from edge.actions import load_actions

    svc = _service(live["history"])
    aset = load_actions(live["tmp"] / "actions.yaml")
    out = svc.backtest(aset, since=None)
    assert out["replayed"] == ["moving left", "spinning"] and out["rescored"] == []
    want = [(e["action"], e["start"], e["end"], e["peak"], e["reason"]) for e in live["events"] if e["phase"] == "end"]
    got = [(e["action"], e["start"], e["end"], e["peak"], e["reason"]) for e in out["events"]]
    assert want and got == want
    # a decision setting edited: still the stored scores, different events
    doc = yaml.safe_load((live["tmp"] / "actions.yaml").read_text())
    (live["tmp"] / "strict.yaml").write_text(yaml.safe_dump({**doc, "defaults": {"threshold": 0.95}}))
    strict = svc.backtest(load_actions(live["tmp"] / "strict.yaml"), since=None, per_day=1.0)
    assert strict["replayed"] == ["moving left", "spinning"]
    assert strict["count"]["spinning"] == 0 and strict["count"]["moving left"] <= 1
    sug = strict["suggestion"]["moving left"]
    assert sug["events"] <= sug["target_per_day"] * out["hours"] / 24 + 1e-9
    # new text: scored again on the stored vectors, by the same Scorer
    edited = svc.backtest_edit(
        aset, {"name": "left2", "descriptions": ["something moves to the left"]}, "moving left", since=None
    )
    # (in place of "moving left": the set is exclusive, the edit's rivals change, so all are scored again;
    # only the edited one is reported)
    assert "left2" in edited["rescored"] and list(edited["count"]) == ["left2"] and edited["count"]["left2"] >= 1
    svc.store.close()


def test_restart_serves_the_stored_history_over_http(live: dict[str, Any], tmp_path: Path) -> None:
    from edge.runtime import Runtime

    (tmp_path / "actions.yaml").write_text((live["tmp"] / "actions.yaml").read_text())
    port = free_port()
    rt = Runtime(_settings(tmp_path, live["video"], live["history"], http=f"127.0.0.1:{port}"))
    rt.start()  # a new process would see the same: the file is all there is
    base = f"http://127.0.0.1:{port}"
    try:
        page = _get(f"{base}/api/history/events?per_page=1")
        assert page["ok"] and page["total"] == 2 and page["pages"] == 2 and len(page["events"]) == 1
        ev = _get(f"{base}/api/history/events?action=spinning")["events"]
        assert [e["action"] for e in ev] == ["spinning"]
        detail = _get(f"{base}/api/history/events/{ev[0]['id']}")
        assert [p["phase"] for p in detail["phases"]][0] == "start" and len(detail["scores"]) > 10
        with urllib.request.urlopen(f"{base}/api/history/thumbnails/{ev[0]['thumbnail']}", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read(2) == b"\xff\xd8"
        found = _get(f"{base}/api/search?q={urllib.parse.quote('something moves to the left')}&since=&limit=3")
        assert found["ok"] and found["moments"][0]["event"]["action"] == "moving left"
        body = {"action": {"name": "spinning", "descriptions": ["something spins"], "threshold": 0.5}, "hours": 24}
        bt = _post(f"{base}/api/history/backtest", body)
        assert bt["ok"] and bt["count"] == {"spinning": 0} and len(bt["sparkline"]["max"]["spinning"]) == 48
        bad = _post(f"{base}/api/history/backtest", {"action": {"name": "x"}, "hours": 24}, expect=400)
        assert "descriptions" in bad["error"] and "\n" not in bad["error"]
        assert _get(f"{base}/api/search?q=", expect=400)["error"] == "search: give a sentence"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:  # its counters, as every sink's
            metrics = r.read().decode()
        assert 'cezsar_sink_connected{sink="history"} 1.0' in metrics
        assert 'sink="history"' in metrics.split("cezsar_sink_messages_total", 1)[1]
    finally:
        rt.close()


def _get(url: str, expect: int = 200) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == expect
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.code == expect, e.read()
        return json.loads(e.read())


def _post(url: str, body: Any, expect: int = 200) -> Any:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == expect
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.code == expect, e.read()
        return json.loads(e.read())


def test_search_finds_a_planted_moment_first(tmp_path: Path) -> None:
    """Footage of other motions, then one file with 6 s of "moving left" at 20 s: the sentence finds it
    first, over the windows of everything else."""
    from cezsar.data.synthetic import IDLE, motion_descriptions, render_stream

    others = [
        [("spinning", 10.0), ("staying still", 10.0), ("moving up", 10.0)],
        [("staying still", 8.0), ("growing", 10.0), ("shaking", 10.0)],
        [("moving down", 10.0), ("staying still", 10.0), ("spinning", 10.0)],
    ]
    for i, plan in enumerate(others):
        render_stream(tmp_path / f"other{i}.mp4", plan, seed=30 + i)
    render_stream(
        tmp_path / "planted.mp4", [("staying still", 20.0), ("moving left", 6.0), ("staying still", 8.0)], seed=7
    )
    history = tmp_path / "h.sqlite"
    _index([str(tmp_path)], history)
    svc = _service(history, motion_descriptions(IDLE))
    out = svc.search("something moves to the left", since=None, limit=5)
    top = out["moments"][0]
    assert out["windows"] > 200
    assert top["file"].endswith("planted.mp4"), out["moments"]
    start, end = top["capture"]
    assert start < 26.0 and end > 20.0, top  # overlaps the planted segment
    svc.store.close()


def _index(paths: list[str], history: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cezsar", "index", *paths, "--history", str(history), "--deploy", str(deploy_dir())]
    proc = subprocess.run([*cmd, "--no-progress", *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_index_resumes_and_skips_what_is_done(live: dict[str, Any], tmp_path: Path) -> None:
    from cezsar.backends.registry import load_backend
    from cezsar.deploy.manifest import load_manifest
    from edge.embedder import WindowEmbedder
    from edge.history.footage import index_footage
    from edge.history.store import open_store

    d = deploy_dir()
    m = load_manifest(d)
    loaded = load_backend("auto", "auto", d, m)
    store = open_store(tmp_path / "h.sqlite")
    done = []

    def stop_after_two(seconds: float) -> None:
        done.append(seconds)
        if len(done) == 3:  # the skip tick, then two committed batches
            raise KeyboardInterrupt

    emb = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, m.window, 2, m.feature_dim)
    with pytest.raises(KeyboardInterrupt):
        index_footage(store, [live["video"]], emb, m, tick=stop_after_two)
    con = sqlite3.connect(tmp_path / "h.sqlite")
    partial = con.execute("SELECT count(*) FROM windows").fetchone()[0]
    assert 0 < partial < 40
    again = index_footage(store, [live["video"]], emb, m)
    assert again["files"] == 1 and again["windows"] > 0
    ends = [r[0] for r in con.execute('SELECT "end" FROM windows ORDER BY "end"')]
    fresh = tmp_path / "fresh.sqlite"
    full = index_footage(open_store(fresh), [live["video"]], emb, m)
    assert len(ends) == len(set(ends)) == full["windows"]  # nothing twice, nothing missing
    assert index_footage(store, [live["video"]], emb, m)["skipped"] == 1
    store.close()
    loaded.close()


def test_windows_of_another_model_are_refused(tmp_path: Path) -> None:
    import numpy as np

    from edge.actions import actions_from_obj
    from edge.history.store import Batch, WindowRow, open_store

    store = open_store(tmp_path / "h.sqlite")
    e = np.ones(8, np.float32) / np.sqrt(8)
    from edge.history.codec import encode_embedding

    rows = [WindowRow("cam", None, 1000.0 + i, i, i + 2.0, encode_embedding(e)) for i in range(5)]
    store.write(Batch(windows=rows), "another-model-hash-0123456789", 8)
    store.close()
    svc = _service(tmp_path / "h.sqlite")
    aset = actions_from_obj({"actions": [{"name": "a", "descriptions": ["something spins"]}]})
    with pytest.raises(CezsarError) as err:
        svc.backtest(aset, since=None)
    assert "5 of model another-mod" in err.value.message and "not comparable" in err.value.message
    assert "\n" not in err.value.message
    svc.store.close()


def test_cli_search_and_backtest_json(live: dict[str, Any]) -> None:
    base = [sys.executable, "-m", "cezsar"]
    common = ["--history", str(live["history"]), "--deploy", str(deploy_dir()), "--since", "", "--json"]
    s = subprocess.run(
        [
            *base,
            "search",
            "something moves to the left",
            *common,
            "--limit",
            "2",
            "--actions",
            str(live["tmp"] / "actions.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert s.returncode == 0, s.stderr
    moments = json.loads(s.stdout)["moments"]
    assert moments[0]["stream"] == "cam" and moments[0]["event"]["action"] == "moving left"
    b = subprocess.run(
        [*base, "actions", "backtest", str(live["tmp"] / "actions.yaml"), *common, "--per-day", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert b.returncode == 0, b.stderr
    out = json.loads(b.stdout)
    assert out["count"] == {"moving left": 1, "spinning": 1} and set(out["suggestion"]) == {"moving left", "spinning"}
    bad = subprocess.run(
        [*base, "search", "x", "--history", str(live["video"]), "--deploy", str(deploy_dir())],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode != 0 and "not an SQLite file" in bad.stderr and "Traceback" not in bad.stderr
