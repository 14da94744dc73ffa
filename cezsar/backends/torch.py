"""PyTorch backend: the deploy folder's copy of the trained model folder, loaded with
training.model.CezsarModel.

CPU: fp32 eager. CUDA: fp32 or fp16 (``.half()``), with CUDA graphs: one graph per batch-size
bucket (at most the 7 buckets 1, 2, 4, ... 64), all captured when the runner is activated (at load, so
the first frames pay no capture and the memory is taken up front), in one memory pool per runner; a
batch is padded up to its bucket, and a larger batch is run in chunks of the largest bucket. int8 is not
offered here (use onnxruntime with the quantized files, or TensorRT).

torch and training.model are imported only when this backend loads a model: the one import from the
backends layer up into training, kept lazy so that the edge never needs torch.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.base import Backend, Offer, Runner
from cezsar.backends.registry import register_backend
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest, file_sha256
from cezsar.deploy.tensorrt import nvidia_driver_present
from cezsar.errors import CezsarError

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def torch_cuda_available() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, f"torch {torch.__version__} with CUDA on {torch.cuda.get_device_name(0)}"


def bucket_for(n: int) -> int:
    """The CUDA-graph batch bucket of a batch of ``n`` (``n`` <= the largest bucket)."""
    for b in BUCKETS:
        if b >= n:
            return b
    raise CezsarError(f"torch backend: batch {n} exceeds the largest CUDA-graph bucket {BUCKETS[-1]}")


class TorchRunner(Runner):
    """A torch module as a runner. On CUDA with ``cuda_graphs``, one CUDA graph per batch bucket is captured
    at activation (never on the hot path), all in one memory pool of this runner: the graphs run one at a
    time under the runner's lock and their outputs are copied out right after each replay, so they can
    share their intermediate memory. ``sample_shape`` (one sample, without the batch) must be known then;
    a call with another sample shape runs eagerly."""

    def __init__(
        self,
        module: Any,
        device: str,
        half: bool,
        cuda_graphs: bool,
        name: str = "torch",
        sample_shape: tuple[int, ...] | None = None,
        buckets: tuple[int, ...] = BUCKETS,
    ) -> None:
        import torch

        self.torch = torch
        self.module = module
        self.device = device
        self.name = name
        self.dtype = torch.float16 if half else torch.float32
        self.sample_shape = tuple(sample_shape) if sample_shape else None
        self.buckets = tuple(sorted({int(b) for b in buckets}))
        if not self.buckets or self.buckets[0] < 1 or len(self.buckets) > len(BUCKETS):
            raise CezsarError(f"torch backend: CUDA-graph buckets {buckets}: 1 to {len(BUCKETS)} sizes >= 1")
        self.cuda_graphs = cuda_graphs and device == "cuda" and self.sample_shape is not None
        self.max_batch = self.buckets[-1] if self.cuda_graphs else None
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}  # bucket -> (graph, static in, static out)
        self._pool: Any = None
        self.capture_seconds = 0.0
        self._lock = threading.Lock()

    def activate_impl(self) -> None:
        if not self.cuda_graphs:
            return
        import time

        t0 = time.perf_counter()
        with self._lock, self.torch.inference_mode():
            self._pool = self._new_pool()
            for b in self.buckets:
                self._graphs[b] = self._capture(b)
        self.capture_seconds = time.perf_counter() - t0
        log.info(
            "%s: captured %d CUDA graphs (batch %s) in %.1f s",
            self.name,
            len(self._graphs),
            self.buckets,
            self.capture_seconds,
        )

    def deactivate_impl(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._pool = None

    def _new_pool(self) -> Any:
        return self.torch.cuda.graph_pool_handle()

    def _capture(self, bucket: int) -> tuple[Any, Any, Any]:
        torch = self.torch
        assert self.sample_shape is not None
        static_in = torch.zeros((bucket, *self.sample_shape), device="cuda", dtype=self.dtype)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: cuDNN autotuning and workspace allocations outside the capture
                self.module(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.module(static_in)
        return graph, static_in, static_out

    def bucket_for(self, n: int) -> int:
        for b in self.buckets:
            if b >= n:
                return b
        raise CezsarError(f"torch backend: batch {n} exceeds the largest CUDA-graph bucket {self.buckets[-1]}")

    def _replay(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        n = len(x)
        graph, static_in, static_out = self._graphs[self.bucket_for(n)]
        static_in[:n].copy_(torch.from_numpy(x))
        if n < len(static_in):
            static_in[n:].zero_()
        graph.replay()
        return np.asarray(static_out[:n].float().cpu().numpy())

    def infer(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock, torch.inference_mode():
            if self.device == "cpu":
                return np.asarray(self.module(torch.from_numpy(x)).numpy(), dtype=np.float32)
            if not self.cuda_graphs or tuple(x.shape[1:]) != self.sample_shape:
                t = torch.from_numpy(x).to("cuda", non_blocking=False).to(self.dtype)
                return np.asarray(self.module(t).float().cpu().numpy())
            step = self.buckets[-1]
            if len(x) <= step:
                return self._replay(x)
            return np.concatenate([self._replay(np.ascontiguousarray(x[i : i + step])) for i in range(0, len(x), step)])


def sample_shape(manifest: Manifest, part: str) -> tuple[int, ...]:
    """One input sample of ``part`` (no batch dim): [3, S, S] frames or [T, D] features."""
    if part == "frame_encoder":
        size = manifest.pre.size
        return (3, size, size)
    return (manifest.window, manifest.feature_dim)


@register_backend
class TorchBackend(Backend):
    name = "torch"
    requires = ("torch", "safetensors")
    extra = "train"
    offers = (
        Offer("cpu", ("fp32",), ("fp32",), rank=None),
        Offer("cuda", ("fp16", "fp32"), ("fp16",), rank=2),
    )

    def __init__(
        self, precision: str = "fp32", device: str | None = "cpu", threads: int | None = None, cuda_graphs: bool = True
    ) -> None:
        super().__init__(precision, device, threads)
        self.cuda_graphs = cuda_graphs
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def refuse(cls, precision: str, device: str) -> str:
        if precision == "int8":
            return "--precision int8: the torch backend has no int8 path; use onnxruntime or tensorrt"
        if precision == "fp16" and device == "cpu":
            return "--precision fp16 with the torch backend needs CUDA; use fp32 on the CPU"
        return super().refuse(precision, device)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import importlib.util

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("safetensors") is None:
            return False, "torch (and safetensors) not installed: pip install 'cezsar[train]'"
        return True, "torch is installed"

    @classmethod
    def device_present(cls, device: str, precision: str) -> bool:
        return device == "cpu" or nvidia_driver_present()  # no torch import for a guess

    @classmethod
    def device_available(cls, device: str, precision: str) -> tuple[bool, str]:
        if device == "cpu":
            return True, ""
        if not nvidia_driver_present():
            return False, "no NVIDIA driver on this machine"
        return torch_cuda_available()

    def _load_model(self, deploy_dir: Path, manifest: Manifest) -> Any:
        with self._lock:
            if self._model is None:
                from training.model import WEIGHTS_FILE, CezsarModel  # the allowed, lazy import up into training

                folder = self.serving_file(deploy_dir, manifest, "frame_encoder")
                weights = folder / WEIGHTS_FILE
                if weights.is_file() and file_sha256(weights) != manifest.model_hash:
                    raise CezsarError(
                        f"{weights}: not the model of this deploy folder (sha256 differs from {layout.MANIFEST} "
                        f"model_hash {manifest.model_hash[:12]}); re-run `cezsar export`"
                    )
                model = CezsarModel.load(folder).eval()
                if self.device == "cuda":
                    model = model.to("cuda")
                    if self.precision == "fp16":
                        model = model.half()
                self._model = model
            return self._model

    def serving_file(self, deploy_dir: Path, manifest: Manifest, part: str) -> Path:
        """The deploy folder's copy of the trained model folder: both parts come from the one model."""
        return layout.model_folder(deploy_dir, manifest)

    def runner(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        if self.device == "cuda":
            ok, why = torch_cuda_available()
            if not ok:
                raise CezsarError(f"torch backend on cuda: {why}")
        model = self._load_model(deploy_dir, manifest)
        return TorchRunner(
            getattr(model, part),
            self.device,
            self.precision == "fp16",
            self.cuda_graphs,
            name=part,
            sample_shape=sample_shape(manifest, part),
        )

    def describe(self) -> str:
        graphs = ", CUDA graphs" if self.device == "cuda" and self.cuda_graphs else ""
        return f"torch ({self.precision}, {self.device}{graphs})"
