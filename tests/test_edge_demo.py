"""``cezsar demo`` as a user runs it. With the bundled trained model the F1 target (>= 0.8) is
asserted; with the random-init stand-in only the flow and the summary line are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.models import CACHE, deploy_dir, model_dir, trained_model_dir

pytestmark = pytest.mark.slow


def test_demo_prints_events_and_one_json_summary_line() -> None:
    deploy_dir()  # export once into the shared cache, which the demo then finds by weights hash
    bundled = trained_model_dir() is not None and "CEZSAR_TEST_MODEL" not in os.environ
    args = [] if bundled else ["--model", str(model_dir())]  # the bundled model is the default
    env = {**os.environ, "CEZSAR_CACHE": str(CACHE), "CEZSAR_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cezsar", "demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"events", "segments", "f1"} <= set(summary)
    assert summary["segments"] == 5 and summary["exit_code"] == 0 and summary["windows"] > 100
    assert "segments (truth) vs events" in proc.stdout
    assert summary["total_seconds"] < 180
    if trained_model_dir() is not None:
        assert summary["f1"] >= 0.8, proc.stdout
