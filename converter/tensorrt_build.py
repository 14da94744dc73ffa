"""TensorRT engines for the frame encoder and temporal head (``cezsar build-engine``).

One code path for TensorRT 8.5 (JetPack 5), 8.6 / 10.x (JetPack 6, desktop) and 11.x, by feature
detection rather than version numbers where the API allows it:

- network creation: ``EXPLICIT_BATCH`` only before 10.0 (10.x: deprecated and ignored; ONNX
  networks are always explicit batch); ``STRONGLY_TYPED`` where the flag exists, for Q/DQ INT8,
  and always on 11.x, where weak typing and the FP16/INT8 builder flags are gone;
- precision: ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` only where the flag exists. Where FP16 has
  no builder flag (11.x), the FP32 ONNX is converted to FP16 first (float32 inputs/outputs kept,
  LayerNormalization, Softmax and reductions kept in FP32). fp32 engines clear ``BuilderFlag.TF32``
  (on by default since 7.1) where the flag exists, so that an fp32 engine computes in FP32 and meets
  ``cezsar check-engine``'s fp32 tolerance;
- workspace: ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)`` (8.4+), else the
  old ``max_workspace_size``;
- build: ``build_serialized_network`` (8.0+), else ``build_engine(...).serialize()``;
- timing cache: loaded from ``--timing-cache`` if present, saved atomically after each build.

Only build code lives here. Where engines and their sidecars go is cezsar.deploy.layout's answer;
the sidecar (what an engine was built from and for) is written with cezsar.deploy.sidecar, which
also checks it at load; finding TensorRT and the GPU, and the one TensorRT logger, are
cezsar.deploy.tensorrt's.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cezsar.deploy import layout
from cezsar.deploy.manifest import file_sha256, load_manifest
from cezsar.deploy.sidecar import write_sidecar
from cezsar.deploy.tensorrt import error_mark, gpu_info, last_error, require_tensorrt, trt_logger, trt_version
from cezsar.errors import CezsarError
from converter.common import onnx_opset

log = logging.getLogger("cezsar.tensorrt")

PARTS = layout.VIDEO_PARTS
PRECISIONS = layout.PRECISIONS


# -- version-dependent choices (pure functions of the module's features; tested with stand-ins) --


def build_plan(trt: Any, precision: str, onnx_fp16: bool = False) -> dict[str, Any]:
    """How to build ``precision`` with this TensorRT: network flags, builder flags, FP16 conversion.

    ``onnx_fp16``: the ONNX already carries FP16 tensors (an INT8 Q/DQ model quantized with FP16 as its
    high precision, see converter.quantizers.high_precision_for).
    """
    if precision not in PRECISIONS:
        raise CezsarError(f"--precision {precision}: choose fp16 or int8 (or fp32)")
    major, _ = trt_version(trt)
    ndf = trt.NetworkDefinitionCreationFlag
    bf = trt.BuilderFlag
    has_strong = hasattr(ndf, "STRONGLY_TYPED")
    weak_removed = major >= 11 or not hasattr(bf, "FP16")  # 11.x: strong typing is the only mode
    plan: dict[str, Any] = {
        "explicit_batch": False,
        "strongly_typed": False,
        "builder_flags": [],
        "cleared_flags": [],
        "fp16_onnx": False,
    }
    if major < 10 and hasattr(ndf, "EXPLICIT_BATCH"):
        plan["explicit_batch"] = True  # required for ONNX before 10.0; deprecated and ignored from 10.0
    if precision == "fp16":
        if not weak_removed:
            plan["builder_flags"] = ["FP16"]
        else:
            plan["strongly_typed"] = has_strong
            plan["fp16_onnx"] = True
    elif precision == "int8":
        if has_strong and (onnx_fp16 or weak_removed):
            plan["strongly_typed"] = True  # Q/DQ decide what runs in INT8; the rest keeps the ONNX types
        else:
            # explicit Q/DQ on a weakly typed network, FP16 allowed for the other layers (8.x; 10.x when
            # the Q/DQ model kept FP32 there, which strong typing would run in FP32)
            plan["builder_flags"] = ["INT8", "FP16"]
    else:
        plan["strongly_typed"] = has_strong and weak_removed
        if hasattr(bf, "TF32"):
            plan["cleared_flags"] = ["TF32"]  # TF32 is on by default: 10-bit mantissa in convolutions/GEMMs
    return plan


def network_flags(trt: Any, plan: dict[str, Any]) -> int:
    ndf = trt.NetworkDefinitionCreationFlag
    flags = 0
    if plan["explicit_batch"]:
        flags |= 1 << int(ndf.EXPLICIT_BATCH)
    if plan["strongly_typed"]:
        flags |= 1 << int(ndf.STRONGLY_TYPED)
    return flags


def set_workspace(trt: Any, config: Any, nbytes: int) -> str:
    """Limit the builder workspace; returns which API was used."""
    if hasattr(config, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))
        return "set_memory_pool_limit"
    config.max_workspace_size = int(nbytes)
    return "max_workspace_size"


def serialize_network(builder: Any, network: Any, config: Any) -> bytes | None:
    if hasattr(builder, "build_serialized_network"):
        blob = builder.build_serialized_network(network, config)
        return None if blob is None else bytes(memoryview(blob))
    engine = builder.build_engine(network, config)
    return None if engine is None else bytes(memoryview(engine.serialize()))


# -- FP16 ONNX for TensorRT without the FP16 builder flag ------------------------------------------

FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceL2", "ReduceSum", "Pow", "Sqrt", "Erf"]


def to_fp16_onnx(src: Path, dst: Path) -> str:
    """FP32 ONNX -> FP16 weights/activations with float32 inputs/outputs; normalisation math stays FP32.

    ModelOpt AutoCast (NVIDIA's recommended path for strongly typed TensorRT), else onnxconverter-common.
    Returns which converter was used.
    """
    import onnx

    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision

        with contextlib.redirect_stdout(sys.stderr):
            half = convert_to_mixed_precision(
                str(src), low_precision_type="fp16", op_types_to_exclude=list(FP32_OPS), keep_io_types=True
            )
        onnx.save(half, str(dst))
        return "modelopt.autocast"
    except ImportError:
        pass
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise CezsarError(
            "this TensorRT has no FP16 builder flag (strong typing only) and FP16 needs an FP16 ONNX: "
            "pip install nvidia-modelopt (or onnxconverter-common)"
        ) from None
    half = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=FP32_OPS)
    onnx.save(half, str(dst))
    return "onnxconverter_common"


# -- building -----------------------------------------------------------------------------------


def _onnx_checks(trt: Any, onnx_path: Path) -> dict[str, Any]:
    """Refuse ONNX this TensorRT's parser cannot read, with the fix."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    opset = onnx_opset(model)
    ops = {n.op_type for n in model.graph.node}
    fp16 = onnx.TensorProto.FLOAT16
    has_fp16 = any(t.data_type == fp16 for t in model.graph.initializer) or any(
        a.name == "to" and a.i == fp16 for n in model.graph.node if n.op_type == "Cast" for a in n.attribute
    )
    major, minor = trt_version(trt)
    if (major, minor) < (8, 6) and "LayerNormalization" in ops:
        raise CezsarError(
            f"{onnx_path.name}: LayerNormalization (opset 17) is not parsed by TensorRT {major}.{minor}; "
            "re-export with `cezsar export MODEL --out DIR --opset 16` (JetPack 5)"
        )
    if major < 10 and opset > 17:
        raise CezsarError(
            f"{onnx_path.name}: ONNX opset {opset}, TensorRT {major}.{minor} parses opsets up to 17; "
            "re-export with --opset 16/17 and re-run `cezsar quantize`"
        )
    return {"opset": opset, "fp16": has_fp16}


def _builder(trt: Any, logger: Any, mark: Any) -> Any:
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # noqa: BLE001 - no GPU or driver: TensorRT cannot start
        why = str(e).strip() or last_error(mark)
        raise CezsarError(f"TensorRT cannot create a builder (no usable CUDA GPU or driver here?): {why}") from None
    if builder is None:
        raise CezsarError(f"TensorRT cannot create a builder ({last_error(mark)})")
    return builder


def _parse(trt: Any, builder: Any, plan: dict[str, Any], onnx_path: Path, logger: Any, mark: Any) -> Any:
    """The network of ``onnx_path`` (through an FP16 copy when the plan says so)."""
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory(prefix="cezsar-trt-") as td:
        parse_path = onnx_path
        if plan["fp16_onnx"]:
            parse_path = Path(td) / (onnx_path.stem + ".fp16.onnx")
            plan["fp16_onnx"] = to_fp16_onnx(onnx_path, parse_path)
        if hasattr(parser, "parse_from_file"):
            ok = parser.parse_from_file(str(parse_path))
        else:
            ok = parser.parse(parse_path.read_bytes())
        if not ok:
            errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise CezsarError(f"{onnx_path.name}: TensorRT cannot parse it ({errs[0] if errs else last_error(mark)})")
    return network


def _profile(
    builder: Any, network: Any, onnx_path: Path, batches: tuple[int, int, int]
) -> tuple[Any, dict[str, list[int]], dict[str, list[int]]]:
    """The optimization profile over the batch dimension, and the inputs' and outputs' shapes."""
    profile = builder.create_optimization_profile()
    inputs, outputs = {}, {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if any(d == -1 for d in shape[1:]):
            raise CezsarError(f"{onnx_path.name}: input '{t.name}' has dynamic dims besides the batch: {shape}")
        rest = tuple(shape[1:])
        profile.set_shape(t.name, *((b, *rest) for b in batches))
        inputs[t.name] = shape
    for i in range(network.num_outputs):
        t = network.get_output(i)
        outputs[t.name] = list(t.shape)
    return profile, inputs, outputs


def _load_timing_cache(config: Any, cache_path: Path | None) -> bool:
    """Reuse a timing cache file when this TensorRT and GPU made it; True when one was reused."""
    if cache_path is None or not hasattr(config, "create_timing_cache"):
        return False
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    loaded = bool(data) and bool(config.set_timing_cache(config.create_timing_cache(data), False))
    if data and not loaded:
        log.warning("%s: timing cache from another TensorRT/GPU; starting a new one", cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    return loaded


def _save_timing_cache(config: Any, cache_path: Path | None) -> None:
    from cezsar.atomic import write_bytes

    if cache_path is not None and hasattr(config, "get_timing_cache"):
        tc = config.get_timing_cache()
        if tc is not None:
            write_bytes(cache_path, bytes(memoryview(tc.serialize())))


def build_engine(
    onnx_path: str | Path,
    engine_out: str | Path,
    precision: str,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 64,
    workspace_mb: int = 1024,
    timing_cache: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one engine from one ONNX file (dynamic batch dim 0) and write engine + sidecar atomically."""
    from cezsar import __version__
    from cezsar.atomic import write_bytes

    trt = require_tensorrt()
    onnx_path, engine_out = Path(onnx_path), Path(engine_out)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise CezsarError(
            f"batch profile must satisfy 1 <= min <= opt <= max (got {min_batch}, {opt_batch}, {max_batch})"
        )
    if workspace_mb < 16:
        raise CezsarError(f"--workspace-mb {workspace_mb}: too small (>= 16)")
    info = _onnx_checks(trt, onnx_path)
    plan = build_plan(trt, precision, onnx_fp16=info["fp16"])
    if precision == "int8":
        from converter.qdq_check import check_trt_qdq

        check_trt_qdq(onnx_path)
    t0 = time.perf_counter()
    logger, mark = trt_logger(trt), error_mark()
    builder = _builder(trt, logger, mark)
    network = _parse(trt, builder, plan, onnx_path, logger, mark)
    config = builder.create_builder_config()
    workspace_api = set_workspace(trt, config, workspace_mb << 20)
    for flag in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan["cleared_flags"]:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    profile, inputs, outputs = _profile(builder, network, onnx_path, (min_batch, opt_batch, max_batch))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_loaded = _load_timing_cache(config, cache_path)
    blob = serialize_network(builder, network, config)
    if blob is None:
        raise CezsarError(f"{onnx_path.name}: TensorRT {precision} build failed ({last_error(mark)})")
    _save_timing_cache(config, cache_path)
    write_bytes(engine_out, blob)
    side = {
        "engine": engine_out.name,
        "engine_sha256": file_sha256(engine_out),
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "onnx_opset": info["opset"],
        "precision": precision,
        "tensorrt_version": str(trt.__version__),
        **gpu_info(),
        "inputs": inputs,
        "outputs": outputs,
        "profile": {"min": min_batch, "opt": opt_batch, "max": max_batch},
        "workspace_mb": workspace_mb,
        "workspace_api": workspace_api,
        "strongly_typed": plan["strongly_typed"],
        "explicit_batch_flag": plan["explicit_batch"],
        "builder_flags": plan["builder_flags"],
        "cleared_builder_flags": plan["cleared_flags"],
        "fp16_onnx_conversion": plan["fp16_onnx"],
        "timing_cache": str(cache_path) if cache_path else None,
        "timing_cache_reused": cache_loaded,
        "cezsar_version": __version__,
        "build_seconds": round(time.perf_counter() - t0, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    return write_sidecar(engine_out, side)


def build_engines(
    deploy_dir: str | Path,
    precision: str = "fp16",
    workspace_mb: int = 1024,
    max_batch: int = 64,
    opt_batch: int | None = None,
    timing_cache: str | Path | None = None,
    parts: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Build the engines of a deploy folder; returns their sidecars (with "engine" paths)."""
    require_tensorrt()
    deploy = Path(deploy_dir)
    m = load_manifest(deploy)
    parts = parts or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise CezsarError(f"--parts: unknown part {bad[0]!r} (choose from {', '.join(PARTS)})")
    if max_batch < 1:
        raise CezsarError(f"--max-batch {max_batch}: must be >= 1")
    cache = Path(timing_cache) if timing_cache else layout.timing_cache_path(deploy)
    results = []
    for part in parts:
        src = layout.engine_source(deploy, m, part, precision)
        default_opt = min(m.window, max_batch) if part == "frame_encoder" else 1
        opt = min(max(1, opt_batch if opt_batch else default_opt), max_batch)
        out = layout.engine_path(deploy, part, precision)
        side = build_engine(
            src,
            out,
            precision,
            1,
            opt,
            max_batch,
            workspace_mb,
            cache,
            extra={"part": part, "model_hash": m.model_hash},
        )
        side["engine"] = str(out)
        results.append(side)
        log.info("built %s (%s) in %.1f s", out, precision, side["build_seconds"])
    return results
