"""TensorRT engines for the frame encoder and temporal head (``cezsar build-engine``).

One code path for TensorRT 8.5 (JetPack 5), 8.6 / 10.x (JetPack 6, desktop) and 11.x, by feature
detection rather than version numbers where the API allows it:

- network creation: ``EXPLICIT_BATCH`` only before 10.0 (10.x: deprecated and ignored; ONNX
  networks are always explicit batch); ``STRONGLY_TYPED`` where the flag exists, for Q/DQ INT8,
  and always on 11.x, where weak typing and the FP16/INT8 builder flags are gone;
- precision: ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` only where the flag exists. Where FP16 has
  no builder flag (11.x), the FP32 ONNX is converted to FP16 first (float32 inputs/outputs kept,
  LayerNormalization, Softmax and reductions kept in FP32);
- workspace: ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)`` (8.4+), else the
  old ``max_workspace_size``;
- build: ``build_serialized_network`` (8.0+), else ``build_engine(...).serialize()``;
- timing cache: loaded from ``--timing-cache`` if present, saved atomically after each build.

Engine naming: ``DEPLOY_DIR/<part>.<precision>.engine`` (``frame_encoder.fp16.engine``,
``temporal_head.int8.engine``, ...) with a JSON sidecar ``<part>.<precision>.engine.json`` that records
what the engine was built from and for (TensorRT version, GPU and compute capability, ONNX sha256,
profile); :func:`check_sidecar` refuses a stale engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError

log = logging.getLogger("cezsar.tensorrt")

PARTS = ("frame_encoder", "temporal_head")
PRECISIONS = ("fp16", "int8", "fp32")
SIDECAR_FORMAT = "cezsar-engine"
SIDECAR_VERSION = 1

TRT_MISSING = (
    "TensorRT is not installed: on Jetson it comes with JetPack (sudo apt install nvidia-tensorrt "
    "python3-libnvinfer); on a desktop GPU run `pip install tensorrt` (NVIDIA's wheels, also at "
    "https://pypi.nvidia.com) or install NVIDIA's TensorRT packages"
)


# -- finding TensorRT ---------------------------------------------------------------------------


def tensorrt_module() -> Any | None:
    """The ``tensorrt`` module if the real library is importable (the PyPI placeholder lacks Builder)."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        return None
    return trt if hasattr(trt, "Builder") else None


def require_tensorrt() -> Any:
    trt = tensorrt_module()
    if trt is None:
        raise CezsarError(TRT_MISSING)
    return trt


def trt_version(trt: Any) -> tuple[int, int]:
    parts = str(getattr(trt, "__version__", "0.0")).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


