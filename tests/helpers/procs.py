"""``cezsar run`` as a subprocess with its log in a file, its arguments, and actions files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

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


class RunProcess:
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


def actions_doc(names: list[str], exclusive: bool = True) -> str:
    """An actions file watching the synthetic world's motions ``names``, background = its idle motion, one
    motion at a time (one object in view) as in the demo, and no ``defaults:``: the thresholds are the deploy
    folder's calibrated ones, as a user's file without defaults gets them."""
    from cezsar.data.synthetic import IDLE, motion_descriptions

    return yaml.safe_dump(
        {
            "background": motion_descriptions(IDLE),
            "exclusive": exclusive,
            "actions": [{"name": n, "descriptions": motion_descriptions(n)} for n in names],
        },
        sort_keys=False,
    )
