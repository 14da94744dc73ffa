"""A real mosquitto broker on a loopback port (killed and started again on the same port), a real
paho subscriber, and mosquitto_sub (the C client)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.net import free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
NO_BROKER = "mosquitto broker not installed (apt-get install mosquitto mosquitto-clients)"


class Broker:
    """A mosquitto process on a loopback port that can be killed and started again on the same port."""

    def __init__(self, folder: Path, extra: str = "allow_anonymous true\n") -> None:
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        # as root mosquitto would drop to its own user, who cannot read files under pytest's 0700 tmp folders
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{extra}{user}persistence false\nlog_dest stderr\n")
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(up, 10, "mosquitto to listen")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Sub:
    """A real paho subscriber that records (topic, payload, retain)."""

    def __init__(self, port: int, topics: list[str], ca: Path | None = None, **auth: Any) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{os.urandom(4).hex()}")
        if auth:
            c.username_pw_set(auth["username"], auth["password"])
        if ca is not None:
            c.tls_set(ca_certs=str(ca))
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe([(t, 1) for t in topics])
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mosquitto_sub(port: int, topic: str, wait: float = 1.5, count: int | None = None) -> list[tuple[str, str]]:
    """The retained and live messages mosquitto_sub (the C client) sees within ``wait`` seconds."""
    if MOSQUITTO_SUB is None:
        pytest.skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
    cmd = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-v", "-W", str(max(1, round(wait)))]
    if count is not None:
        cmd += ["-C", str(count)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=wait + 10).stdout
    rows = []
    for line in out.splitlines():
        t, _, p = line.partition(" ")
        rows.append((t, p))
    return rows


def retained(port: int, topic: str = "#", wait: float = 1.5) -> dict[str, bytes]:
    """Every retained message under ``topic`` as mosquitto_sub (the C client) reads it: topic -> payload
    bytes (hex-dumped by the client, so binary payloads such as JPEG snapshots come back intact)."""
    if MOSQUITTO_SUB is None:
        pytest.skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
    cmd = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-F", "%r %t %x"]
    cmd += ["-W", str(max(1, round(wait)))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=wait + 10).stdout
    rows: dict[str, bytes] = {}
    for line in out.splitlines():
        flag, t, hexed = (line.split(" ", 2) + [""])[:3]
        if flag == "1":
            rows[t] = bytes.fromhex(hexed)
    return rows
