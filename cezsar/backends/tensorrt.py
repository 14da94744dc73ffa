"""TensorRT backend: runs the engines built by ``cezsar build-engine`` (names: cezsar.deploy.layout).

- The engine's sidecar is read and checked once, before the engine is loaded
  (:func:`cezsar.deploy.sidecar.check_engine`): an engine built from another ONNX, for another model,
  by another TensorRT version or for another GPU is refused with the command that rebuilds it.
- Execution uses the name-based tensor API of TensorRT >= 8.5: ``set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3`` on a dedicated CUDA stream.
- GPU buffers (:class:`DeviceBuffers`) are torch CUDA tensors when torch sees a GPU
  (:class:`TorchBuffers`), otherwise cuda-python's runtime API (:class:`CudaPythonBuffers`,
  ``cuda.bindings.runtime`` or ``cuda.cudart`` on older cuda-python). They persist between calls and
  grow to the largest batch seen, up to the engine profile's maximum; larger batches are split. The
  buffer layer is passed in (``buffers=``), so the runner logic can be tested on host memory against a
  stand-in engine, and on a GPU against a device-to-device copy (scripts/gpu_verify.py).
- One execution context per runner, guarded by a lock: runners are thread-safe. The runtime gets the
  process's one TensorRT logger (cezsar.deploy.tensorrt), so a failure says TensorRT's last error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cezsar.backends.base import Backend, Offer, Runner
from cezsar.backends.registry import register_backend
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest
from cezsar.deploy.sidecar import check_engine
from cezsar.deploy.tensorrt import (
    cuda_device_count,
    cuda_error_name,
    cuda_runtime,
    error_mark,
    last_error,
    require_tensorrt,
    tensorrt_module,
    trt_logger,
)
from cezsar.errors import CezsarError

Bind = Callable[[int, int], None]  # (input address, output address)
Execute = Callable[[int], bool]  # (stream handle) -> ok


class DeviceBuffers(Protocol):
    """Where the engine's input and output live, and the stream it runs on.

    ``run`` copies ``x`` in, calls ``bind(input_address, output_address)`` and ``execute(stream_handle)``
    (the execution context's ``set_tensor_address`` and ``execute_async_v3``), copies the output out
    and waits for the stream. Buffers persist between calls and grow to the largest batch seen.
    """

    def run(self, x: np.ndarray, out_shape: tuple[int, ...], bind: Bind, execute: Execute) -> np.ndarray: ...

    def close(self) -> None: ...


class TorchBuffers:
    """Device memory and stream through torch: one flat float32 tensor per tensor name, grown on demand,
    allocated on the runner's own stream. ``device="cpu"`` keeps them in host memory (no stream: handle 0)."""

    def __init__(self, device: str = "cuda") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self.bufs: dict[str, Any] = {}
        self.grown = 0  # how many times a buffer was (re)allocated

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream) if self.stream is not None else 0

    def _buffer(self, name: str, numel: int) -> Any:
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < numel:
            self.bufs[name] = buf = self.torch.empty(numel, dtype=self.torch.float32, device=self.device)
            self.grown += 1
        return buf[:numel]

    def run(self, x: np.ndarray, out_shape: tuple[int, ...], bind: Bind, execute: Execute) -> np.ndarray:
        torch = self.torch
        n_out = int(np.prod(out_shape))
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            dx, dy = self._buffer("in", x.size), self._buffer("out", n_out)
            dx.copy_(torch.from_numpy(x).reshape(-1))
            bind(int(dx.data_ptr()), int(dy.data_ptr()))
            if not execute(self.stream_handle):
                raise CezsarError("TensorRT execute_async_v3 failed")
            y = dy.to("cpu", copy=True)
        if self.stream is not None:
            self.stream.synchronize()
        return np.asarray(y.numpy()).reshape(out_shape)

    def close(self) -> None:
        self.bufs.clear()


