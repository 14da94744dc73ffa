"""History faults, each on the real thing and each losing nothing already committed: ``kill -9`` of a
process mid-write (the file opens again, at most the last second of windows is lost); a full disk (a
real tmpfs filled to the last byte: counted and logged, recognition goes on, writes resume once there
is room); PostgreSQL stopped and started again mid-run (writes resume, the gap is counted)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.history.store import open_store
from edge.history.url import history_url
from edge.history.writer import HistoryWriter
from tests.helpers.history import DIM, MODEL, aset, result, unit
from tests.helpers.net import wait_until
from tests.helpers.postgres import PostgresServer, running_postgres
from tests.helpers.procs import ROOT

pytestmark = pytest.mark.slow

CHILD = r"""
import sys, time, numpy as np
from edge.history.url import history_url
from edge.history.writer import HistoryWriter
from tests.helpers.history import DIM, MODEL, aset, result, unit
w = HistoryWriter(history_url(sys.argv[1]), MODEL, DIM).start()
a, rng, n = aset("fall"), np.random.default_rng(0), 0
e = unit(rng, 64)
log = open(sys.argv[2], "a", buffering=1)
t0 = time.time()
while True:  # ~400 windows/s, each one's number and when it was handed over
    for _ in range(20):
        w.window(result("cam", time.time() - t0, e[n % 64], {"fall": 0.1}), a)
        n += 1
    log.write(f"{time.time()} {n}\n")
    time.sleep(0.05)
"""


def test_kill_9_mid_write_loses_at_most_the_last_second(tmp_path: Path) -> None:
    db, progress = tmp_path / "h.sqlite", tmp_path / "progress.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(progress)], env=env, cwd=ROOT)
    try:
        wait_until(lambda: progress.exists() and len(progress.read_text().splitlines()) > 40, 60, "the writer")
        time.sleep(1.0)
    finally:
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    handed = [(float(t), int(n)) for t, n in (x.split() for x in progress.read_text().splitlines() if x.strip())]
    due = max(n for t, n in handed if t <= killed_at - 1.0)
    open_store(db).close()  # opens again (WAL recovery), schema intact
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = con.execute("SELECT count(*) FROM windows").fetchone()[0]
    assert kept >= due, (kept, due, handed[-1])
    con.close()


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB tmpfs (root only), unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> Path:
    """Take every free byte of the file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_is_counted_logged_and_writes_resume(tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    db = tiny_disk / "h.sqlite"
    w = HistoryWriter(history_url(db), MODEL, DIM, capacity=200, encoding="fp16").start()
    a, e = aset("fall"), unit(rng, 50)
    for i in range(50):
        w.window(result("cam", float(i), e[i], {"fall": 0.1}), a)
    wait_until(lambda: w.written["windows"] == 50, 20, "the first windows")
    filler = _fill(tiny_disk)
    t0, slowest = time.perf_counter(), 0.0
    for i in range(2000):  # the main loop's side: never waits on the full disk
        t = time.perf_counter()
        w.window(result("cam", 50.0 + i, e[i % 50], {"fall": 0.1}), a)
        slowest = max(slowest, time.perf_counter() - t)
        if i % 100 == 0:
            time.sleep(0.05)
    assert slowest < 0.05 and time.perf_counter() - t0 < 20
    wait_until(lambda: w.failed_writes > 0, 20, "a failed write")
    st = w.stats()
    assert not st["connected"] and st["dropped"] > 0 and st["gap_windows"] > 0
    assert "full" in (st["error"] or "").lower() or "space" in (st["error"] or "").lower(), st["error"]
    assert any("store down" in r.getMessage() for r in caplog.records)
    filler.unlink()  # room again: the batch in hand and the queue are written
    wait_until(lambda: w.connected and w.queue.qsize() == 0, 30, "writes to resume")
    w.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = con.execute("SELECT count(*) FROM windows").fetchone()[0]
    assert kept == w.written["windows"] and kept >= 50 + 200  # the first 50, then at least the queue's worth
    assert kept + w.dropped["windows"] == 2050
    con.close()


def test_runtime_goes_on_with_its_history_on_a_full_disk(tiny_disk: Path, tmp_path: Path) -> None:
    from cezsar.data.synthetic import render_stream
    from edge.runtime import Runtime
    from edge.settings import settings_from
    from tests.helpers.models import deploy_dir
    from tests.helpers.procs import actions_doc

    render_stream(tmp_path / "cam.mp4", [("staying still", 4.0), ("moving left", 8.0), ("staying still", 4.0)], seed=3)
    (tmp_path / "actions.yaml").write_text(actions_doc(["moving left"]))
    open_store(tiny_disk / "h.sqlite").close()
    filler = _fill(tiny_disk)
    s = settings_from(
        deploy=str(deploy_dir()),
        source=[f"cam={tmp_path / 'cam.mp4'}"],
        actions=str(tmp_path / "actions.yaml"),
        realtime=False,
        pub="tcp://127.0.0.1:0",
        control="none",
        history=str(tiny_disk / "h.sqlite"),
        events_log=str(tmp_path / "events.jsonl"),
    )
    rt = Runtime(s)
    assert rt.run() == 0
    final = rt.status(final=True)
    assert final["inference"]["windows"] > 20  # recognition went on
    assert any(json.loads(x)["phase"] == "start" for x in (tmp_path / "events.jsonl").read_text().splitlines())
    h = final["outputs"]["history"]
    assert h["failed_writes"] > 0 and h["error"], h
    filler.unlink()
    con = sqlite3.connect(tiny_disk / "h.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


@pytest.fixture()
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


def test_postgres_stopped_and_restarted_mid_run(postgres: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    w = HistoryWriter(history_url(postgres.url), MODEL, DIM, capacity=100).start()
    a, e = aset("fall"), unit(rng, 64)
    stop = threading.Event()
    fed = [0]

    def feed() -> None:  # 200 windows/s, as a main loop would hand them over
        while not stop.is_set():
            for _ in range(10):
                w.window(result("cam", time.time(), e[fed[0] % 64], {"fall": 0.2}), a)
                fed[0] += 1
            time.sleep(0.05)

    t = threading.Thread(target=feed)
    t.start()
    try:
        wait_until(lambda: w.written["windows"] > 200, 30, "writes before the outage")
        before = w.written["windows"]
        postgres.stop("immediate")
        postgres.wait_down()
        wait_until(lambda: not w.connected, 30, "the outage to be seen")
        time.sleep(2.0)  # the queue (100) fills: the rest is the gap
        postgres.start()
        wait_until(lambda: w.connected and w.written["windows"] > before + 200, 60, "writes to resume")
    finally:
        stop.set()
        t.join()
    w.close()
    st = w.stats()
    assert st["outages"] == 1 and st["gap_windows"] > 0 and st["unsent"] == 0
    assert st["written"]["windows"] + st["dropped_by_kind"]["windows"] == fed[0]
    assert any("store down" in r.getMessage() for r in caplog.records)
    assert all("pg-test-secret" not in r.getMessage() for r in caplog.records)
    store = open_store(postgres.url)
    with store.engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM windows").scalar()
    store.close()
    assert n == st["written"]["windows"]
