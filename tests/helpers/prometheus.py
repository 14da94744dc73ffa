"""A real Prometheus server (Debian's ``prometheus``) scraping one target on loopback, and ``promtool``."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.net import free_port, wait_until

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NO_PROMETHEUS = "prometheus is not installed (apt-get install prometheus)"


def promtool_check(metrics_text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition (its lint: names, types, help)."""
    if PROMTOOL is None:
        pytest.skip(NO_PROMETHEUS)
    cmd = [PROMTOOL, "check", "metrics"]
    return subprocess.run(cmd, input=metrics_text, capture_output=True, text=True, timeout=60)


class Prometheus:
    """Scrapes ``target`` (host:port) every ``interval`` seconds; :meth:`query` asks its HTTP API."""

    def __init__(self, folder: Path, target: str, interval: float = 1.0, token: str | None = None) -> None:
        if PROMETHEUS is None:
            pytest.skip(NO_PROMETHEUS)
        self.port = free_port()
        auth = f"    authorization: {{credentials: {json.dumps(token)}}}\n" if token else ""
        folder.mkdir(parents=True, exist_ok=True)
        conf, ms = folder / "prometheus.yml", round(interval * 1000)
        conf.write_text(
            f"global: {{scrape_interval: {ms}ms, evaluation_interval: {ms}ms}}\n"
            "scrape_configs:\n"
            f"  - job_name: cezsar\n    static_configs: [{{targets: ['{target}']}}]\n{auth}"
        )
        self.log = (folder / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={conf}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 30, "prometheus to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read())
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