class CudaPythonBuffers:
    """Device memory and stream through cuda-python's runtime API (``cuda.bindings.runtime`` or
    ``cuda.cudart``); buffers grow on demand. ``runtime`` may be given (default: the installed one)."""

    def __init__(self, runtime: Any = None) -> None:
        rt = runtime if runtime is not None else cuda_runtime()
        if rt is None:
            raise CezsarError("TensorRT backend: needs torch with CUDA or cuda-python (pip install cuda-python)")
        self.rt: Any = rt
        self.stream: Any = self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.ptrs: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)
        self.grown = 0

    def _call(self, res: Any, what: str) -> Any:
        err = res[0] if isinstance(res, tuple) else res
        if int(err) != 0:
            raise CezsarError(f"TensorRT backend: {what} failed: {cuda_error_name(err)}")
        if isinstance(res, tuple):
            return res[1] if len(res) == 2 else res[1:]
        return None

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.ptrs.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.ptrs.pop(name)
                self._call(self.rt.cudaFree(ptr), "cudaFree")
            ptr = int(self._call(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self.ptrs[name] = (ptr, nbytes)
            self.grown += 1
        return ptr

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def run(self, x: np.ndarray, out_shape: tuple[int, ...], bind: Bind, execute: Execute) -> np.ndarray:
        rt = self.rt
        kind = rt.cudaMemcpyKind
        y = np.empty(out_shape, dtype=np.float32)
        dx, dy = self._buffer("in", x.nbytes), self._buffer("out", y.nbytes)
        self._call(rt.cudaMemcpyAsync(dx, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self.stream), "copy in")
        bind(dx, dy)
        if not execute(self.stream_handle):
            raise CezsarError("TensorRT execute_async_v3 failed")
        self._call(
            rt.cudaMemcpyAsync(y.ctypes.data, dy, y.nbytes, kind.cudaMemcpyDeviceToHost, self.stream), "copy out"
        )
        self._call(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return y

    def close(self) -> None:
        for ptr, _ in self.ptrs.values():
            self.rt.cudaFree(ptr)
        self.ptrs.clear()
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = None


def default_buffers() -> DeviceBuffers:
    """torch's CUDA memory when torch sees a GPU (shares its caching allocator with the rest of the
    process), else cuda-python's."""
    return TorchBuffers("cuda") if _torch_cuda() else CudaPythonBuffers()


class TensorRTRunner(Runner):
    """One engine, one execution context, one lock; the engine is deserialized at activation."""

    def __init__(
        self, engine_file: str | Path, sidecar: dict[str, Any], buffers: Callable[[], DeviceBuffers] | None = None
    ) -> None:
        self.make_buffers = buffers or default_buffers
        self.path = Path(engine_file)
        self.name = self.path.name
        profile = sidecar.get("profile") or {}
        self.max_batch = int(profile.get("max", 0)) or None
        self.min_batch = int(profile.get("min", 1))
        self.lock = threading.Lock()
        self.engine: Any = None
        self.context: Any = None
        self.buffers: DeviceBuffers | None = None

    def activate_impl(self) -> None:
        trt = require_tensorrt()
        self.trt = trt
        mark = error_mark()
        try:
            self.runtime = trt.Runtime(trt_logger(trt))
        except Exception as e:  # noqa: BLE001 - no GPU or driver: TensorRT cannot start
            raise CezsarError(
                f"{self.path}: TensorRT cannot create a runtime (no usable CUDA GPU or driver?): "
                f"{str(e).strip() or last_error(mark)}"
            ) from None
        if self.runtime is None:
            raise CezsarError(f"{self.path}: TensorRT cannot create a runtime ({last_error(mark)})")
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise CezsarError(
                f"{self.path}: TensorRT cannot deserialize it ({last_error(mark)}); rebuild with `cezsar build-engine`"
            )
        if not hasattr(self.engine, "num_io_tensors") or not hasattr(self.engine, "get_tensor_name"):
            raise CezsarError(f"TensorRT {trt.__version__}: the backend needs TensorRT >= 8.5 (name-based tensor API)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise CezsarError(
                f"{self.path}: TensorRT cannot create an execution context (out of GPU memory?): {last_error(mark)}"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise CezsarError(f"{self.path}: expected one input and one output, found {ins} / {outs}")
        self.input, self.output = ins[0], outs[0]
        for n in (self.input, self.output):
            if self.engine.get_tensor_dtype(n) != trt.float32:
                raise CezsarError(f"{self.path}: tensor '{n}' is {self.engine.get_tensor_dtype(n)}, expected float32")
        self.buffers = self.make_buffers()

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
        assert self.buffers is not None
        return np.asarray(self.buffers.run(x, out_shape, self._bind, self._execute))

    def infer(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            raise CezsarError(f"{self.path}: empty batch")
        with self.lock:
            step = self.max_batch or len(x)
            parts = [self._run_one(np.ascontiguousarray(x[i : i + step])) for i in range(0, len(x), step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def deactivate_impl(self) -> None:
        with self.lock:
            if self.buffers is not None:
                self.buffers.close()
            self.buffers = None
            self.context = None
            self.engine = None


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@register_backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    requires = ("tensorrt",)
    extra = "tensorrt"
    offers = (Offer("cuda", ("fp16", "int8", "fp32"), ("fp16", "int8", "fp32"), rank=0),)

    def __init__(self, precision: str = "fp16", device: str | None = "cuda", threads: int | None = None) -> None:
        super().__init__(precision, device, threads)
        self._checked: dict[str, tuple[Path, dict[str, Any]]] = {}  # part -> (engine, sidecar), checked once

    @classmethod
    def refuse(cls, precision: str, device: str) -> str:
        return f"--precision {precision}: the TensorRT backend runs fp16, int8 or fp32 engines"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        trt = tensorrt_module()
        if trt is None or not hasattr(trt, "Runtime"):
            return False, "tensorrt not installed"
        n, how = cuda_device_count()
        if n < 0:
            return False, "neither cuda-python nor torch is installed to reach the GPU (pip install cuda-python)"
        if n == 0:
            return False, f"no CUDA device ({how})" if how else "no CUDA device"
        return True, f"TensorRT {trt.__version__}, {n} CUDA device(s) via {how}"

    def check_files(self, deploy_dir: Path, manifest: Manifest) -> None:
        """Engines present for this precision must be fresh and of this model; checked here, once."""
        for part in layout.VIDEO_PARTS:
            if layout.engine_path(deploy_dir, part, self.precision).is_file():
                self._checked[part] = check_engine(deploy_dir, manifest, part, self.precision)

    def serving_file(self, deploy_dir: Path, manifest: Manifest, part: str) -> Path:
        """The engine built for ``part`` at this precision (its sidecar ties it to the ONNX it came from)."""
        return layout.engine_file(deploy_dir, part, self.precision)

    def runner(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        checked = self._checked.pop(part, None)
        engine, side = checked if checked is not None else check_engine(deploy_dir, manifest, part, self.precision)
        return TensorRTRunner(engine, side)

    def describe(self) -> str:
        return f"tensorrt ({self.precision}, cuda)"
