"""Subscribers that are slow, absent, late or come and go; SIGTERM and Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import zmq

from edge.client import Subscriber
from tests.helpers.collect import Collector
from tests.helpers.net import free_port
from tests.helpers.procs import RunProcess, actions_yaml, rss_kib, run_args
from tests.helpers.video import write_video

LONG_NAME = "a-rather-long-action-name-to-make-big-messages-{:02d}"


def test_stalled_subscriber_never_blocks_the_runtime(tmp_path: Path, deploy: Path) -> None:
    """Subprocess, ``--no-realtime`` (as fast as it goes), 60 actions (big ``scores`` messages),
    ``--hwm 100``. One subscriber connects and never reads (tiny kernel buffer); another reads
    everything. The runtime processes the whole file and exits by itself, the reader gets every
    message, the stalled one got only what its bounded queues held, and the runtime's memory does
    not grow with the backlog it refused to keep."""
    video = write_video(tmp_path / "v.avi", 2400)
    actions = tmp_path / "actions.yaml"
    lines = ["actions:"] + [f"  - {{name: {LONG_NAME.format(i)}, descriptions: a shape moving}}" for i in range(60)]
    actions.write_text("\n".join(lines) + "\n")
    pub = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(pub)
    col = Collector(pub)
    args = run_args(deploy, [f"v={video}"], actions, pub, None, "--no-realtime", "--fps", "8", "--hop", "1")
    rt = RunProcess([*args, "--hwm", "100", "--status-interval", "0.2"], tmp_path / "log")
    rss: list[int] = []
    try:
        col.wait("status", lambda d: True, 60)
        rss0 = rss_kib(rt.proc.pid)
        deadline = time.time() + 120
        while rt.alive() and time.time() < deadline:
            try:
                rss.append(rss_kib(rt.proc.pid))
            except (OSError, AssertionError):
                break
            time.sleep(0.05)
        assert rt.wait(10) == 0, rt.log()[-2000:]
        final = col.wait("status", lambda d: d["final"], 30)  # the reader may lag on a busy machine
    finally:
        rt.kill()
        col.close()
    published = final["publisher"]["sent"]
    scores = [d for d in col.of("scores")]
    assert final["inference"]["windows"] >= 2300
    # the reader kept up (PUB/SUB may lose the first messages while the connection is set up)
    assert len(scores) >= 0.8 * final["inference"]["windows"], (len(scores), final["inference"]["windows"])
    assert scores[-1]["window"]["last_index"] == max(d["window"]["last_index"] for d in scores)
    n = 0
    while stalled.poll(300):
        stalled.recv()
        n += 1
    stalled.close(0)
    volume = sum(len(str(d)) for d in scores)
    assert volume > 20_000_000  # far more than the stalled queues can hold ...
    assert n < 0.5 * published, (n, published)  # ... so the stalled subscriber missed most
    print(f"published {published}, reader {len(scores)} scores, stalled {n}, {volume / 2**20:.1f} MiB")
    growth_mib = (max(rss) - rss0) / 1024
    print(f"RSS {rss0 / 1024:.1f} MiB at the first status, max {max(rss) / 1024:.1f} MiB")
    assert growth_mib < 8, f"RSS grew {growth_mib:.1f} MiB while {volume / 2**20:.1f} MiB were published"


def test_late_absent_and_reconnecting_subscribers(tmp_path: Path, deploy: Path, long_video: Path) -> None:
    """Subprocess, real time, status every 1 s. With nobody listening the runtime runs on; a
    subscriber that joins late, and each of several that disconnect and reconnect, receives the next
    status within one period."""
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml(["moving"]))
    pub = f"tcp://127.0.0.1:{free_port()}"
    rt = RunProcess(
        run_args(deploy, [f"v={long_video}"], actions, pub, None, "--status-interval", "1"), tmp_path / "log"
    )
    try:
        rt.wait_log("publish: ", 60)
        time.sleep(2.5)  # nobody listens for a while
        assert rt.alive()
        uptimes = []
        for _ in range(4):
            with Subscriber(pub, ["status"]) as sub:
                t0 = time.monotonic()
                msg = sub.recv(3.0)
                waited = time.monotonic() - t0
            assert msg is not None and msg.type == "status"
            assert waited <= 1.0 + 0.75, waited  # one period (+ connection setup on a busy machine)
            uptimes.append(msg.data["uptime"])
            time.sleep(0.3)
        assert uptimes[0] >= 2.5 and uptimes == sorted(uptimes)
        assert rt.alive()
    finally:
        rt.kill()


class HangingCamera:
    """An 'IP camera' that accepts, sends the HTTP header of an MJPEG stream and then nothing: the
    reader thread sits in a blocking network read (as with a camera that froze)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.halt = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.halt.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
            self.conns.append(c)

    def close(self) -> None:
        self.halt.set()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_closes_events_publishes_final_status_exits_0_fast(
    sig: signal.Signals, tmp_path: Path, deploy: Path, long_video: Path
) -> None:
    """Subprocess with an open event and a camera stuck in a network read. On the signal: the event
    ends (``shutdown``), a final status (``final: true``, ``state`` = the signal) is published, the
    process exits 0 within 2 s."""
    hang = HangingCamera()
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml(["moving"], always=True))
    pub = f"tcp://127.0.0.1:{free_port()}"
    col = Collector(pub)
    sources = [f"v={long_video}", f"frozen=http://127.0.0.1:{hang.port}/video.mjpg"]
    rt = RunProcess(run_args(deploy, sources, actions, pub, None, "--status-interval", "0.5"), tmp_path / "log")
    try:
        start = col.wait("event", lambda d: d["phase"] == "start" and d["stream"] == "v", 40)
        code, seconds = rt.signal(sig, timeout=10)
        time.sleep(0.3)
    finally:
        rt.kill()
        col.close()
        hang.close()
    assert code == 0, rt.log()[-2000:]
    print(f"{sig.name}: exited {code} after {seconds:.2f} s")
    assert seconds < 2.0, seconds
    ends = [d for d in col.of("event") if d["id"] == start["id"] and d["phase"] == "end"]
    assert len(ends) == 1 and ends[0]["reason"] == "shutdown"
    finals = [d for d in col.of("status") if d["final"]]
    assert len(finals) == 1
    assert finals[0]["state"] == sig.name and finals[0]["events"]["open"] == 0
    assert f"stopped ({sig.name})" in rt.log()
