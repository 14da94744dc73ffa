"""PyTorch backend: DEPLOY_DIR/model/ (the trained model folder) loaded with training.model.CezsarModel.

CPU: fp32 eager. CUDA: fp32 or fp16 (``.half()``), with CUDA graphs: one graph per batch-size
bucket (1, 2, 4, ... 64) captured on first use on static buffers; a batch is padded up to its
bucket. int8 is not offered here (use onnxruntime with the quantized files, or TensorRT).
torch is imported only when this backend is used.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.manifest import Manifest
from edge.backends.base import Backend, Runner

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


class TorchRunner(Runner):
    def __init__(self, module: Any, device: str, half: bool, cuda_graphs: bool) -> None:
        import torch

        self.torch = torch
        self.module = module
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.cuda_graphs = cuda_graphs and device == "cuda"
        self.max_batch = BUCKETS[-1] if self.cuda_graphs else None
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}  # shape -> (graph, static in, static out)
        self._lock = threading.Lock()

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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock, torch.inference_mode():
            if self.device == "cpu":
                return self.module(torch.from_numpy(x)).numpy().astype(np.float32, copy=False)
            t = torch.from_numpy(x).to("cuda", non_blocking=False).to(self.dtype)
            if not self.cuda_graphs:
                return self.module(t).float().cpu().numpy()
            n = len(x)
            bucket = next(b for b in BUCKETS if b >= n)
            graph, static_in, static_out = self._graph((bucket, *x.shape[1:]))
            static_in[:n].copy_(t)
            if n < bucket:
                static_in[n:].zero_()
            graph.replay()
            return static_out[:n].float().cpu().numpy()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, precision: str = "fp32", device: str = "cpu", cuda_graphs: bool = True) -> None:
        if device not in ("cpu", "cuda"):
            raise CezsarError(f"torch: unknown device {device!r} (cpu, cuda)")
        if precision == "int8":
            raise CezsarError("--precision int8: the torch backend has no int8 path; use onnxruntime or tensorrt")
        if precision == "fp16" and device == "cpu":
            raise CezsarError("--precision fp16 with the torch backend needs CUDA; use fp32 on the CPU")
        if precision not in ("fp32", "fp16"):
            raise CezsarError(f"--precision {precision}: choose fp32, fp16 or int8")
        super().__init__(precision, device)
        self.cuda_graphs = cuda_graphs
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import importlib.util

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("safetensors") is None:
            return False, "torch (and safetensors) not installed: pip install 'cezsar[train]'"
        return True, "torch is installed"

    def _load_model(self, deploy_dir: Path, manifest: Manifest) -> Any:
        with self._lock:
            if self._model is None:
                from training.model import CezsarModel

                folder = (
                    manifest.path(deploy_dir, "model_dir") if "model_dir" in manifest.files else deploy_dir / "model"
                )
                if not Path(folder).is_dir():
                    raise CezsarError(f"{deploy_dir}: no model/ folder for the torch backend (re-run `cezsar export`)")
                from cezsar.manifest import file_sha256

                weights = Path(folder) / "model.safetensors"
                if weights.is_file() and file_sha256(weights) != manifest.model_hash:
                    raise CezsarError(
                        f"{weights}: not the model of this deploy folder (sha256 differs from manifest.json "
                        f"model_hash {manifest.model_hash[:12]}); re-run `cezsar export`"
                    )
                model = CezsarModel.load(folder).eval()
                if self.device == "cuda":
                    model = model.to("cuda")
                    if self.precision == "fp16":
                        model = model.half()
                self._model = model
            return self._model

    def load(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        if part not in ("frame_encoder", "temporal_head"):
            raise CezsarError(f"torch backend: unknown part {part!r}")
        if self.device == "cuda":
            ok, why = torch_cuda_available()
            if not ok:
                raise CezsarError(f"torch backend on cuda: {why}")
        model = self._load_model(Path(deploy_dir), manifest)
        return TorchRunner(getattr(model, part), self.device, self.precision == "fp16", self.cuda_graphs)

    def describe(self) -> str:
        graphs = ", CUDA graphs" if self.device == "cuda" and self.cuda_graphs else ""
        return f"torch ({self.precision}, {self.device}{graphs})"