def gpu_info() -> dict[str, str]:
    """{"gpu": name, "compute_capability": "8.7"} of CUDA device 0, through torch or cuda-python."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    cudart = cuda_runtime()
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}
    return {"gpu": "unknown", "compute_capability": "unknown"}


def cuda_runtime() -> Any | None:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+, 13) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[attr-defined]

        return cudart
    except ImportError:
        return None


# -- version-dependent choices (pure functions of the module's features; tested with stand-ins) --


def build_plan(trt: Any, precision: str) -> dict[str, Any]:
    """How to build ``precision`` with this TensorRT: network flags, builder flags, FP16 conversion."""
    if precision not in PRECISIONS:
        raise CezsarError(f"--precision {precision}: choose fp16 or int8 (or fp32)")
    major, _ = trt_version(trt)
    ndf = trt.NetworkDefinitionCreationFlag
    bf = trt.BuilderFlag
    has_strong = hasattr(ndf, "STRONGLY_TYPED")
    weak_removed = major >= 11 or not hasattr(bf, "FP16")  # 11.x: strong typing is the only mode
    plan: dict[str, Any] = {"explicit_batch": False, "strongly_typed": False, "builder_flags": [], "fp16_onnx": False}
    if major < 10 and hasattr(ndf, "EXPLICIT_BATCH"):
        plan["explicit_batch"] = True  # required for ONNX before 10.0; deprecated and ignored from 10.0
    if precision == "fp16":
        if not weak_removed:
            plan["builder_flags"] = ["FP16"]
        else:
            plan["strongly_typed"] = has_strong
            plan["fp16_onnx"] = True
    elif precision == "int8":
        if has_strong:
            plan["strongly_typed"] = True  # Q/DQ decide what runs in INT8; the rest keeps the ONNX types
        else:
            plan["builder_flags"] = ["INT8", "FP16"]  # 8.5/8.6: explicit Q/DQ, FP16 for the other layers
    else:
        plan["strongly_typed"] = has_strong and weak_removed
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


# -- file naming, sidecar -----------------------------------------------------------------------


def engine_path(deploy_dir: str | Path, part: str, precision: str) -> Path:
    return Path(deploy_dir) / f"{part}.{precision}.engine"


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def onnx_source(deploy_dir: str | Path, manifest: Any, part: str, precision: str) -> Path:
    """The ONNX an engine of ``precision`` is built from: FP32 export for fp16/fp32, Q/DQ for int8."""
    if precision == "int8":
        key = f"{part}.int8"
        if key not in manifest.files:
            raise CezsarError(
                f"{deploy_dir}: no {part}.int8.onnx; run `cezsar quantize {deploy_dir} --calib ...` first"
            )
        return Path(manifest.path(deploy_dir, key))
    return Path(manifest.path(deploy_dir, part))


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    side = sidecar_path(engine)
    if not side.is_file():
        raise CezsarError(f"{engine}: no sidecar {side.name}; rebuild with `cezsar build-engine`")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CezsarError(f"{side}: unreadable ({e}); rebuild with `cezsar build-engine`") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise CezsarError(f"{side}: not a cezsar engine sidecar; rebuild with `cezsar build-engine`")
    return data


def check_sidecar(
    engine: str | Path,
    onnx_path: str | Path,
    tensorrt_version: str | None = None,
    gpu: dict[str, str] | None = None,
) -> None:
    """Raise CezsarError when ``engine`` is missing or stale for ``onnx_path`` on this machine.

    Stale: the ONNX changed since the build, or the engine was built with another TensorRT version,
    for another GPU or compute capability, or the engine file was replaced. ``tensorrt_version`` and
    ``gpu`` default to what is installed here.
    """
    from cezsar.manifest import file_sha256

    engine = Path(engine)
    rebuild = f"rebuild with `cezsar build-engine {engine.parent} --precision {engine.suffixes[0].lstrip('.')}`"
    if not engine.is_file():
        raise CezsarError(f"{engine}: engine not found; {rebuild}")
    side = read_sidecar(engine)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CezsarError(f"{engine}: its ONNX {onnx_path} is missing")
    if side.get("onnx_sha256") != file_sha256(onnx_path):
        raise CezsarError(f"{engine}: stale, {onnx_path.name} changed since the engine was built; {rebuild}")
    if side.get("engine_sha256") and side["engine_sha256"] != file_sha256(engine):
        raise CezsarError(f"{engine}: the engine file does not match its sidecar (replaced or corrupt); {rebuild}")
    if tensorrt_version is None:
        trt = tensorrt_module()
        tensorrt_version = str(trt.__version__) if trt is not None else None
    if tensorrt_version is not None and side.get("tensorrt_version") != tensorrt_version:
        built = side.get("tensorrt_version")
        raise CezsarError(f"{engine}: built with TensorRT {built}, this machine has {tensorrt_version}; {rebuild}")
    gpu = gpu if gpu is not None else gpu_info()
    cc, name = gpu.get("compute_capability", "unknown"), gpu.get("gpu", "unknown")
    if cc != "unknown" and side.get("compute_capability") != cc:
        raise CezsarError(
            f"{engine}: built for compute capability {side.get('compute_capability')} ({side.get('gpu')}), "
            f"this GPU is {cc} ({name}); {rebuild}"
        )
    if name != "unknown" and side.get("gpu") != name:
        raise CezsarError(f"{engine}: built on {side.get('gpu')}, this GPU is {name}; {rebuild}")


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


class _Logger:
    """Collects TensorRT's warnings/errors so that a failed build can say why in one line."""

    def __init__(self, trt: Any) -> None:
        self.messages: list[str] = []
        base = trt.ILogger

        outer = self

        class L(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                base.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                if int(severity) <= int(trt.ILogger.Severity.WARNING):
                    outer.messages.append(str(msg))
                    log.debug("tensorrt: %s", msg)

        self.logger = L()

    def last_error(self) -> str:
        return self.messages[-1] if self.messages else "no message from TensorRT"


def _onnx_checks(trt: Any, onnx_path: Path) -> dict[str, Any]:
    """Refuse ONNX this TensorRT's parser cannot read, with the fix."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    ops = {n.op_type for n in model.graph.node}
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
    return {"opset": opset}


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
    from cezsar.atomic import write_bytes, write_json
    from cezsar.manifest import file_sha256

    trt = require_tensorrt()
    onnx_path, engine_out = Path(onnx_path), Path(engine_out)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise CezsarError(
            f"batch profile must satisfy 1 <= min <= opt <= max (got {min_batch}, {opt_batch}, {max_batch})"
        )
    if workspace_mb < 16:
        raise CezsarError(f"--workspace-mb {workspace_mb}: too small (>= 16)")
    info = _onnx_checks(trt, onnx_path)
    plan = build_plan(trt, precision)
    if precision == "int8":
        from converter.qdq_check import check_trt_qdq

        check_trt_qdq(onnx_path)
    t0 = time.perf_counter()
    tl = _Logger(trt)
    builder = trt.Builder(tl.logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, tl.logger)
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
            raise CezsarError(f"{onnx_path.name}: TensorRT cannot parse it ({errs[0] if errs else tl.last_error()})")
    config = builder.create_builder_config()
    workspace_api = set_workspace(trt, config, workspace_mb << 20)
    for flag in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    inputs, outputs = {}, {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if any(d == -1 for d in shape[1:]):
            raise CezsarError(f"{onnx_path.name}: input '{t.name}' has dynamic dims besides the batch: {shape}")
        rest = tuple(shape[1:])
        profile.set_shape(t.name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
        inputs[t.name] = shape
    for i in range(network.num_outputs):
        t = network.get_output(i)
        outputs[t.name] = list(t.shape)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_loaded = False
    if cache_path is not None and hasattr(config, "create_timing_cache"):
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        cache_loaded = bool(data) and bool(config.set_timing_cache(cache, False))
        if data and not cache_loaded:
            log.warning("%s: timing cache from another TensorRT/GPU; starting a new one", cache_path)
            config.set_timing_cache(config.create_timing_cache(b""), False)
    blob = serialize_network(builder, network, config)
    if blob is None:
        raise CezsarError(f"{onnx_path.name}: TensorRT {precision} build failed ({tl.last_error()})")
    if cache_path is not None and hasattr(config, "get_timing_cache"):
        tc = config.get_timing_cache()
        if tc is not None:
            write_bytes(cache_path, bytes(memoryview(tc.serialize())))
    write_bytes(engine_out, blob)
    side = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
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
        "fp16_onnx_conversion": plan["fp16_onnx"],
        "timing_cache": str(cache_path) if cache_path else None,
        "timing_cache_reused": cache_loaded,
        "cezsar_version": __version__,
        "build_seconds": round(time.perf_counter() - t0, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    write_json(sidecar_path(engine_out), side)
    return side


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
    from cezsar.manifest import load_manifest

    require_tensorrt()
    deploy = Path(deploy_dir)
    m = load_manifest(deploy)
    parts = parts or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise CezsarError(f"--parts: unknown part {bad[0]!r} (choose from {', '.join(PARTS)})")
    if max_batch < 1:
        raise CezsarError(f"--max-batch {max_batch}: must be >= 1")
    cache = Path(timing_cache) if timing_cache else deploy / "tensorrt.timing-cache"
    results = []
    for part in parts:
        src = onnx_source(deploy, m, part, precision)
        default_opt = min(m.window, max_batch) if part == "frame_encoder" else 1
        opt = min(max(1, opt_batch if opt_batch else default_opt), max_batch)
        out = engine_path(deploy, part, precision)
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
