"""The benchmark scripts run end to end with tiny arguments and write the documented JSON keys.

No timing assertions: only that every documented number is there and positive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def check_machine(d: dict[str, Any]) -> None:
    m = d["machine"]
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert m["cores"] >= 1
    assert "gpu" in m


def test_bench_tower_json() -> None:
    d = run_script("bench_tower.py", "--backbone", "tiny", "--resolution", "64", "--window", "4", "--iters", "2",
                   "--warmup", "1", "--calib-frames", "24")  # fmt: skip
    check_machine(d)
    assert d["benchmark"] == "tower"
    for v in ("torch-cpu-fp32", "ort-cpu-fp32", "ort-cpu-int8"):
        r = d["variants"][v]
        for part in ("frame_encoder", "temporal_head"):
            assert r[part]["per_s"] > 0 and r[part]["median_ms"] > 0 and r[part]["p99_ms"] > 0
    for k in ("int8_over_fp32_cpu", "ort_over_torch_cpu"):
        assert d["ratios"][k] > 0
    assert "fp16_over_fp32_gpu" not in d["ratios"] or d["machine"]["gpu"]
    assert 0 < d["int8"]["mean_cosine"] <= 1.0001


def test_bench_stream_json() -> None:
    d = run_script("bench_stream.py", "--backbone", "tiny", "--resolution", "64", "--window", "4", "--iters", "6",
                   "--streams", "1,2", "--soak", "2", "--video-size", "64")  # fmt: skip
    check_machine(d)
    assert d["benchmark"] == "stream"
    runs = d["runs"]
    assert [(r["streams"], r["cache"]) for r in runs] == [(1, True), (2, True), (1, False)]
    for r in runs:
        assert r["frames_per_s_total"] > 0 and r["frames_per_s_per_stream"] > 0
        assert r["latency_ms"]["median"] > 0 and r["latency_ms"]["p99"] > 0
        assert r["dropped_frames"] >= 0 and r["rss_mb_end"] > 0
        assert r["windows"] > 0
    for k in ("pipeline_efficiency", "cache_cost_fraction"):
        assert d["ratios"][k] > 0
    assert d["encoder_only"]["best_mean"] > 0
    assert d["peak_rss_mb"] > 0
    assert d["soak"]["rss_mb_start"] > 0 and d["soak"]["rss_mb_end"] > 0


def test_bench_data_json(tmp_path) -> None:
    d = run_script(
        "bench_data.py", "--work", str(tmp_path), "--minutes", "0.2", "--gop", "60", "--memory-seconds", "12",
        "--throughput-clips", "8", "--repeats", "1", "--skip", "ddp",
    )  # fmt: skip
    assert d["benchmark"] == "data"
    check_machine(d)
    assert d["seek"]["same_frames"] is True and d["seek"]["seek_seconds"] > 0
    assert d["memory"]["x10"]["segments"] == 10 * d["memory"]["x1"]["segments"]
    assert d["memory"]["x10"]["rows"] > d["memory"]["x1"]["rows"] > 0
    assert all(v > 0 for v in d["throughput"]["clips_per_s"].values())
    assert set(d["ratios"]) == {"seek_speedup", "extract_memory_10x_over_1x"}


def test_scripts_need_no_path_hacks() -> None:
    """The scripts import cezsar, its stages and the shared benchmark helpers (cezsar.app.bench) as installed
    packages: no sys.path edits."""
    from cezsar.app import bench

    hacks = [
        f"{p.name}:{i}"
        for p in sorted((ROOT / "scripts").glob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "sys.path" in line or "PYTHONPATH" in line
    ]
    assert not hacks, hacks
    assert bench.stats_ms([0.001, 0.003])["median_ms"] == 2.0 and bench.machine()["cores"] >= 1


def _gpu_verify() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_verify", ROOT / "scripts" / "gpu_verify.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_verify_is_not_a_pass_without_a_cuda_device(tmp_path: Path) -> None:
    import pytest

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: run scripts/gpu_verify.py itself")
    out = tmp_path / "v.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_verify.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].startswith("gpu_verify: not verified: no CUDA device")
    report = json.loads(out.read_text())
    assert report["verdict"] == "not verified: no CUDA device" and report["checks"] == {}
    assert any("TensorRT engine" in s for s in report["not_verified"])
    assert report["machine"]["torch"] == torch.__version__


def test_gpu_verify_buffer_check_logic_on_host_memory(tmp_path: Path) -> None:
    """The verification script's own logic (batches, split, worker threads, bit-exact comparison) on host
    memory with a memmove in place of the device copy: a test of the script, not a GPU verification."""
    import ctypes

    import pytest

    pytest.importorskip("torch")
    gv = _gpu_verify()
    res = gv.check_trt_buffers("torch", tmp_path, device="cpu", copier=lambda d, s, n, stream: ctypes.memmove(d, s, n))
    assert res["status"] == "verified", res["problems"]
    assert res["buffer_allocations"] == 6 and any(t.startswith("verify-worker") for t in res["threads"])

    def broken(d: int, s: int, n: int, stream: int) -> None:
        ctypes.memmove(d, s, n // 2)  # half a copy: must be caught

    bad = gv.check_trt_buffers("torch", tmp_path, device="cpu", copier=broken)
    assert bad["status"] == "failed" and any("not bit-exact" in p for p in bad["problems"])
