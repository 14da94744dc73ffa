"""The files of a deploy folder: the only module that names them.

    manifest.json             the contract (cezsar.deploy.manifest); written last by every step
    frame_encoder.onnx        input "frames"   [N, 3, S, S] float32 -> output "features"  [N, D]
    temporal_head.onnx        input "features" [B, T, D]    float32 -> output "embedding" [B, J]
    text_encoder.onnx         inputs "input_ids", "attention_mask" [B, L] int64 -> "embedding" [B, J]
    tokenizer.json            for the ``tokenizers`` library
    calibration.json          the score calibration (cezsar.scorecal): raw margin -> probability, default
                              thresholds; also in the model folder, where training writes it
    model/                    copy of the trained model folder, for the torch backend
    <part>.int8.onnx          ``cezsar quantize --target tensorrt``: Q/DQ INT8 by TensorRT's rules
    <part>.int8-cpu.onnx      ``cezsar quantize --target cpu``: INT8 laid out for onnxruntime's CPU kernels
    <part>.<precision>.engine ``cezsar build-engine``: TensorRT engine (precision fp16, int8 or fp32)
    <part>.<precision>.engine.json   its sidecar (cezsar.deploy.sidecar)
    tensorrt.timing-cache     the builder's timing cache, reused across builds
    ort-tensorrt-cache/       onnxruntime's TensorRT execution provider: its engine and timing caches

Manifest ``files`` keys: the parts, "tokenizer", "model_dir", "calibration" (when the model has one), and
the INT8 files' keys (:func:`int8_key`: "frame_encoder.int8", "frame_encoder.int8-cpu", ...). Engines are
tied to one GPU and TensorRT version, so the manifest does not list them; their sidecars tie them to the
ONNX they were built from.

Each backend (cezsar/backends) declares which of these files serves it (``Backend.serving_file``), asking
this module for the names: :func:`onnx_file` (the ONNX a (part, precision, device) runs), :func:`engine_file`
(a built TensorRT engine), :func:`model_folder` (the trained model folder). This module names files, not
backends; the converter asks it where to write.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cezsar.errors import CezsarError

if TYPE_CHECKING:
    from cezsar.deploy.manifest import Manifest

MANIFEST = "manifest.json"
PARTS = ("frame_encoder", "temporal_head", "text_encoder")
VIDEO_PARTS = ("frame_encoder", "temporal_head")  # the parts the backends run
TOKENIZER = "tokenizer"  # manifest ``files`` key of the tokenizer
MODEL_DIR = "model_dir"  # manifest ``files`` key of the model folder copy
CALIBRATION = "calibration"  # manifest ``files`` key of the score calibration
INT8_TARGETS = ("tensorrt", "cpu")
# the precisions a network of a deploy folder runs at (engines and INT8 files are named by them); the one list
PRECISIONS = ("fp32", "fp16", "int8")

_INT8_VARIANT = {"tensorrt": "int8", "cpu": "int8-cpu"}
_NAMES = {TOKENIZER: "tokenizer.json", MODEL_DIR: "model", CALIBRATION: "calibration.json"}
_ENGINE_SUFFIX = ".engine"
_SIDECAR_SUFFIX = ".json"
_TIMING_CACHE = "tensorrt.timing-cache"
_ORT_TRT_CACHE = "ort-tensorrt-cache"


def _check_part(part: str, parts: tuple[str, ...] = PARTS) -> None:
    if part not in parts and part != "*":
        raise CezsarError(f"unknown part {part!r} (choose from {', '.join(parts)})")


# -- names -------------------------------------------------------------------------------------------


def manifest_path(deploy_dir: str | Path) -> Path:
    return Path(deploy_dir) / MANIFEST


def onnx_name(part: str) -> str:
    """The FP32 ONNX export of ``part``."""
    _check_part(part)
    return f"{part}.onnx"


def export_files(parts: tuple[str, ...] = PARTS) -> dict[str, str]:
    """The manifest ``files`` entries of an export of ``parts``: the ONNX files, the tokenizer when the
    text encoder is exported, and the model folder copy."""
    files = {p: onnx_name(p) for p in parts}
    if "text_encoder" in parts:
        files[TOKENIZER] = _NAMES[TOKENIZER]
    files[MODEL_DIR] = _NAMES[MODEL_DIR]
    return files


def calibration_name() -> str:
    """The score calibration's file name: in a deploy folder and in a model folder alike."""
    return _NAMES[CALIBRATION]


def int8_key(part: str, target: str = "tensorrt") -> str:
    """Manifest key of the INT8 model of ``part`` for a quantization target ("tensorrt" or "cpu")."""
    _check_part(part, VIDEO_PARTS)
    if target not in _INT8_VARIANT:
        raise CezsarError(f"--target {target}: choose one of {', '.join(INT8_TARGETS)}")
    return f"{part}.{_INT8_VARIANT[target]}"


