"""PyTorch backend: the deploy folder's copy of the trained model folder, loaded with
training.model.CezsarModel.

CPU: fp32 eager. CUDA: fp32 or fp16 (``.half()``), with CUDA graphs: one graph per batch-size
bucket (1, 2, 4, ... 64) captured on first use on static buffers; a batch is padded up to its
bucket, and a larger batch is run in chunks of the largest bucket. int8 is not offered here (use
onnxruntime with the quantized files, or TensorRT).

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
    def __init__(self, module: Any, device: str, half: bool, cuda_graphs: bool, name: str = "torch") -> None:
        import torch

        self.torch = torch
        self.module = module
        self.device = device
        self.name = name
        self.dtype = torch.float16 if half else torch.float32
        self.cuda_graphs = cuda_graphs and device == "cuda"
        self.max_batch = BUCKETS[-1] if self.cuda_graphs else None
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}  # shape -> (graph, static in, static out)
        self._lock = threading.Lock()

    def deactivate_impl(self) -> None:
        with self._lock:
            self._graphs.clear()

    def _graph(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        torch = self.torch
        if shape not in self._graphs:
            static_in = torch.zeros(shape, device="cuda", dtype=self.dtype)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN autotuning and allocations outside the capture
                    self.module(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            self._graphs[shape] = (graph, static_in, static_out)
            log.debug("captured a CUDA graph for input %s", shape)
        return self._graphs[shape]

    def _replay(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        n = len(x)
        t = torch.from_numpy(x).to("cuda", non_blocking=False).to(self.dtype)
        graph, static_in, static_out = self._graph((bucket_for(n), *x.shape[1:]))
        static_in[:n].copy_(t)
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
            if not self.cuda_graphs:
                t = torch.from_numpy(x).to("cuda", non_blocking=False).to(self.dtype)
                return np.asarray(self.module(t).float().cpu().numpy())
            step = BUCKETS[-1]
            if len(x) <= step:
                return self._replay(x)
            return np.concatenate([self._replay(np.ascontiguousarray(x[i : i + step])) for i in range(0, len(x), step)])


@register_backend
class TorchBackend(Backend):
    name = "torch"
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

                folder = layout.serving_file(
                    deploy_dir, manifest, "frame_encoder", self.precision, self.device, "torch"
                )
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

    def runner(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        if self.device == "cuda":
            ok, why = torch_cuda_available()
            if not ok:
                raise CezsarError(f"torch backend on cuda: {why}")
        model = self._load_model(deploy_dir, manifest)
        return TorchRunner(getattr(model, part), self.device, self.precision == "fp16", self.cuda_graphs, name=part)

    def describe(self) -> str:
        graphs = ", CUDA graphs" if self.device == "cuda" and self.cuda_graphs else ""
        return f"torch ({self.precision}, {self.device}{graphs})"
