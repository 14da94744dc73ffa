"""Helpers for the fault tests (no tests here): a real ``cezsar run`` subprocess with its log in a
file, a background ZeroMQ subscriber, small videos, an MJPEG-over-HTTP camera on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edge.client import Subscriber

ROOT = Path(__file__).resolve().parents[2]

# an action that is on from the first window and never ends by itself: threshold -2 is the lowest
# allowed and a score (a cosine) is never below -1, so an event is open from the first window
ALWAYS = {"threshold": -2.0, "hysteresis": 0.0, "min_duration": 0.0, "cooldown": 0.0, "smoothing": 1.0}


def actions_yaml(names: list[str], always: bool = False, description: str = "a shape moving") -> str:
    doc: dict[str, Any] = {"version": 1}
    if always:
        doc["defaults"] = ALWAYS
    doc["actions"] = [{"name": n, "descriptions": [f"{description} ({n})"]} for n in names]
    return yaml.safe_dump(doc, sort_keys=False)


def frame(i: int, size: int = 64) -> np.ndarray:
    f = np.full((size, size, 3), 90, dtype=np.uint8)
    x = int((i * 3) % (size - 16))
    f[20:36, x : x + 16] = (40, 200, 240)
    return f


def write_video(path: Path, n: int, fps: float = 8.0, size: int = 64) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (size, size))
    assert vw.isOpened()
    for i in range(n):
        vw.write(frame(i, size))
    vw.release()
    return path


class Collector(threading.Thread):
    """Receives every message of a PUB endpoint in the background (times are time.time())."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(daemon=True)
        self.sub = Subscriber(endpoint, topics, **kw)
        self.msgs: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.halt.is_set():
            m = self.sub.recv(0.05)
            if m is not None:
                with self.lock:
                    self.msgs.append((time.time(), m.topic, m.data))
        self.sub.close()

    def close(self) -> None:
        self.halt.set()
        self.join(2.0)

    def of(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        with self.lock:
            return [d for t, _, d in self.msgs if d.get("type") == kind and t >= since]

    def wait(
        self, kind: str, cond: Callable[[dict[str, Any]], bool], timeout: float, since: float = 0.0
    ) -> dict[str, Any]:
        deadline = time.time() + timeout
        seen = 0
        while time.time() < deadline:
            with self.lock:
                new = self.msgs[seen:]
                seen = len(self.msgs)
            for t, _, d in new:
                if d.get("type") == kind and t >= since and cond(d):
                    return d
            time.sleep(0.02)
        last = self.of(kind)[-1:] if self.of(kind) else None
        raise AssertionError(f"no {kind} message matching the condition within {timeout} s (last: {last})")


class Runtime:
    """``python -m cezsar run ...`` as a subprocess; stdout+stderr in ``log_path``."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.cmd = [sys.executable, "-m", "cezsar", "run", *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "CEZSAR_THREADS": "1", **(env or {})}
        with open(log_path, "w") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None and text not in self.log():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the log within {timeout} s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig``; (exit code, seconds until the process exited)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - t0

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def run_args(
    deploy: Path, sources: list[str], actions: Path, pub: str, control: str | None = None, *extra: str
) -> list[str]:
    args = ["--deploy", str(deploy), "--actions", str(actions), "--pub", pub]
    for s in sources:
        args += ["--source", s]
    args += ["--control", control or "none", *extra]
    return args


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class MjpegCamera:
    """A live camera: MJPEG over HTTP (multipart/x-mixed-replace) on 127.0.0.1, which OpenCV's FFmpeg
    backend reads like an IP camera. ``stop()`` unplugs it (connections closed, port closed);
    ``start()`` plugs it back in on the same port."""

    def __init__(self, port: int, fps: float = 12.0) -> None:
        self.port, self.fps = port, fps
        self.server: ThreadingHTTPServer | None = None
        self.live = threading.Event()
        self.sent = 0

    def start(self) -> None:
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while cam.live.is_set():
                        ok, jpg = cv2.imencode(".jpg", frame(cam.sent))
                        b = jpg.tobytes()
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(b)}\r\n\r\n"
                        self.wfile.write(head.encode() + b + b"\r\n")
                        cam.sent += 1
                        time.sleep(1.0 / cam.fps)
                except OSError:
                    pass

            def log_message(self, *a: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        ThreadingHTTPServer.daemon_threads = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.live.set()
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.live.clear()  # open streams end (their handler returns, the connection closes)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"
