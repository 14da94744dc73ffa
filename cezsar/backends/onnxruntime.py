"""onnxruntime backend, and the one onnxruntime session factory of the project (:func:`ort_session`).

Devices: "cpu" (CPUExecutionProvider) and "cuda" (CUDAExecutionProvider, CPU fallback); fp16 on
"cuda" runs through the TensorRT execution provider (then CUDA, then CPU), which is the only provider
that runs an FP32 graph in FP16, so fp16 on the CPU is refused rather than silently run in FP32.
Precisions: fp32 = the exported files; int8 = the files written by ``cezsar quantize``; which file
serves which (part, precision, device) is :func:`cezsar.deploy.layout.onnx_file`'s answer.

The converter (parity checks, quantization, engine checks) and the edge (text encoder) create their
sessions with :func:`ort_session` too, so every session has the same options.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.base import Backend, Offer, Runner
from cezsar.backends.registry import register_backend
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest
from cezsar.errors import CezsarError

log = logging.getLogger(__name__)

CPU = ("CPUExecutionProvider",)
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
    """Session options: all graph optimisations, ``threads`` intra-op threads (default: $CEZSAR_THREADS,
    else onnxruntime's choice), no busy-waiting between operators (unless $CEZSAR_ORT_SPIN=1)."""
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


def ort_session(path: str | Path, threads: int | None = None, providers: list[Any] | tuple[Any, ...] = CPU) -> Any:
    """An onnxruntime InferenceSession of ``path`` (CPU unless ``providers`` says otherwise); a model
    onnxruntime cannot load is reported as one line naming the file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=list(providers))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several types; one line for the user
        text = str(e).strip()
        first = text.splitlines()[0][:200] if text else ""
        raise CezsarError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {first})") from None


class OrtRunner(Runner):
    """One single-input, single-output ONNX model in a session created at activation."""

    def __init__(
        self, path: str | Path, threads: int | None = None, providers: list[Any] | tuple[Any, ...] = CPU
    ) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.threads = threads
        self.provider_request = list(providers)
        self.session: Any = None
        self.providers: list[str] = []
        self._lock = threading.Lock()  # run() is thread-safe in onnxruntime; the lock keeps CPU use predictable

    def activate_impl(self) -> None:
        self.session = ort_session(self.path, self.threads, self.provider_request)
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.providers = list(self.session.get_providers())

    def deactivate_impl(self) -> None:
        with self._lock:
            self.session = None

    def infer(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            return np.asarray(self.session.run([self.output], {self.input: x})[0], dtype=np.float32)


def ort_runner(path: str | Path, threads: int | None = None) -> OrtRunner:
    """An active CPU runner of ``path`` (the converter's way to run a single-input model)."""
    return OrtRunner(path, threads).activate()


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    offers = (
        Offer("cpu", ("fp32", "int8"), ("fp32",), rank=3),
        Offer("cuda", ("fp32", "int8", "fp16"), ("fp32",), rank=1),
    )

    def __init__(self, precision: str = "fp32", device: str | None = "cpu", threads: int | None = None) -> None:
        ep = device
        if device == "tensorrt":  # the TensorRT execution provider, named directly
            device = "cuda"
        super().__init__(precision, device, threads)
        if ep != "tensorrt":
            ep = "tensorrt" if (self.device == "cuda" and precision == "fp16") else self.device
        self.ep = ep  # which provider list runs it: "cpu", "cuda" or "tensorrt"

    @classmethod
    def refuse(cls, precision: str, device: str) -> str:
        if precision == "fp16" and device == "cpu":
            return (
                "--precision fp16 with onnxruntime needs the TensorRT execution provider "
                f"(here: {device}); use fp32, int8, or --backend torch/tensorrt on a GPU"
            )
        return super().refuse(precision, device)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        provs = available_providers()
        if not provs:
            return False, "onnxruntime is not installed"
        return True, f"onnxruntime with {', '.join(p.replace('ExecutionProvider', '') for p in provs)}"

    @classmethod
    def device_available(cls, device: str, precision: str) -> tuple[bool, str]:
        ep = "tensorrt" if device == "cuda" and precision == "fp16" else device
        provs = available_providers()
        want = PROVIDERS[ep][0]
        if want in provs:
            return True, f"onnxruntime has {want}"
        return False, f"onnxruntime has no {want} (installed: {', '.join(provs) or 'none'})"

    def providers(self, deploy_dir: Path | None = None) -> list[Any]:
        """The provider list of a session; the TensorRT execution provider caches its engines in the deploy
        folder (:func:`cezsar.deploy.layout.ort_tensorrt_cache_dir`), or not at all without one."""
        have = available_providers()
        provs: list[Any] = []
        for p in PROVIDERS[self.ep]:
            if p not in have:
                continue
            if p == "TensorrtExecutionProvider":
                opts: dict[str, Any] = {
                    "trt_fp16_enable": self.precision == "fp16",
                    "trt_int8_enable": self.precision == "int8",
                    "trt_engine_cache_enable": False,
                }
                cache = _cache_dir(deploy_dir) if deploy_dir is not None else None
                if cache is not None:
                    opts.update(
                        trt_engine_cache_enable=True,
                        trt_engine_cache_path=str(cache),
                        trt_timing_cache_enable=True,
                        trt_timing_cache_path=str(cache),
                    )
                provs.append((p, opts))
            else:
                provs.append(p)
        if not provs:
            raise CezsarError(f"onnxruntime: no execution provider for device {self.ep}")
        return provs

    def serving_file(self, deploy_dir: Path, manifest: Manifest, part: str) -> Path:
        """The ONNX file of ``part`` at this precision on this provider (:func:`cezsar.deploy.layout.onnx_file`)."""
        return layout.onnx_file(deploy_dir, manifest, part, self.precision, self.ep)

    def runner(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        path = self.serving_file(deploy_dir, manifest, part)
        if self.device == "cpu" and self.precision == "int8" and not layout.is_cpu_int8(path):
            log.warning(
                "%s: no %s; using the TensorRT-style %s, which runs slower than FP32 on the CPU "
                "(write the CPU model with `cezsar quantize --target cpu`)",
                deploy_dir,
                layout.int8_name(part, "cpu"),
                path.name,
            )
        return _DeviceOrtRunner(path, self.threads, self.providers(deploy_dir), self.ep, self.precision)

    def describe(self) -> str:
        return f"onnxruntime ({self.precision}, {self.ep})"


def _cache_dir(deploy_dir: Path) -> Path | None:
    cache = layout.ort_tensorrt_cache_dir(deploy_dir)
    try:
        cache.mkdir(exist_ok=True)
    except OSError as e:
        log.warning("%s: cannot create it (%s); the TensorRT execution provider will not cache engines", cache, e)
        return None
    return cache


class _DeviceOrtRunner(OrtRunner):
    """An OrtRunner that checks the providers the session actually got.

    onnxruntime drops a listed provider it cannot load (the TensorRT one without libnvinfer, CUDA without
    cuDNN) and runs on the next one. For fp16 that would silently run FP32 on CUDA or the CPU: refused.
    A CUDA request that ended on the CPU runs (same precision, slower) with a warning.
    """

    def __init__(self, path: Path, threads: int | None, providers: list[Any], ep: str, precision: str) -> None:
        super().__init__(path, threads, providers)
        self.ep = ep
        self.precision = precision

    def activate_impl(self) -> None:
        super().activate_impl()
        got = self.providers[0] if self.providers else "none"
        want = PROVIDERS[self.ep][0]
        if self.ep == "tensorrt" and got != want:
            self.session = None
            raise CezsarError(
                f"{self.path.name}: --precision {self.precision} with onnxruntime needs its TensorRT execution "
                f"provider, but the session runs on {got.replace('ExecutionProvider', '')} (onnxruntime-gpu "
                "built with TensorRT and libnvinfer needed); use --precision fp32, or --backend tensorrt/torch-cuda"
            )
        if self.ep != "cpu" and got == "CPUExecutionProvider":
            log.warning("%s: onnxruntime fell back to the CPU provider for %s", self.path.name, self.ep)
