"""``cezsar check-engine``: TensorRT engine vs onnxruntime on the same inputs (a Polygraphy-style comparison).

Each engine is compared with onnxruntime (CPU) running the very ONNX file the engine was built from
(the FP32 export for fp16/fp32 engines, the Q/DQ model for int8 engines) on random and real-looking
inputs; int8 engines are also compared with the FP32 export, for information. The check fails when
the worst cosine distance exceeds the tolerance of the precision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.base import run_batched
from cezsar.backends.onnxruntime import ort_runner, ort_session
from cezsar.errors import CezsarError
from converter.common import cosine_distance, synthetic_frames

TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3, "int8": 2e-2}  # worst cosine distance


def inputs_for(part: str, manifest: Any, deploy_dir: Path, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Named input batches for one part: random, and real-looking (preprocessed frames / their features)."""
    rng = np.random.default_rng(seed)
    pre = manifest.pre
    frames = pre(synthetic_frames(max(batch, 1) * (manifest.window if part == "temporal_head" else 1), seed=seed))
    if part == "frame_encoder":
        return {
            "random": rng.standard_normal((batch, 3, pre.size, pre.size)).astype(np.float32),
            "frames": frames[:batch],
        }
    fe = ort_runner(manifest.path(deploy_dir, "frame_encoder"))
    feats = run_batched(fe, frames, 32)
    windows = feats.reshape(batch, manifest.window, -1).astype(np.float32)
    noise = rng.standard_normal(windows.shape).astype(np.float32) * float(feats.std()) + float(feats.mean())
    return {"random": noise.astype(np.float32), "features": windows}


def compare(
    run: Callable[[np.ndarray], np.ndarray], reference: Any, input_name: str, cases: dict[str, np.ndarray], tol: float
) -> dict[str, Any]:
    """Run ``run`` and the onnxruntime session ``reference`` on each case; worst/mean cosine distance."""
    per_case, worst, total, count, max_abs = {}, 0.0, 0.0, 0, 0.0
    for name, x in cases.items():
        got = np.asarray(run(x), dtype=np.float32)
        ref = reference.run(None, {input_name: x})[0]
        if got.shape != ref.shape:
            raise CezsarError(f"case '{name}': engine output shape {got.shape} != onnxruntime {ref.shape}")
        d = cosine_distance(ref, got)
        if not np.all(np.isfinite(got)):
            d = np.full(len(got), np.inf)
        per_case[name] = float(d.max())
        worst = max(worst, float(d.max()))
        total += float(d.sum())
        count += len(d)
        max_abs = max(max_abs, float(np.max(np.abs(ref - got))))
    return {
        "worst_cosine_distance": worst,
        "mean_cosine_distance": total / max(count, 1),
        "max_abs_diff": max_abs,
        "cases": per_case,
        "tolerance": tol,
        "passed": worst <= tol,
    }


def check_engines(
    deploy_dir: str | Path,
    precision: str = "fp16",
    batch: int = 8,
    tol: float | None = None,
    parts: list[str] | None = None,
) -> dict[str, Any]:
    from cezsar.backends.tensorrt import TensorRTBackend
    from cezsar.deploy import layout
    from cezsar.deploy.manifest import load_manifest

    if precision not in TOLERANCE:
        raise CezsarError(f"--precision {precision}: choose fp16 or int8 (or fp32)")
    if batch < 1:
        raise CezsarError(f"--batch {batch}: must be >= 1")
    deploy = Path(deploy_dir)
    m = load_manifest(deploy)
    ok, why = TensorRTBackend.available()
    if not ok:
        raise CezsarError(f"TensorRT backend unavailable: {why}")
    backend = TensorRTBackend(precision)
    tol = TOLERANCE[precision] if tol is None else tol
    report: dict[str, Any] = {"precision": precision, "batch": batch, "parts": {}}
    for part in parts or list(layout.VIDEO_PARTS):
        runner = backend.load(deploy, m, part)  # checks the engine's sidecar, once
        try:
            b = min(batch, runner.max_batch or batch)
            name = "frames" if part == "frame_encoder" else "features"
            cases = inputs_for(part, m, deploy, b)
            source = layout.engine_source(deploy, m, part, precision)
            ref = ort_session(source)
            r = compare(runner, ref, name, cases, tol)
            r["batch"] = b
            r["reference"] = source.name
            if precision == "int8":
                info = compare(runner, ort_session(m.path(deploy, part)), name, cases, float("inf"))
                r["vs_fp32_onnx"] = {k: info[k] for k in ("worst_cosine_distance", "mean_cosine_distance")}
            report["parts"][part] = r
        finally:
            runner.close()
    report["passed"] = all(r["passed"] for r in report["parts"].values())
    return report
