"""onnxruntime backend: the deploy folder's ONNX files in an InferenceSession.

Devices: "cpu" (CPUExecutionProvider), "cuda" (CUDAExecutionProvider, CPU fallback), "tensorrt"
(TensorrtExecutionProvider, then CUDA, then CPU). Precisions: fp32 = the exported files; int8 = the
files written by ``cezsar quantize`` (a clear error if absent): on the CPU the ``*.int8-cpu.onnx``
files (laid out for onnxruntime's CPU integer kernels, ``--target cpu``), else ``*.int8.onnx`` with a
log line that it runs slower there; on CUDA/TensorRT the ``*.int8.onnx`` files; fp16 = the fp32 files
run in FP16 by the TensorRT execution provider (only there: CPU and CUDA providers run fp32 graphs
as fp32, so fp16 is refused rather than silently ignored).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.manifest import Manifest, verified_path
from edge.backends.base import Backend, Runner

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    n = threads if threads is not None else int(os.environ.get("CEZSAR_THREADS", "0") or 0)
    if n > 0:
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no busy-waiting between operators: the reader threads decode on the same cores, and spinning
    # intra-op threads steal their time (measured: 1.2x slower inference on a shared 2-core box)
    if os.environ.get("CEZSAR_ORT_SPIN", "0") != "1":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def _int8_file(deploy_dir: Path, manifest: Manifest, key: str) -> Path | None:
    """The file of manifest key ``key`` (``<part>.int8`` or ``<part>.int8-cpu``), verified if listed; else None."""
    rel = manifest.files.get(key, f"{key}.onnx")
    p = Path(deploy_dir) / rel
    if not p.is_file():
        return None
    return verified_path(manifest, deploy_dir, key) if key in manifest.files else p


def model_file(deploy_dir: Path, manifest: Manifest, part: str, precision: str, device: str = "cpu") -> Path:
    """The ONNX file of ``part`` for ``precision`` on ``device`` (int8: a quantized file, which must exist).

    int8 on the CPU prefers ``<part>.int8-cpu.onnx`` (onnxruntime's CPU integer kernels) and falls back to
    ``<part>.int8.onnx`` (TensorRT-style Q/DQ: correct, but slower than FP32 on the CPU provider); int8 on
    CUDA/TensorRT takes ``<part>.int8.onnx`` only.
    """
    if precision == "int8":
        if device == "cpu":
            p = _int8_file(deploy_dir, manifest, f"{part}.int8-cpu")
            if p is not None:
                return p
        p = _int8_file(deploy_dir, manifest, f"{part}.int8")
        if p is None:
            target = "cpu" if device == "cpu" else "tensorrt"
            want = f"{part}.int8.onnx" + (f" or, faster on the CPU, {part}.int8-cpu.onnx" if device == "cpu" else "")
            raise CezsarError(
                f"{deploy_dir}: --precision int8 needs {want} "
                f"(run `cezsar quantize {deploy_dir} --calib ... --target {target}` first)"
            )
        if device == "cpu":
            log.warning(
                "%s: no %s.int8-cpu.onnx; using the TensorRT-style %s, which runs slower than FP32 on the CPU "
                "(write the CPU model with `cezsar quantize --target cpu`)",
                deploy_dir,
                part,
                p.name,
            )
        return p
    return verified_path(manifest, deploy_dir, part)


class OrtRunner(Runner):
    def __init__(self, session: Any, part: str) -> None:
        self.session = session
        self.part = part
        self.input = session.get_inputs()[0].name
        self.output = session.get_outputs()[0].name
        self.providers = list(session.get_providers())
        self._lock = threading.Lock()  # run() is thread-safe in onnxruntime; the lock keeps CPU use predictable

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            return np.asarray(self.session.run([self.output], {self.input: x})[0], dtype=np.float32)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, precision: str = "fp32", device: str = "cpu", threads: int | None = None) -> None:
        if device not in PROVIDERS:
            raise CezsarError(f"onnxruntime: unknown device {device!r} (cpu, cuda, tensorrt)")
        if precision not in ("fp32", "fp16", "int8"):
            raise CezsarError(f"--precision {precision}: choose fp32, fp16 or int8")
        if precision == "fp16" and device != "tensorrt":
            raise CezsarError(
                "--precision fp16 with onnxruntime needs the TensorRT execution provider "
                f"(here: {device}); use fp32, int8, or --backend torch/tensorrt on a GPU"
            )
        super().__init__(precision, device)
        self.threads = threads

    @classmethod
    def available(cls) -> tuple[bool, str]:
        provs = available_providers()
        if not provs:
            return False, "onnxruntime is not installed"
        return True, f"onnxruntime with {', '.join(p.replace('ExecutionProvider', '') for p in provs)}"

    @classmethod
    def device_available(cls, device: str) -> tuple[bool, str]:
        provs = available_providers()
        want = PROVIDERS[device][0]
        if want in provs:
            return True, f"onnxruntime has {want}"
        return False, f"onnxruntime has no {want} (installed: {', '.join(provs) or 'none'})"

    def providers(self) -> list[Any]:
        provs: list[Any] = []
        for p in PROVIDERS[self.device]:
            if p not in available_providers():
                continue
            if p == "TensorrtExecutionProvider":
                opts = {
                    "trt_fp16_enable": self.precision == "fp16",
                    "trt_int8_enable": self.precision == "int8",
                    "trt_engine_cache_enable": True,
                }
                provs.append((p, opts))
            else:
                provs.append(p)
        if not provs:
            raise CezsarError(f"onnxruntime: no execution provider for device {self.device}")
        return provs

    def session(self, path: Path) -> Any:
        import onnxruntime as ort

        try:
            return ort.InferenceSession(
                str(path), sess_options=session_options(self.threads), providers=self.providers()
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CezsarError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:200]})") from None

    def load(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        path = model_file(Path(deploy_dir), manifest, part, self.precision, self.device)
        runner = OrtRunner(self.session(path), part)
        if self.device != "cpu" and runner.providers[0] == "CPUExecutionProvider":
            log.warning("%s: onnxruntime fell back to the CPU provider for %s", path.name, self.device)
        return runner

    def describe(self) -> str:
        return f"onnxruntime ({self.precision}, {self.device})"
