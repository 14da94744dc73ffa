#!/usr/bin/env python3
"""Throughput and latency of the FrameEncoder and the TemporalHead, every backend and precision here.

    .venv/bin/python scripts/bench_tower.py --json > tower.json      # resnet18 224x224, batch 8, T=16
    .venv/bin/python scripts/bench_tower.py --backbone vit-b32 --json  # CLIP ViT-B/32 vision tower, 224 px

``--backbone vit-b32``: a CLIP ViT-B/32 checkpoint with random weights (training/random_checkpoints.py,
the layout of ``openai/clip-vit-base-patch32``) loaded through ``hf-clip:`` as a real one would be;
its frames/s are reported as ``vit_b32_frames_per_s_*`` ratios.

Builds a random-init model (speed does not depend on the weights), exports it with converter.export
(export_model when the text model is installed, else export_video_parts: the two video networks with
the same exporter), quantizes both networks to INT8 Q/DQ with converter.quantizers.quantize_onnx
(``--int8-method ort``: onnxruntime's static QDQ, the fast one on the CPU) and reports the accuracy
gate's measure (mean cosine of FP32 vs INT8 video embeddings on held-out rendered frames, gate
converter.quantize.MIN_COSINE). Every variant runs through the runtime's own Runner classes
(cezsar.backends.*), numpy in and numpy out, transfers included.

All variants run in one process; each repetition runs every variant once, in turn, so that
background load hits all alike; warm-up calls are excluded. Ratios are of medians from this run.

Variants: torch-cpu-fp32 (eager), ort-cpu-fp32, ort-cpu-int8; with CUDA: torch-cuda-fp32 (eager),
torch-cuda-fp16 (CUDA graphs, channels-last) at ``--gpu-batch``; with TensorRT: tensorrt-fp16,
tensorrt-int8 engines built from the exported files. JSON on stdout (--json), a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.app import bench as bc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("bench_tower")
VIT_B32 = "vit-b32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backbone",
        default="resnet18",
        help="resnet18 (default), resnet50, tiny, vit-b32 (random CLIP), timm:NAME ...",
    )
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=8, help="CPU variants' batch (frames; windows for the head)")
    p.add_argument("--gpu-batch", type=int, default=64, help="GPU variants' batch")
    p.add_argument("--window", type=int, default=16, help="T, frames per window")
    p.add_argument("--iters", type=int, default=20, help="timed repetitions per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--int8-method",
        default="ort-cpu",
        choices=["ort-cpu", "ort", "modelopt", "auto"],
        help="ort-cpu (default): onnxruntime static QDQ laid out for its CPU integer kernels (U8S8, int32 bias) "
        "for the frame encoder; ort/modelopt/auto: converter.quantizers.quantize_onnx (TensorRT Q/DQ rules)",
    )
    p.add_argument("--calib-frames", type=int, default=64)
    p.add_argument("--variants", default="", help="comma list to run only these (default: every available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0: all cores)")
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    return p.parse_args(argv)


# -- build / export / quantize -----------------------------------------------------------------


def text_model_installed() -> bool:
    from training.model import DEFAULT_TEXT_MODEL, resolve_text_model

    return Path(resolve_text_model(DEFAULT_TEXT_MODEL)).is_dir()


def export(model_dir: Path, out: Path) -> tuple[dict[str, Path], str]:
    from cezsar.deploy.layout import VIDEO_PARTS
    from converter.export import export_model, export_video_parts

    if text_model_installed():
        m, how = export_model(model_dir, out), "converter.export.export_model"
    else:
        m, how = export_video_parts(model_dir, out), "converter.export.export_video_parts (no text model installed)"
    return {p: m.path(out, p) for p in VIDEO_PARTS}, how


def calibration_frames(pre: Any, n: int, seed: int) -> np.ndarray:
    from converter.common import synthetic_frames

    per = 16
    parts = [synthetic_frames(per, 240, 320, seed=seed + i) for i in range(max(1, (n + per - 1) // per))]
    return pre(np.concatenate(parts)[:n])


def quantize(files: dict[str, Path], cfg: Any, method: str, n_calib: int) -> dict[str, Any]:
    """INT8 files beside the FP32 ones; returns the gate report (cosine of video embeddings)."""
    from cezsar.backends.base import run_batched
    from cezsar.backends.onnxruntime import ort_runner
    from cezsar.deploy.layout import int8_name
    from converter.common import cosine_rows
    from converter.quantize import MIN_COSINE
    from converter.quantizers import quantize_cpu, quantize_onnx

    window = cfg.frames
    pre = cfg.pre
    train = calibration_frames(pre, n_calib, seed=0)
    hold = calibration_frames(pre, max(window + 8, n_calib // 2), seed=100)
    fe32 = ort_runner(files["frame_encoder"])
    feats = run_batched(fe32, train, 16)
    stride = max(1, window // 4)
    starts = range(0, max(1, len(feats) - window + 1), stride)
    head_data = np.stack([feats[i : i + window] for i in starts if i + window <= len(feats)]).astype(np.float32)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"method": method, "calibration_frames": int(len(train))}
    for part, name, data in (("frame_encoder", "frames", train), ("temporal_head", "features", head_data)):
        cpu_layout = method == "ort-cpu" and part == "frame_encoder"
        dst = files[part].with_name(int8_name(part, "cpu" if cpu_layout else "tensorrt"))
        if cpu_layout:
            # the product's CPU INT8 (cezsar quantize --target cpu)
            res = quantize_cpu(files[part], dst, name, data, 16)
            out[part] = {"method": res["method"], "scope": res["scope"], "fallback_reason": None}
            if res["scope"] != "all":  # a transformer: also every op type, to compare (variant ...-allops)
                every = dst.with_name(dst.stem + "-allops.onnx")  # beside the deploy-named file
                quantize_cpu(files[part], every, name, data, 16, scope="all")
                files["frame_encoder.int8.allops"] = every
        else:
            res = quantize_onnx(files[part], dst, name, data, "ort" if method == "ort-cpu" else method, None, 16)
            out[part] = {"method": res["method"], "fallback_reason": res["fallback_reason"]}
        files[f"{part}.int8"] = dst
    out["seconds"] = round(time.perf_counter() - t0, 2)
    th32 = ort_runner(files["temporal_head"])
    fe8, th8 = ort_runner(files["frame_encoder.int8"]), ort_runner(files["temporal_head.int8"])
    f32, f8 = run_batched(fe32, hold, 16), run_batched(fe8, hold, 16)
    wins = [np.arange(i, i + window) for i in range(0, len(hold) - window + 1, max(1, window // 4))]
    e32 = run_batched(th32, np.stack([f32[w] for w in wins]), 64)
    e8 = run_batched(th8, np.stack([f8[w] for w in wins]), 64)
    cos = cosine_rows(e32, e8)
    if "frame_encoder.int8.allops" in files:
        fa = run_batched(ort_runner(files["frame_encoder.int8.allops"]), hold, 16)
        ea = run_batched(th8, np.stack([fa[w] for w in wins]), 64)
        out["frame_encoder_all_ops"] = {
            "what": "the same INT8 frame encoder with every op type quantized (Softmax, LayerNorm, Adds, "
            "attention MatMuls too); variant ort-cpu-int8-allops",
            "mean_cosine": round(float(cosine_rows(e32, ea).mean()), 5),
            "frame_features_mean_cosine": round(float(cosine_rows(f32, fa).mean()), 5),
        }
    out.update(
        {
            "mean_cosine": round(float(cos.mean()), 5),
            "min_cosine": round(float(cos.min()), 5),
            "frame_features_mean_cosine": round(float(cosine_rows(f32, f8).mean()), 5),
            "windows": len(wins),
            "gate_min_mean_cosine": MIN_COSINE,
            "passed": bool(cos.mean() >= MIN_COSINE),
            "note": "random-init weights and rendered frames; the gate's cosine measure, not a trained model's top-1",
        }
    )
    return out


# -- variants ----------------------------------------------------------------------------------


THREADS: int | None = None


def ort_runner(path: Path, part: str) -> Any:
    from cezsar.backends.onnxruntime import OrtRunner

    return OrtRunner(path, threads=THREADS).activate()


def build_variants(
    model_dir: Path, files: dict[str, Path], only: set[str], notes: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """name -> {"fe": Runner, "th": Runner, "device": "cpu"|"cuda"}."""
    import torch

    from cezsar.backends.torch import TorchRunner
    from training.model import CezsarModel

    def want(name: str) -> bool:
        return not only or name in only

    out: dict[str, dict[str, Any]] = {}
    model = CezsarModel.load(model_dir).eval()
    if want("torch-cpu-fp32"):
        out["torch-cpu-fp32"] = {
            "fe": TorchRunner(model.frame_encoder, "cpu", False, False).activate(),
            "th": TorchRunner(model.temporal_head, "cpu", False, False).activate(),
            "device": "cpu",
        }
    if want("ort-cpu-fp32"):
        out["ort-cpu-fp32"] = {
            "fe": ort_runner(files["frame_encoder"], "frame_encoder"),
            "th": ort_runner(files["temporal_head"], "temporal_head"),
            "device": "cpu",
        }
    if want("ort-cpu-int8") and "frame_encoder.int8" in files:
        out["ort-cpu-int8"] = {
            "fe": ort_runner(files["frame_encoder.int8"], "frame_encoder"),
            "th": ort_runner(files["temporal_head.int8"], "temporal_head"),
            "device": "cpu",
        }
    if want("ort-cpu-int8-allops") and "frame_encoder.int8.allops" in files:
        out["ort-cpu-int8-allops"] = {
            "fe": ort_runner(files["frame_encoder.int8.allops"], "frame_encoder"),
            "th": ort_runner(files["temporal_head.int8"], "temporal_head"),
            "device": "cpu",
        }
    if not torch.cuda.is_available():
        notes["cuda"] = "torch sees no CUDA device: GPU variants not measured"
        return out
    if want("torch-cuda-fp32"):
        m32 = CezsarModel.load(model_dir).eval().to("cuda")
        out["torch-cuda-fp32"] = {
            "fe": TorchRunner(m32.frame_encoder, "cuda", False, False).activate(),
            "th": TorchRunner(m32.temporal_head, "cuda", False, False).activate(),
            "device": "cuda",
        }
    if want("torch-cuda-fp16"):
        m16 = CezsarModel.load(model_dir).eval().to("cuda").half()
        m16.frame_encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        cfg = m16.config
        fe_shape, th_shape = (3, cfg.pre.size, cfg.pre.size), (cfg.frames, cfg.feature_dim)
        out["torch-cuda-fp16"] = {  # CUDA graphs captured at activation for every bucket
            "fe": TorchRunner(m16.frame_encoder, "cuda", True, True, sample_shape=fe_shape).activate(),
            "th": TorchRunner(m16.temporal_head, "cuda", True, True, sample_shape=th_shape).activate(),
            "device": "cuda",
        }
    for prec in ("fp16", "int8"):
        name = f"tensorrt-{prec}"
        if not want(name):
            continue
        try:
            out[name] = tensorrt_variant(files, prec)
        except Exception as e:  # noqa: BLE001 - TensorRT absent or a build failure: reported, not fatal
            notes[name] = f"not measured: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return out


def tensorrt_variant(files: dict[str, Path], precision: str) -> dict[str, Any]:
    from cezsar.backends.tensorrt import TensorRTRunner
    from cezsar.deploy.layout import engine_path
    from converter.tensorrt_build import build_engine

    runners = {}
    for part, key in (("frame_encoder", "fe"), ("temporal_head", "th")):
        src = files[f"{part}.int8"] if precision == "int8" else files[part]
        engine = engine_path(src.parent, part, precision)
        side = build_engine(src, engine, precision, opt_batch=8, max_batch=64)
        runners[key] = TensorRTRunner(engine, side).activate()
    return {**runners, "device": "cuda"}


def measure(
    variants: dict[str, dict[str, Any]], inputs: dict[str, dict[str, np.ndarray]], iters: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Interleaved: each repetition runs every (variant, part) once, in turn."""
    times: dict[str, dict[str, list[float]]] = {v: {"fe": [], "th": []} for v in variants}
    calls: list[tuple[str, str, Callable[[np.ndarray], np.ndarray], np.ndarray]] = []
    for v, r in variants.items():
        for part in ("fe", "th"):
            calls.append((v, part, r[part], inputs[r["device"]][part]))
    for _ in range(warmup):
        for _v, _part, fn, x in calls:
            fn(x)
    for _ in range(iters):
        for v, part, fn, x in calls:
            t = time.perf_counter()
            fn(x)
            times[v][part].append(time.perf_counter() - t)
    return times


