"""The same history on a real PostgreSQL server (Debian's postgresql, started here on a loopback port):
a live run writes to it with the password from an environment variable, which never shows in the
status or the log; search and the exact backtest work there as on SQLite; two writers (two edge boxes)
share one history."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.history import DIM, aset, result, unit
from tests.helpers.models import deploy_dir
from tests.helpers.net import free_port
from tests.helpers.postgres import PASSWORD, PostgresServer, running_postgres
from tests.helpers.procs import actions_doc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


def test_live_run_search_and_exact_backtest_on_postgres(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cezsar.data.synthetic import IDLE, motion_descriptions, render_stream
    from edge.actions import load_actions
    from edge.history.service import deploy_service
    from edge.history.store import open_store
    from edge.history.url import history_url
    from edge.runtime import Runtime
    from edge.settings import load_settings

    caplog.set_level(logging.INFO)
    render_stream(tmp_path / "cam.mp4", [("staying still", 4.0), ("moving left", 8.0), ("staying still", 6.0)], seed=9)
    (tmp_path / "actions.yaml").write_text(actions_doc(["moving left", "spinning"]))
    monkeypatch.setenv("PG_HISTORY_PASSWORD", PASSWORD)
    site = tmp_path / "site.yaml"
    site.write_text(
        f"deploy: {deploy_dir()}\nactions: actions.yaml\nsources:\n  - name: cam\n    url: cam.mp4\n"
        f"history:\n  url: {postgres.url_without_password}\n  password_env: PG_HISTORY_PASSWORD\n"
    )
    s = load_settings(
        site,
        {
            "realtime": False,
            "pub": f"tcp://127.0.0.1:{free_port()}",
            "control": "none",
            "events_log": str(tmp_path / "events.jsonl"),
        },
    )
    rt = Runtime(s)
    assert rt.run() == 0
    status = json.dumps(rt.status(final=True))
    i = status.find(PASSWORD)
    assert i < 0, status[max(0, i - 300) : i + 50]
    assert "postgresql://cezsar:***@127.0.0.1" in status
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    h = rt.status(final=True)["outputs"]["history"]
    assert h["connected"] and h["dropped"] == 0 and h["written"]["windows"] > 20
    live = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    want = [(e["action"], e["start"], e["end"], e["peak"]) for e in live if e["phase"] == "end"]
    assert want

    store = open_store(history_url(postgres.url_without_password, PASSWORD))
    svc = deploy_service(store, deploy_dir(), background=motion_descriptions(IDLE))
    out = svc.backtest(load_actions(tmp_path / "actions.yaml"), since=None)
    assert [(e["action"], e["start"], e["end"], e["peak"]) for e in out["events"]] == want
    found = svc.search("something moves to the left", since=None, limit=3)
    assert found["moments"][0]["event"]["action"] == "moving left"
    page = svc.events(action="moving left")
    assert page["total"] == sum(1 for w in want if w[0] == "moving left") == 1
    store.close()


def test_two_boxes_write_one_history(postgres: PostgresServer) -> None:
    from edge.history.store import open_store
    from edge.history.url import history_url
    from edge.history.writer import HistoryWriter

    rng = np.random.default_rng(4)
    model = "two-boxes-model-" + "0" * 48
    boxes = [HistoryWriter(history_url(postgres.url), model, DIM).start() for _ in range(2)]
    a = aset("fall")
    for i, e in enumerate(unit(rng, 200)):
        boxes[i % 2].window(result(f"box{i % 2}-cam", float(i), e, {"fall": 0.1}), a)
    for b in boxes:
        b.close()
    store = open_store(postgres.url)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT s.name, count(*) FROM windows w JOIN streams s ON s.id = w.stream_id "
            "JOIN models m ON m.id = w.model_id WHERE m.hash = %(h)s GROUP BY s.name ORDER BY s.name",
            {"h": model},
        ).all()
        scorings = conn.exec_driver_sql(
            "SELECT count(*) FROM scorings WHERE model_id = (SELECT id FROM models WHERE hash = %(h)s)", {"h": model}
        ).scalar()
    store.close()
    assert [tuple(r) for r in rows] == [("box0-cam", 100), ("box1-cam", 100)]
    assert scorings == 1  # the same action set, one row, whoever wrote it first
