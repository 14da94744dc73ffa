"""Load and soak test of the edge runtime: ``cezsar run`` on S streams for N minutes while a churning
set of ZeroMQ subscribers connects, reads a while, disconnects and reconnects (plus one steady
reader, one slow reader and one that never reads), and a control client asks for the status.

    python scripts/soak.py --minutes 10 --streams 4 [--subscribers 4] [--deploy DIR] [--out soak.json]

Prints one JSON object: messages published (the runtime's count) and received (all subscribers),
dropped frames, windows, latency, resident memory (RSS, from /proc) of the runtime at the end of the
warm-up and at the end, its growth in percent, and how long the runtime took to stop on SIGTERM.
The runtime is a subprocess (`python -m cezsar run`), the streams are real-time video files (one
rendered clip long enough for the run), all sockets on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.client import ControlClient, Subscriber

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def render(path: Path, seconds: float, fps: float = 8.0, size: int = 96) -> Path:
    """A square moving around on a noisy background (something for the encoder to look at)."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (size, size))
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    n = int(seconds * fps)
    for i in range(n):
        f = bg.copy()
        a = 2 * np.pi * i / (fps * 6)
        x, y = int(size / 2 + size / 3 * np.cos(a)), int(size / 2 + size / 3 * np.sin(a))
        cv2.rectangle(f, (x - 10, y - 10), (x + 10, y + 10), (40, 200, 240), -1)
        vw.write(f)
    vw.release()
    return path


ACTIONS = """\
version: 1
defaults: {threshold: 0.05, hysteresis: 0.03, min_duration: 1.0, cooldown: 2.0, smoothing: 0.5}
background: [a shape staying still, nothing moves]
actions:
  - name: moving
    descriptions: [a shape moving in a circle, something going around]
  - name: left
    descriptions: a shape moving left
  - name: spinning
    descriptions: a shape spinning in place
"""


class Reader(threading.Thread):
    """One subscriber role: churn (connect, read a while, disconnect, pause), steady, slow or stalled."""

    def __init__(self, endpoint: str, role: str, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True, name=f"sub-{role}-{seed}")
        self.endpoint, self.role, self.stop, self.rng = endpoint, role, stop, random.Random(seed)
        self.received = 0
        self.connects = 0
        self.last_status: dict[str, Any] | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            self.connects += 1
            with Subscriber(self.endpoint, rcvhwm=1000) as sub:
                until = time.monotonic() + (self.rng.uniform(1, 8) if self.role == "churn" else 1e9)
                while not self.stop.is_set() and time.monotonic() < until:
                    if self.role == "stalled":
                        self.stop.wait(0.5)  # connected, never reads: its queue fills, the runtime must not care
                        continue
                    msg = sub.recv(0.2)
                    if msg is not None:
                        self.received += 1
                        if msg.type == "status":
                            self.last_status = msg.data
                        if self.role == "slow":
                            time.sleep(0.5)
            if self.role == "churn":
                self.stop.wait(self.rng.uniform(0, 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--subscribers", type=int, default=4, help="churning subscribers (plus steady, slow, stalled)")
    ap.add_argument("--deploy", type=Path, default=None, help="deploy folder (default: the demo model's, exported)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the first RSS figure (default 10%%)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--log", type=Path, default=None, help="the runtime's log (default: a temporary file)")
    args = ap.parse_args()

    from cezsar.app.demo import bundled_model_dir, ensure_deploy

    deploy = args.deploy or ensure_deploy(bundled_model_dir())
    total = args.minutes * 60.0
    warmup = args.warmup if args.warmup is not None else min(60.0, max(5.0, 0.1 * total))
    work = Path(tempfile.mkdtemp(prefix="cezsar-soak-"))
    video = render(work / "clip.avi", total + 60.0)
    actions = work / "actions.yaml"
    actions.write_text(ACTIONS)
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    log_path = args.log or work / "runtime.log"
    cmd = [sys.executable, "-m", "cezsar", "run", "--deploy", str(deploy), "--actions", str(actions)]
    for i in range(args.streams):
        cmd += ["--source", f"s{i + 1}={video}"]
    cmd += ["--pub", pub, "--control", ctl, "--status-interval", "1", "--stats-interval", "60"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CEZSAR_THREADS": os.environ.get("CEZSAR_THREADS", "1")}
    stop = threading.Event()
    readers = [Reader(pub, "churn", stop, i) for i in range(args.subscribers)]
    readers += [Reader(pub, role, stop, 100 + i) for i, role in enumerate(("steady", "slow", "stalled"))]
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    t0 = time.monotonic()
    for r in readers:
        r.start()
    samples: list[tuple[float, int]] = []
    rss_start: int | None = None
    control_ok = control_fail = 0
    ctl_client = ControlClient(ctl, timeout=5.0)
    try:
        while time.monotonic() - t0 < total and proc.poll() is None:
            time.sleep(5.0)
            t = time.monotonic() - t0
            r = rss_kib(proc.pid)
            if r is not None:
                samples.append((round(t, 1), r))
                if rss_start is None and t >= warmup:
                    rss_start = r
            try:
                ctl_client.status()
                control_ok += 1
            except Exception:  # noqa: BLE001 - counted, reported
                control_fail += 1
        rss_end = rss_kib(proc.pid)
        steady = readers[-3]
        before_stop = steady.last_status or {}
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        stop_seconds = time.monotonic() - t_stop
        time.sleep(0.5)
    finally:
        stop.set()
        ctl_client.close()
        if proc.poll() is None:
            proc.kill()
    for r in readers:
        r.join(2.0)
    final = steady.last_status or before_stop
    streams = final.get("streams", {})
    growth = None if not (rss_start and rss_end) else round(100.0 * (rss_end - rss_start) / rss_start, 2)
    after_warm = [v for t, v in samples if t >= warmup]
    result = {
        "minutes": args.minutes,
        "streams": args.streams,
        "subscribers": {"churning": args.subscribers, "steady": 1, "slow": 1, "stalled": 1},
        "subscriber_connects": sum(r.connects for r in readers),
        "published": final.get("publisher", {}).get("sent"),
        "publisher_dropped": final.get("publisher", {}).get("dropped"),
        "received": sum(r.received for r in readers),
        "received_steady": steady.received,
        "frames_sampled": sum(s.get("sampled", 0) for s in streams.values()),
        "frames_dropped": sum(s.get("dropped", 0) for s in streams.values()),
        "windows": final.get("inference", {}).get("windows"),
        "latency_ms": final.get("latency_ms"),
        "stream_states": {k: s.get("state") for k, s in streams.items()},
        "control_requests": {"ok": control_ok, "failed": control_fail},
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "rss_kib_max_after_warmup": max(after_warm) if after_warm else None,
        "rss_growth_percent": growth,
        "warmup_seconds": warmup,
        "final_status": bool(final.get("final")),
        "exit_code": code,
        "stop_seconds": round(stop_seconds, 2),
        "log": str(log_path),
    }
    text = json.dumps(result)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = code == 0 and growth is not None and growth <= 5.0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