def int8_name(part: str, target: str = "tensorrt") -> str:
    """File name of the INT8 model of ``part`` for ``target``; ``part="*"`` gives the pattern for help texts."""
    return f"{int8_key(part, target)}.onnx"


def engine_path(deploy_dir: str | Path, part: str, precision: str) -> Path:
    _check_part(part, VIDEO_PARTS)
    if precision not in PRECISIONS:
        raise CezsarError(f"--precision {precision}: engines are fp16, int8 or fp32")
    return Path(deploy_dir) / f"{part}.{precision}{_ENGINE_SUFFIX}"


def engine_precision(engine: str | Path) -> str:
    """The precision an engine file's name says (``frame_encoder.fp16.engine`` -> "fp16")."""
    name = Path(engine).name
    stem = name[: -len(_ENGINE_SUFFIX)] if name.endswith(_ENGINE_SUFFIX) else name
    return stem.rpartition(".")[2]


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + _SIDECAR_SUFFIX)


def timing_cache_path(deploy_dir: str | Path) -> Path:
    return Path(deploy_dir) / _TIMING_CACHE


def ort_tensorrt_cache_dir(deploy_dir: str | Path) -> Path:
    """Where onnxruntime's TensorRT execution provider keeps the engines it builds (and its timing cache):
    inside the deploy folder, never the working directory."""
    return Path(deploy_dir) / _ORT_TRT_CACHE


# -- which file serves (part, precision, device) --------------------------------------------------------


def engine_source(deploy_dir: str | Path, manifest: Manifest, part: str, precision: str) -> Path:
    """The ONNX an engine of ``precision`` is built from: the FP32 export for fp16/fp32, Q/DQ for int8."""
    if precision == "int8":
        key = int8_key(part, "tensorrt")
        if key not in manifest.files:
            raise CezsarError(
                f"{deploy_dir}: no {int8_name(part, 'tensorrt')}; run `cezsar quantize {deploy_dir} --calib ...` first"
            )
        return manifest.path(deploy_dir, key)
    return manifest.path(deploy_dir, part)


def _int8_file(deploy_dir: Path, manifest: Manifest, part: str, target: str) -> Path | None:
    """The INT8 file of ``part`` for ``target``, verified when the manifest lists it; else None."""
    key = int8_key(part, target)
    p = deploy_dir / manifest.files.get(key, int8_name(part, target))
    if not p.is_file():
        return None
    return manifest.verified(deploy_dir, key) if key in manifest.files else p


def onnx_file(deploy_dir: str | Path, manifest: Manifest, part: str, precision: str, device: str = "cpu") -> Path:
    """The ONNX file onnxruntime runs for ``part`` at ``precision`` on ``device`` (verified against the manifest).

    fp32 and fp16 (the TensorRT execution provider's FP16) run the export; int8 on the CPU prefers the
    CPU INT8 model and falls back to the TensorRT Q/DQ one (correct, but slower than FP32 there); int8
    on CUDA/TensorRT takes the Q/DQ model only.
    """
    deploy_dir = Path(deploy_dir)
    if precision != "int8":
        return manifest.verified(deploy_dir, part)
    if device == "cpu":
        p = _int8_file(deploy_dir, manifest, part, "cpu")
        if p is not None:
            return p
    p = _int8_file(deploy_dir, manifest, part, "tensorrt")
    if p is None:
        target = "cpu" if device == "cpu" else "tensorrt"
        want = int8_name(part, "tensorrt")
        if device == "cpu":
            want += f" or, faster on the CPU, {int8_name(part, 'cpu')}"
        raise CezsarError(
            f"{deploy_dir}: --precision int8 needs {want} "
            f"(run `cezsar quantize {deploy_dir} --calib ... --target {target}` first)"
        )
    return p


def is_cpu_int8(path: str | Path) -> bool:
    """Whether ``path`` is a CPU-layout INT8 model (``--target cpu``)."""
    return Path(path).name.endswith(int8_name("*", "cpu").lstrip("*"))


def model_folder(deploy_dir: str | Path, manifest: Manifest) -> Path:
    """The copy of the trained model folder (the torch backend's input)."""
    deploy_dir = Path(deploy_dir)
    if MODEL_DIR in manifest.files:
        folder = manifest.path(deploy_dir, MODEL_DIR)
    else:
        folder = deploy_dir / _NAMES[MODEL_DIR]
    if not folder.is_dir():
        raise CezsarError(
            f"{deploy_dir}: no {_NAMES[MODEL_DIR]}/ folder for the torch backend (re-run `cezsar export`)"
        )
    return folder


def engine_file(deploy_dir: str | Path, part: str, precision: str) -> Path:
    """The built TensorRT engine of ``part`` at ``precision``; CezsarError names the command that builds it."""
    engine = engine_path(deploy_dir, part, precision)
    if not engine.is_file():
        raise CezsarError(
            f"{engine}: no {precision} engine; build it with `cezsar build-engine {deploy_dir} --precision {precision}`"
        )
    return engine
