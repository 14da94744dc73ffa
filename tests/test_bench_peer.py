"""scripts/bench_peer.py runs end to end with a tiny CLIP and writes the documented JSON keys.

No timing assertions: only that both pipelines processed the same sampled frames and every figure is there.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_bench_scripts import check_machine, run_script


def test_bench_peer_json(tmp_path: Path) -> None:
    out = tmp_path / "peer.json"
    d = run_script("bench_peer.py", "--model", "tiny", "--frames", "8", "--window", "4", "--reps", "1",
                   "--preprocess-iters", "2", "--calib-frames", "32", "--out", str(out))  # fmt: skip
    check_machine(d)
    assert d["benchmark"] == "peer" and out.is_file()
    peer, ours = d["peer_cpu"]["runs"][0], d["cezsar_cpu"]["runs"][0]
    assert peer["frames"] == ours["frames"] == 12 and peer["windows"] == ours["windows"] == 5  # same sampling
    assert "int8" in ours["backend"] and d["int8_gate"]["passed"] is True
    assert peer["frames_per_s"] > 0 and ours["frames_per_s"] > 0
    for size in ("640x480", "1280x720", "1920x1080"):
        assert all(v > 0 for v in d["preprocess_ms_per_frame_224px"][size].values())
    assert d["ratios"]["cezsar_over_peer_cpu"] > 0 and d["ratios"]["pil_over_opencv_preprocess_640x480"] > 0
    assert d["gpu"] is None or "peer" in d["gpu"]
