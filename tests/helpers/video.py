"""Videos and cameras for the tests: index-coded frames (frame i spells i in its pixels), small moving
shapes, a fake cv2.VideoCapture at the true boundary (no camera on CI) and a real MJPEG-over-HTTP
camera on 127.0.0.1 that OpenCV's FFmpeg backend reads like an IP camera."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def index_frame(i: int, size: int = 64) -> np.ndarray:
    """A BGR frame whose 8x8-pixel cells spell ``i`` in binary (16 bits, black/white: survives JPEG)."""
    f = np.full((size, size, 3), 128, dtype=np.uint8)
    for b in range(16):
        r, c = divmod(b, 8)
        f[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = 255 if (i >> b) & 1 else 0
    return f


def frame_index(image: np.ndarray) -> int:
    """Inverse of index_frame (on the decoded, not preprocessed, image)."""
    i = 0
    for b in range(16):
        r, c = divmod(b, 8)
        if image[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].mean() > 127:
            i |= 1 << b
    return i


def write_index_video(path: Path, n: int, fps: float = 8.0, size: int = 64) -> Path:
    """``n`` frames of :func:`index_frame` as an MJPG video."""
    return write_video(path, n, fps, size, index_frame)


class FakeCamera:
    """Fake cv2.VideoCapture of a live camera: ``rate`` frames per second, failing after ``fail_after``
    frames (the stream stops delivering), frames encode a global counter."""

    counter = 0

    def __init__(self, rate: float = 100.0, fail_after: int | None = None, opened: bool = True) -> None:
        self.rate = rate
        self.fail_after = fail_after
        self.opened = opened
        self.grabbed = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def grab(self) -> bool:
        if self.fail_after is not None and self.grabbed >= self.fail_after:
            return False
        time.sleep(1.0 / self.rate)
        self.grabbed += 1
        FakeCamera.counter += 1
        self._last = FakeCamera.counter
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return True, index_frame(self._last)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def frame(i: int, size: int = 64) -> np.ndarray:
    """A grey frame with a yellow square that moves 3 px per frame."""
    f = np.full((size, size, 3), 90, dtype=np.uint8)
    x = int((i * 3) % (size - 16))
    f[20:36, x : x + 16] = (40, 200, 240)
    return f


def write_video(
    path: Path, n: int, fps: float = 8.0, size: int = 64, draw: Callable[[int, int], np.ndarray] | None = None
) -> Path:
    """``n`` frames of ``draw(i, size)`` (default :func:`frame`) as an MJPG video."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (size, size))
    assert vw.isOpened()
    for i in range(n):
        vw.write((draw or frame)(i, size))
    vw.release()
    return path


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
