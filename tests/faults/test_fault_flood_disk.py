"""Two faults of a site left running: a flood of half-open HTTP connections under a lowered file limit,
and a full disk under the media folder and the events log (a real tmpfs, mounted by the test)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from edge.client import ControlClient
from tests.helpers.collect import Collector
from tests.helpers.net import free_port, wait_until
from tests.helpers.procs import ALWAYS, ROOT
from tests.helpers.video import write_video

pytest.importorskip("aiohttp", reason="aiohttp not installed (pip install 'cezsar[http]')")
FD_LIMIT = 256
FREE = 40 * 1024  # what the user's file leaves of the 1 MiB tmpfs


def _healthz(base: str, timeout: float = 3.0) -> int:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=timeout) as r:
            return int(r.status)
    except OSError:
        return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_a_flood_of_half_open_connections_under_a_low_file_limit(tmp_path: Path, deploy: Path) -> None:
    """1,100 connections that send nothing or half a request, against a runtime limited to 256 file
    descriptors: /healthz still answers, the control socket answers, events and media go on, the
    silent connections are closed after the head timeout, and the log stays small."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f"the test process needs 2048 file descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    video = write_video(tmp_path / "v.avi", 480)
    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump({"defaults": {**ALWAYS, "threshold": 0.0}, "actions": [
        {"name": "moving", "descriptions": ["a shape moving"]}]}))  # fmt: skip
    http, pub, control = free_port(), f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "cezsar", "run", "--deploy", str(deploy), "--actions", str(actions),
           "--source", f"v={video}", "--pub", pub, "--control", control, "--http", f"127.0.0.1:{http}",
           "--http-header-timeout", "2", "--media", str(tmp_path / "media")]  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("w") as out:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=_limit_fds)
    base = f"http://127.0.0.1:{http}"
    flood: list[socket.socket] = []
    col = Collector(pub)
    try:
        wait_until(lambda: _healthz(base) == 200, 60, "the runtime's HTTP server")
        before = _fds(proc.pid)
        for i in range(1100):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", http))
            except BlockingIOError:
                pass
            if i % 10 == 0:
                try:
                    s.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a request head
                except OSError:
                    pass
            flood.append(s)
        t0 = time.time()
        assert _healthz(base) == 200  # a real request gets through the flood
        with ControlClient(control, timeout=5) as c:
            assert c.ping()["ok"]
        assert _fds(proc.pid) < FD_LIMIT - 32  # the cap and the accept batch keep descriptors in reserve
        wait_until(lambda: any(m["type"] == "status" for m in col.of("status")), 10, "a status during the flood")
        # past the head timeout the server has closed every silent connection it accepted (those the
        # kernel's full backlog dropped never reached it): its descriptors are back near where they were
        wait_until(lambda: _fds(proc.pid) <= before + 16, 20, "the runtime to close the silent connections")
        assert _healthz(base) == 200 and time.time() - t0 < 60
    finally:
        for s in flood:
            s.close()
        proc.terminate()
        proc.wait(30)
        col.close()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert log.stat().st_size < 200_000, f"the flood wrote {log.stat().st_size} bytes of log"
    assert "Traceback" not in text and "Too many open files" not in text
    assert list((tmp_path / "media").rglob("*.mp4"))  # the shutdown's media were written: fds were left


@pytest.fixture()
def full_disk(tmp_path: Path) -> object:
    """A 1 MiB tmpfs, all but FREE bytes filled by a user's file that is not cezsar's."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        (mnt / "cam").mkdir()
        filler = mnt / "cam" / "wedding.mp4"
        with filler.open("wb") as f:
            f.write(os.urandom(1024 * 1024 - FREE))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_is_counted_and_leaves_nothing_half_written(full_disk: Path, tmp_path: Path, deploy: Path) -> None:
    """Events keep coming while the media folder and the events log sit on a full disk: every event line
    on disk is whole, no snapshot lacks its clip, the user's file is untouched, the runtime exits 0."""
    from edge.runtime import Runtime
    from edge.settings import settings_from

    videos = [write_video(tmp_path / f"v{i}.avi", 24) for i in range(6)]
    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump({"defaults": ALWAYS, "actions": [{"name": "moving", "descriptions": ["a"]}]}))
    rt = Runtime(
        settings_from(
            deploy=deploy,
            source=[f"v{i}={v}" for i, v in enumerate(videos)],
            actions=actions,
            pub="tcp://127.0.0.1:*",
            control="none",
            realtime=False,
            media=full_disk,
            media_pre_roll="0.5",
            events_log=full_disk / "events.jsonl",
        )
    )
    assert rt.run() == 0
    status = rt.status()
    assert status["events"]["total"] == 6  # one per video, recognised whatever the disk said
    media = status["outputs"]["media"]
    assert media["errors"] >= 1 and media["written"] + media["errors"] == 6
    for line in (full_disk / "events.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only
    for jpg in full_disk.rglob("*.jpg"):
        assert jpg.with_suffix(".mp4").is_file(), f"{jpg.name} without its clip"
    assert (full_disk / "cam" / "wedding.mp4").stat().st_size == 1024 * 1024 - FREE
