"""``cezsar export``, ``cezsar quantize``, ``cezsar build-engine`` and ``cezsar check-engine``.

Heavy imports (torch, onnx, modelopt, tensorrt) happen inside the verbs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from cezsar.deploy.layout import int8_name
from cezsar.errors import CezsarError

TRT_INT8, CPU_INT8 = int8_name("*", "tensorrt"), int8_name("*", "cpu")


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def export_cmd(
    model_dir: Path = typer.Argument(..., help="Trained model folder (config.json + model.safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="Deploy folder to create or replace."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset: 17 for TensorRT >= 8.6 (default), 16 for TensorRT 8.5."),
    tol: float = typer.Option(1e-4, "--tol", help="Worst cosine distance to PyTorch allowed per network."),
) -> None:
    """Export the frame encoder, temporal head and text tower to ONNX, checked against PyTorch."""
    from converter.export import export_model

    try:
        m = export_model(model_dir, out, opset=opset, parity_tol=tol)
    except CezsarError as e:
        _fail(str(e), 2)
    for part in ("frame_encoder", "temporal_head", "text_encoder"):
        r = m.extra["parity"][part]
        print(
            f"{part:14s} worst cosine distance {r['worst_cosine_distance']:.2e}  max abs diff {r['max_abs_diff']:.2e}"
        )
    print(f"wrote {out} (opset {m.opset}, window {m.window}, {m.feature_dim}-d features, {m.joint_dim}-d joint space)")


def quantize_cmd(
    deploy_dir: Path = typer.Argument(..., help="Deploy folder written by `cezsar export`."),
    calib: Path = typer.Option(..., "--calib", help="Calibration set from `cezsar calibrate` (.npz)."),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="Eval folder (videos.jsonl + classes/) for top-1."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    force: bool = typer.Option(False, "--force", help="Write the INT8 models even if the accuracy gate fails."),
    method: str = typer.Option("auto", "--method", help="auto (ModelOpt, else onnxruntime), modelopt or ort."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of calibration frames kept for the accuracy check."),
    calibration_method: str = typer.Option("entropy", "--calibration-method", help="ModelOpt: entropy or max."),
    target: str = typer.Option(
        "both",
        "--target",
        help=f"tensorrt ({TRT_INT8}, TensorRT Q/DQ rules), cpu ({CPU_INT8} for onnxruntime's CPU "
        "integer kernels; not held to the TensorRT rules, same accuracy gate) or both.",
    ),
    int8_head: bool = typer.Option(
        False,
        "--int8-head/--fp32-head",
        help="cpu target: quantize the temporal head too. Default: FP32 head (it runs once per hop; the gate's "
        "windows cannot vouch for an INT8 head on a stream, docs/live.md).",
    ),
) -> None:
    """INT8 quantization of the frame encoder and temporal head, with an accuracy gate: Q/DQ models for TensorRT
    and/or models laid out for onnxruntime's CPU integer kernels (--target). On the CPU the head stays FP32 unless
    --int8-head (and then when it fails the gate). Exit status: 0 when a usable INT8 deployment was written (a
    refused target is a warning), 1 when the gate refused every target, 2 on bad input."""
    from converter.quantize import quantize_deploy

    try:
        report = quantize_deploy(
            deploy_dir,
            calib,
            eval_data=eval_data,
            force=force,
            method=method,
            holdout=holdout,
            calibration_method=calibration_method,
            target=target,
            int8_head=int8_head,
        )
    except CezsarError as e:
        _fail(str(e), 2)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        named = [("tensorrt", report)] if report["target"] != "cpu" else []
        if "cpu" in report:
            named.append(("cpu", report["cpu"]))
        for name, r in named:
            t1 = ""
            if r.get("top1_fp32") is not None:
                t1 = f", top-1 fp32 {r['top1_fp32']:.3f} int8 {r['top1_int8']:.3f}"
            print(
                f"{name} ({r['method']}): cosine fp32 vs int8 mean {r['mean_cosine']:.5f} min {r['min_cosine']:.5f}"
                f"{t1}; gate {'passed' if r['passed'] else 'FAILED'}"
            )
            speed = r.get("cpu_speed_frame_encoder")
            if speed:
                print(
                    f"  onnxruntime CPU frame encoder, batch {speed['batch']}: fp32 {speed['fp32_ms']:.1f} ms, "
                    f"int8 {speed['int8_ms']:.1f} ms ({speed['speedup']:.2f}x)"
                )
                if name == "tensorrt" and speed["speedup"] < 1:
                    print(
                        "  note: TensorRT-style Q/DQ runs no faster than FP32 on onnxruntime's CPU provider; "
                        f"the CPU runs {CPU_INT8} (--target cpu or both)"
                    )
    for line in report["summary"]:  # per target: what was written, what was refused
        print(line, file=sys.stderr)
    refused = {t: v for t, v in report["targets"].items() if not v["written"]}
    if report["exit_code"] != 0:
        why = "; ".join(f"{t}: {v['reason']}" for t, v in refused.items())
        names = " and ".join(refused)
        print(f"error: {why}; {names} INT8 models not written (use --force to keep them)", file=sys.stderr)
        raise typer.Exit(report["exit_code"])
    if refused:
        names = " and ".join(refused)
        print(f"warning: {names} INT8 models refused by the gate; the other target's were written", file=sys.stderr)
    if force and any(not v["passed"] for v in report["targets"].values()):
        print("warning: INT8 models that failed the gate were written anyway (--force)", file=sys.stderr)


def build_engine_cmd(
    deploy_dir: Path = typer.Argument(..., help="Deploy folder written by `cezsar export` (and `cezsar quantize`)."),
    precision: str = typer.Option("fp16", "--precision", help="fp16 (from the FP32 ONNX), int8 (Q/DQ ONNX) or fp32."),
    workspace_mb: int = typer.Option(1024, "--workspace-mb", help="Builder workspace limit in MiB."),
    max_batch: int = typer.Option(
        64, "--max-batch", help="Largest batch (frames for the encoder, windows for the head)."
    ),
    opt_batch: int | None = typer.Option(
        None, "--opt-batch", help="Batch the kernels are tuned for (default: window)."
    ),
    timing_cache: Path | None = typer.Option(None, "--timing-cache", help="Timing cache file to load and update."),
    parts: str = typer.Option("frame_encoder,temporal_head", "--parts", help="Comma-separated parts to build."),
) -> None:
    """Build TensorRT engines (one per part) with a JSON sidecar that detects stale engines."""
    from cezsar.deploy.tensorrt import require_tensorrt
    from converter.tensorrt_build import build_engines

    try:
        require_tensorrt()
        results = build_engines(
            deploy_dir,
            precision=precision,
            workspace_mb=workspace_mb,
            max_batch=max_batch,
            opt_batch=opt_batch,
            timing_cache=timing_cache,
            parts=[p.strip() for p in parts.split(",") if p.strip()],
        )
    except CezsarError as e:
        _fail(str(e), 2)
    for r in results:
        print(
            f"{r['engine']}: TensorRT {r['tensorrt_version']} on {r['gpu']} (sm {r['compute_capability']}), "
            f"batch {r['profile']['min']}..{r['profile']['max']}, {r['build_seconds']:.1f} s"
        )


def check_engine_cmd(
    deploy_dir: Path = typer.Argument(..., help="Deploy folder with built engines."),
    precision: str = typer.Option("fp16", "--precision", help="Which engines to compare: fp16 or int8."),
    batch: int = typer.Option(8, "--batch", help="Batch size of the comparison."),
    tol: float | None = typer.Option(None, "--tol", help="Worst cosine distance allowed (default by precision)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run each engine and onnxruntime on the same inputs and compare (cosine distance)."""
    from cezsar.deploy.tensorrt import require_tensorrt
    from converter.check_engine import check_engines

    try:
        require_tensorrt()
        report = check_engines(deploy_dir, precision=precision, batch=batch, tol=tol)
    except CezsarError as e:
        _fail(str(e), 2)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for part, r in report["parts"].items():
            print(
                f"{part:14s} worst cosine distance {r['worst_cosine_distance']:.2e} "
                f"(tol {r['tolerance']:.0e}) {'ok' if r['passed'] else 'MISMATCH'}"
            )
    if not report["passed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("quantize")(quantize_cmd)
    app.command("build-engine")(build_engine_cmd)
    app.command("check-engine")(check_engine_cmd)
