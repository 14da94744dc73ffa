"""scripts/bench_history.py runs end to end with tiny arguments and writes its documented keys (no
timing assertions: the figures are the benchmark's, docs/bench_history.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_bench_history_json(tmp_path: Path) -> None:
    args = ["--windows", "1000", "--write-windows", "500", "--backtest-hours", "0.2", "--queries", "3"]
    out = tmp_path / "b.json"
    cmd = [sys.executable, "scripts/bench_history.py", *args, "--quick", "--postgres", "off", "--work", str(tmp_path)]
    res = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["writes_sqlite"]["windows"] >= 500 and d["writes_sqlite"]["dropped"] == 0
    assert 300 < d["storage_bytes_per_window"]["int8"] < d["storage_bytes_per_window"]["fp16"]
    assert d["search_sqlite"]["windows"] == 1000 and d["search_sqlite"]["recall_at_20"] == 1.0  # all re-ranked
    assert d["backtest"]["windows"] == 2400
    for k in ("writes_vs_target_200", "bytes_per_window_int8_vs_1200", "search_p50_vs_0.5s", "backtest_replayed_vs_2s"):
        assert d["ratios"][k] > 0
