"""One run of the whole edge runtime on files, measured from outside: a live ZeroMQ subscriber that
timestamps every scores message on receipt, and (optionally) a real HTTP client of the web console.
Shared by scripts/bench_stream.py and scripts/bench_peer.py."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from cezsar.app import bench as bc

ACTIONS = """background: ["a shape staying still"]
actions:
  - name: left
    descriptions: ["something moving left"]
  - name: up
    descriptions: ["something moving up"]
"""


class Listener:
    """A ZeroMQ subscriber thread: receipt time of every scores message."""

    def __init__(self, rt: Any) -> None:
        from edge.client import Subscriber

        self.sub = Subscriber(rt.publisher.endpoint, ["scores.", "status"])
        for _ in range(200):  # slow joiner: wait until the subscription is live
            rt.publish_status()
            if self.sub.recv(0.05) is not None:
                break
        while self.sub.recv(0.01) is not None:
            pass
        self.latency: list[float] = []
        self.recv_times: dict[str, list[float]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            m = self.sub.recv(0.05)
            if m is None or m.type != "scores":
                continue
            now = time.time()
            d = m.data
            captured = float(d["time"]) - float(d["latency_ms"]) / 1000.0
            self.latency.append(now - captured)
            self.recv_times.setdefault(str(d["stream"]), []).append(now)

    def stop(self) -> None:
        time.sleep(0.2)
        self.done.set()
        self.thread.join(2.0)
        self.sub.close()


_PULL = r"""
import signal, sys, urllib.request
url, video = sys.argv[1], sys.argv[2] == "video"
n = 0
def done(*_):
    print(n, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
try:
    with urllib.request.urlopen(url, timeout=60) as r:
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            n += chunk.count(b"--frame\r\n") if video else len(chunk)
except OSError:
    pass
done()
"""


class ConsoleClient:
    """A real HTTP client of the web console, in its own processes (as a browser is): one reads the
    MJPEG live view, one the SSE feed."""

    def __init__(self, base: str, stream: str) -> None:
        import subprocess

        self.procs = [
            subprocess.Popen([sys.executable, "-c", _PULL, url, kind], stdout=subprocess.PIPE, text=True)
            for url, kind in ((f"{base}/console/api/video/{stream}", "video"), (f"{base}/console/api/stream", "sse"))
        ]
        self.frames = self.sse_bytes = 0

    def stop(self) -> None:
        counts = []
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
            out, _ = p.communicate(timeout=10)
            counts.append(int(out.strip() or 0))
        self.frames, self.sse_bytes = counts


def runtime_settings(deploy: Path, videos: list[Path], actions: Path, args: Any, **kw: Any) -> Any:
    from edge.settings import settings_from

    base: dict[str, Any] = dict(
        deploy=deploy,
        source=[f"s{i}={v}" for i, v in enumerate(videos)],
        actions=actions,
        pub="tcp://127.0.0.1:*",
        control="none",
        backend=args.backend,
        precision=args.precision,
        realtime=False,
        hop=args.hop,
        status_interval=5.0,
        stats_interval=3600.0,
        threads=args.threads or None,
    )
    base.update(kw)
    return settings_from(**base)


def one_run(deploy: Path, videos: list[Path], actions: Path, args: Any, **kw: Any) -> dict[str, Any]:
    from edge.runtime import Runtime

    rt = Runtime(runtime_settings(deploy, videos, actions, args, **kw))
    rt.warm_up()
    listener = Listener(rt)
    client = None
    if kw.get("http") and rt.http is not None:
        rt.start()  # the port is known once it listens (files wait for the main loop: nothing is lost)
        client = ConsoleClient(rt.http.url, "s0")
    time.sleep(1.0)  # the console client's processes connect before the frames start (the same pause without)
    rss0 = bc.rss_mb()
    t0 = time.time()
    rt.run()
    if client is not None:
        client.stop()
    listener.stop()
    status = rt.status(final=True)
    inference = status["inference"]
    per_stream: dict[str, Any] = {}
    for name, st in status["streams"].items():
        ts = listener.recv_times.get(name, [])
        elapsed = (ts[-1] - t0) if ts else float("nan")
        per_stream[name] = {
            "frames": st["sampled"],
            "windows": len(ts),
            "frames_per_s": round(st["sampled"] / elapsed, 2) if ts else 0.0,
            "dropped": st["dropped"],
        }
    all_ts = sorted(t for v in listener.recv_times.values() for t in v)
    total_frames = sum(st["sampled"] for st in status["streams"].values())
    elapsed = (all_ts[-1] - t0) if all_ts else float("nan")
    # steady state: per published window between the first and the last window (fill excluded)
    hop_cost = (all_ts[-1] - all_ts[0]) / (len(all_ts) - 1) if len(all_ts) > 1 else float("nan")
    lat = bc.stats_ms(listener.latency)
    return {
        "streams": len(videos),
        "cache": status["cache"],
        "backend": status["backend"],
        "frames": total_frames,
        "windows": len(all_ts),
        "seconds": round(elapsed, 3),
        "frames_per_s_total": round(total_frames / elapsed, 2) if all_ts else 0.0,
        "frames_per_s_per_stream": round(total_frames / elapsed / len(videos), 2) if all_ts else 0.0,
        "per_stream": per_stream,
        "seconds_per_window": round(hop_cost, 5),
        "latency_ms": {"median": lat["median_ms"], "p99": lat["p99_ms"], "n": lat["n"]},
        "dropped_frames": sum(st["dropped"] for st in status["streams"].values()),
        "publisher_dropped": status["publisher"]["dropped"],
        "encoder_ms_per_frame": inference["encoder_ms_per_frame"],
        "frames_encoded": inference["frames_encoded"],
        "rss_mb_start": rss0,
        "rss_mb_end": bc.rss_mb(),
        "console": None
        if client is None
        else {"mjpeg_frames_received": client.frames, "sse_bytes_received": client.sse_bytes},
    }
