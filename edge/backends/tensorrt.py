"""TensorRT backend: runs ``<part>.<precision>.engine`` files built by ``cezsar build-engine``.

- The engine's sidecar is checked at load (:func:`converter.tensorrt_build.check_sidecar`): an engine
  built from another ONNX, by another TensorRT version or for another GPU is refused with the
  command that rebuilds it.
- Execution uses the name-based tensor API of TensorRT >= 8.5: ``set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3`` on a dedicated CUDA stream.
- GPU buffers are torch CUDA tensors when torch with CUDA is importable, otherwise cuda-python
  (``cuda.bindings.runtime``, or ``cuda.cudart`` on older cuda-python). Buffers grow to the largest
  batch seen, up to the engine profile's maximum; larger batches are split.
- One execution context per runner, guarded by a lock: runners are thread-safe.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.manifest import Manifest
from edge.backends.base import Backend, Runner


def _cuda_device_count() -> tuple[int, str]:
    """(device count, which library answered) without importing torch when cuda-python can answer."""
    from converter.tensorrt_build import cuda_runtime

    cudart = cuda_runtime()
    if cudart is not None:
        err, n = cudart.cudaGetDeviceCount()
        return (int(n) if int(err) == 0 else 0), "cuda-python"
    try:
        import torch
    except ImportError:
        return -1, ""
    return (torch.cuda.device_count() if torch.cuda.is_available() else 0), "torch"


class _TorchBuffers:
    """Device memory and stream through torch."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", 0)
        self.stream = torch.cuda.Stream(device=self.device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def run(self, x: np.ndarray, out_shape: tuple[int, ...], bind: Any, execute: Any) -> np.ndarray:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            dx = torch.from_numpy(x).to(self.device, non_blocking=False)
            dy = torch.empty(out_shape, dtype=torch.float32, device=self.device)
            bind(int(dx.data_ptr()), int(dy.data_ptr()))
            if not execute(self.stream_handle):
                raise CezsarError("TensorRT execute_async_v3 failed")
            y = dy.cpu()
        self.stream.synchronize()
        return y.numpy()

    def close(self) -> None:
        pass


class _CudaPythonBuffers:
    """Device memory and stream through cuda-python; buffers grow on demand."""

    def __init__(self) -> None:
        from converter.tensorrt_build import cuda_runtime

        rt = cuda_runtime()
        if rt is None:
            raise CezsarError("TensorRT backend: needs torch with CUDA or cuda-python (pip install cuda-python)")
        self.rt: Any = rt
        self.stream = self._call(self.rt.cudaStreamCreate())
        self.ptrs: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)

    def _call(self, res: Any) -> Any:
        err = res[0] if isinstance(res, tuple) else res
        if int(err) != 0:
            raise CezsarError(f"CUDA runtime error {int(err)} ({getattr(err, 'name', err)})")
        if isinstance(res, tuple):
            return res[1] if len(res) == 2 else res[1:]
        return None

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.ptrs.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._call(self.rt.cudaFree(ptr))
            ptr = int(self._call(self.rt.cudaMalloc(nbytes)))
            self.ptrs[name] = (ptr, nbytes)
        return ptr

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def run(self, x: np.ndarray, out_shape: tuple[int, ...], bind: Any, execute: Any) -> np.ndarray:
        rt = self.rt
        y = np.empty(out_shape, dtype=np.float32)
        dx, dy = self._buffer("in", x.nbytes), self._buffer("out", y.nbytes)
        self._call(
            rt.cudaMemcpyAsync(dx, x.ctypes.data, x.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
        )
        bind(dx, dy)
        if not execute(self.stream_handle):
            raise CezsarError("TensorRT execute_async_v3 failed")
        self._call(
            rt.cudaMemcpyAsync(y.ctypes.data, dy, y.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        )
        self._call(rt.cudaStreamSynchronize(self.stream))
        return y

    def close(self) -> None:
        for ptr, _ in self.ptrs.values():
            self.rt.cudaFree(ptr)
        self.ptrs.clear()
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = None


class TensorRTRunner(Runner):
    """One engine, one execution context, one lock."""

    def __init__(self, engine_file: Path, sidecar: dict[str, Any]) -> None:
        from converter.tensorrt_build import require_tensorrt

        trt = require_tensorrt()
        self.trt = trt
        self.path = engine_file
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_file.read_bytes())
        if self.engine is None:
            raise CezsarError(f"{engine_file}: TensorRT cannot deserialize it; rebuild with `cezsar build-engine`")
        if not hasattr(self.engine, "num_io_tensors") or not hasattr(self.engine, "get_tensor_name"):
            raise CezsarError(f"TensorRT {trt.__version__}: the backend needs TensorRT >= 8.5 (name-based tensor API)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise CezsarError(f"{engine_file}: expected one input and one output, found {ins} / {outs}")
        self.input, self.output = ins[0], outs[0]
        for n in (self.input, self.output):
            if self.engine.get_tensor_dtype(n) != trt.float32:
                raise CezsarError(f"{engine_file}: tensor '{n}' is {self.engine.get_tensor_dtype(n)}, expected float32")
        profile = sidecar.get("profile") or {}
        self.max_batch = int(profile.get("max", 0)) or None
        self.min_batch = int(profile.get("min", 1))
        self.lock = threading.Lock()
        try:
            self.buffers: Any = _TorchBuffers() if _torch_cuda() else _CudaPythonBuffers()
        except ImportError:
            self.buffers = _CudaPythonBuffers()

    def _bind(self, dx: int, dy: int) -> None:
        self.context.set_tensor_address(self.input, dx)
        self.context.set_tensor_address(self.output, dy)

    def _execute(self, stream: int) -> bool:
        return bool(self.context.execute_async_v3(stream))

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        if not self.context.set_input_shape(self.input, tuple(x.shape)):
            raise CezsarError(f"{self.path}: input shape {list(x.shape)} outside the engine's profile")
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output))
        if any(d < 0 for d in out_shape):
            raise CezsarError(f"{self.path}: cannot resolve the output shape for input {list(x.shape)}")
        return self.buffers.run(x, out_shape, self._bind, self._execute)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            raise CezsarError(f"{self.path}: empty batch")
        with self.lock:
            step = self.max_batch or len(x)
            parts = [self._run_one(np.ascontiguousarray(x[i : i + step])) for i in range(0, len(x), step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        with self.lock:
            self.buffers.close()
            self.context = None
            self.engine = None


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, precision: str = "fp16", device: str = "cuda") -> None:
        if precision not in ("fp16", "int8", "fp32"):
            raise CezsarError(f"--precision {precision}: the TensorRT backend runs fp16, int8 or fp32 engines")
        super().__init__(precision, device)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        from converter.tensorrt_build import tensorrt_module

        trt = tensorrt_module()
        if trt is None or not hasattr(trt, "Runtime"):
            return False, "tensorrt not installed"
        n, lib = _cuda_device_count()
        if n < 0:
            return False, "neither cuda-python nor torch is installed to reach the GPU (pip install cuda-python)"
        if n == 0:
            return False, "no CUDA device"
        return True, f"TensorRT {trt.__version__}, {n} CUDA device(s) via {lib}"

    def load(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        from converter.tensorrt_build import check_sidecar, engine_path, onnx_source, read_sidecar

        deploy_dir = Path(deploy_dir)
        engine = engine_path(deploy_dir, part, self.precision)
        if not engine.is_file():
            raise CezsarError(
                f"{engine}: no {self.precision} engine; build it with "
                f"`cezsar build-engine {deploy_dir} --precision {self.precision}`"
            )
        check_sidecar(engine, onnx_source(deploy_dir, manifest, part, self.precision))
        side = read_sidecar(engine)
        if side.get("model_hash") and side["model_hash"] != manifest.model_hash:
            raise CezsarError(f"{engine}: built for another model; rebuild with `cezsar build-engine {deploy_dir}`")
        return TensorRTRunner(engine, side)

    def describe(self) -> str:
        return f"tensorrt ({self.precision}, cuda)"