def table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = result["config"]
    t = Table(title=f"towers: {c['backbone']} {c['resolution']}px, T={c['window']}")
    for c in ("variant", "part", "batch", "frames/s", "median ms", "p99 ms"):
        t.add_column(c, justify="right" if c not in ("variant", "part") else "left")
    for v, r in result["variants"].items():
        for part in ("frame_encoder", "temporal_head"):
            p = r[part]
            unit = "frames/s" if part == "frame_encoder" else "windows/s"
            t.add_row(
                v, part, str(r["batch"]), f"{p['per_s']:.1f} {unit}", f"{p['median_ms']:.2f}", f"{p['p99_ms']:.2f}"
            )
    con = Console(stderr=True)
    con.print(t)
    con.print("ratios: " + ", ".join(f"{k}={v}" for k, v in result["ratios"].items()))
    if result.get("int8"):
        con.print(f"int8 gate: mean cosine {result['int8'].get('mean_cosine')} (passed {result['int8'].get('passed')})")
        every = result["int8"].get("frame_encoder_all_ops")
        if every:
            con.print(f"  every op type quantized: mean cosine {every['mean_cosine']}")
    for k, v in result["notes"].items():
        con.print(f"note {k}: {v}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    global THREADS
    t_start = time.perf_counter()
    THREADS = args.threads or bc.machine()["cores"]
    torch.set_num_threads(THREADS)
    only = {v.strip() for v in args.variants.split(",") if v.strip()}
    with tempfile.TemporaryDirectory(prefix="cezsar-bench-") as td:
        root = Path(td)
        if args.backbone == VIT_B32:  # random-weight CLIP ViT-B/32 in a downloaded checkpoint's layout
            from training.random_checkpoints import vit_b32_clip

            backbone = f"hf-clip:{vit_b32_clip(root / 'clip-vit-b32')}"
            how = "CLIP ViT-B/32 vision tower + visual projection, random weights, via hf-clip: (transformers)"
        else:
            backbone, how = bc.resolve_backbone(args.backbone)
        notes: dict[str, str] = {"backbone": how}
        cfg = bc.build_model_dir(root / "model", backbone, args.resolution, args.window, 4.0, None)
        t0 = time.perf_counter()
        files, exporter = export(root / "model", root / "deploy")
        export_s = time.perf_counter() - t0
        int8: dict[str, Any] | None = None
        if not only or only & {"ort-cpu-int8", "tensorrt-int8"}:
            try:
                int8 = quantize(files, cfg, args.int8_method, args.calib_frames)
            except Exception as e:  # noqa: BLE001 - reported; the FP32 variants still run
                notes["int8"] = f"quantization failed: {type(e).__name__}: {e}"
        variants = build_variants(root / "model", files, only, notes)
        rng = np.random.default_rng(0)
        pre = cfg.pre
        frames = pre(__import__("converter.common", fromlist=["x"]).synthetic_frames(args.batch, 240, 320, seed=7))
        inputs: dict[str, dict[str, np.ndarray]] = {}
        batches = {"cpu": args.batch, "cuda": args.gpu_batch}
        for dev, b in batches.items():
            fe_x = np.ascontiguousarray(np.resize(frames, (b, *frames.shape[1:])), dtype=np.float32)
            th_x = rng.standard_normal((b, args.window, cfg.feature_dim)).astype(np.float32)
            inputs[dev] = {"fe": fe_x, "th": th_x}
        times = measure(variants, inputs, args.iters, args.warmup)

    res_vars: dict[str, Any] = {}
    for v, r in variants.items():
        b = batches[r["device"]]
        entry: dict[str, Any] = {"device": r["device"], "batch": b}
        for part, key in (("frame_encoder", "fe"), ("temporal_head", "th")):
            s = bc.stats_ms(times[v][key])
            s["per_s"] = round(1000.0 * b / max(s["median_ms"], 1e-9), 2)
            entry[part] = s
        res_vars[v] = entry

    def fps(v: str) -> float | None:
        return res_vars[v]["frame_encoder"]["per_s"] if v in res_vars else None

    ratios: dict[str, float] = {}
    a, b = fps("ort-cpu-int8"), fps("ort-cpu-fp32")
    if a and b:
        ratios["int8_over_fp32_cpu"] = round(a / b, 3)
    a, b = fps("ort-cpu-int8"), fps("ort-cpu-int8-allops")
    if a and b:
        ratios["int8_weight_layers_over_all_ops_cpu"] = round(a / b, 3)
    a, b = fps("ort-cpu-fp32"), fps("torch-cpu-fp32")
    if a and b:
        ratios["ort_over_torch_cpu"] = round(a / b, 3)
    a, b = fps("torch-cuda-fp16"), fps("torch-cuda-fp32")
    if a and b:
        ratios["fp16_over_fp32_gpu"] = round(a / b, 3)
    if args.backbone == VIT_B32 and args.resolution == 224:
        for v, key in (
            ("ort-cpu-fp32", "vit_b32_frames_per_s_cpu_fp32"),
            ("ort-cpu-int8", "vit_b32_frames_per_s_cpu_int8"),
        ):
            if fps(v):
                ratios[key] = round(float(fps(v) or 0.0), 2)
        best_gpu = max(((fps(v) or 0.0) for v in res_vars if res_vars[v]["device"] == "cuda"), default=0.0)
        if best_gpu:
            ratios["vit_b32_frames_per_s_gpu"] = round(best_gpu, 1)
    if "resnet50" in args.backbone and args.resolution == 224:
        best = max((fps(v) or 0.0) for v in res_vars if res_vars[v]["device"] == "cuda") if variants else 0.0
        if best:
            ratios["resnet50_frames_per_s_gpu"] = round(best, 1)
    targets = {
        "vit_b32_frames_per_s_cpu_fp32": "reported (no target)",
        "vit_b32_frames_per_s_cpu_int8": "reported (no target)",
        "vit_b32_frames_per_s_gpu": "reported (no target)",
        "int8_over_fp32_cpu": ">= 2.0 (and the INT8 gate passes)",
        "int8_weight_layers_over_all_ops_cpu": "reported (the accuracy of each is in int8)",
        "ort_over_torch_cpu": ">= 1.2",
        "fp16_over_fp32_gpu": ">= 3.0 at batch 64",
        "resnet50_frames_per_s_gpu": ">= 25000",
    }
    holds = {
        "vit_b32_frames_per_s_cpu_fp32": lambda r: r > 0,
        "vit_b32_frames_per_s_cpu_int8": lambda r: r > 0,
        "vit_b32_frames_per_s_gpu": lambda r: r > 0,
        "int8_over_fp32_cpu": lambda r: r >= 2.0 and bool(int8 and int8.get("passed")),
        "int8_weight_layers_over_all_ops_cpu": lambda r: r > 0,
        "ort_over_torch_cpu": lambda r: r >= 1.2,
        "fp16_over_fp32_gpu": lambda r: r >= 3.0,
        "resnet50_frames_per_s_gpu": lambda r: r >= 25000,
    }
    return {
        "benchmark": "tower",
        "machine": bc.machine(),
        "versions": bc.versions(),
        "config": {
            "backbone": args.backbone,
            "backbone_used": backbone,
            "resolution": args.resolution,
            "batch": args.batch,
            "gpu_batch": args.gpu_batch,
            "window": args.window,
            "feature_dim": cfg.feature_dim,
            "iters": args.iters,
            "warmup": args.warmup,
            "threads": THREADS,
            "exporter": exporter,
            "export_seconds": round(export_s, 2),
        },
        "variants": res_vars,
        "int8": int8,
        "ratios": ratios,
        "targets": {k: {"target": targets[k], "value": v, "holds": bool(holds[k](v))} for k, v in ratios.items()},
        "notes": notes,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run(args)
    table(result)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
