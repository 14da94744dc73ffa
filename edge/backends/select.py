"""Choose and load a backend: ``--backend auto|tensorrt|onnxruntime|torch`` (also ``onnxruntime-cpu``,
``onnxruntime-cuda``, ``torch-cpu``, ``torch-cuda``).

auto tries, in order, and takes the first that loads both networks at the asked precision:
tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime-cpu. ``--precision auto`` (the default)
lets each candidate run its best precision (PREFERRED): TensorRT its fp16, int8 or fp32 engine,
torch on CUDA fp16, onnxruntime fp32. Every skipped candidate is recorded
with its reason, so the startup summary says which backend runs and why. torch is only imported
when a torch candidate is tried, and torch-cuda only when an NVIDIA driver is present.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cezsar.errors import CezsarError
from cezsar.manifest import Manifest
from edge.backends.base import Backend, Runner

log = logging.getLogger(__name__)

AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu")
NAMES = ("auto", "tensorrt", "onnxruntime", "torch", "onnxruntime-cpu", "onnxruntime-cuda", "torch-cpu", "torch-cuda")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
# --precision auto: what each candidate runs best, tried in order (TensorRT: whichever engine was built)
PREFERRED = {
    "tensorrt": ("fp16", "int8", "fp32"),
    "onnxruntime-cuda": ("fp32",),
    "onnxruntime-cpu": ("fp32",),
    "torch-cuda": ("fp16",),
    "torch-cpu": ("fp32",),
}


@dataclass
class Loaded:
    backend: Backend
    frame_encoder: Runner
    temporal_head: Runner
    reason: str
    skipped: list[str] = field(default_factory=list)  # "candidate: why not"

    def close(self) -> None:
        self.frame_encoder.close()
        self.temporal_head.close()


def nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def tensorrt_backend_class() -> type[Backend] | None:
    """The TensorRT backend class from edge/backends/tensorrt.py, or None when that module is absent."""
    try:
        mod = importlib.import_module("edge.backends.tensorrt")
    except ModuleNotFoundError as e:
        if e.name in ("edge.backends.tensorrt", "tensorrt"):
            return None
        raise
    for obj in vars(mod).values():
        if isinstance(obj, type) and issubclass(obj, Backend) and obj is not Backend and obj.name == "tensorrt":
            return obj
    return None


def make_backend(candidate: str, precision: str, threads: int | None = None) -> Backend:
    """A backend object for a candidate name; raises CezsarError (with the reason) when not usable here."""
    if candidate == "tensorrt":
        cls = tensorrt_backend_class()
        if cls is None:
            raise CezsarError("the TensorRT backend (edge/backends/tensorrt.py) is not installed")
        ok, why = cls.available()
        if not ok:
            raise CezsarError(why)
        return cls(precision=precision)
    if candidate.startswith("onnxruntime"):
        from edge.backends.onnxruntime import OnnxRuntimeBackend

        ok, why = OnnxRuntimeBackend.available()
        if not ok:
            raise CezsarError(why)
        device = candidate.partition("-")[2] or "cpu"
        if device == "cuda" and precision == "fp16":
            device = "tensorrt"  # fp16 runs through the TensorRT execution provider
        ok, why = OnnxRuntimeBackend.device_available(device)
        if not ok:
            raise CezsarError(why)
        return OnnxRuntimeBackend(precision, device, threads=threads)
    if candidate.startswith("torch"):
        from edge.backends.torch import TorchBackend, torch_cuda_available

        ok, why = TorchBackend.available()
        if not ok:
            raise CezsarError(why)
        device = candidate.partition("-")[2] or "cpu"
        if device == "cuda":
            if not nvidia_driver_present():
                raise CezsarError("no NVIDIA driver on this machine")
            ok, why = torch_cuda_available()
            if not ok:
                raise CezsarError(why)
        return TorchBackend(precision, device)
    raise CezsarError(f"--backend {candidate}: choose one of {', '.join(NAMES)}")


def check_engine_files(deploy_dir: Path, manifest: Manifest, precision: str) -> None:
    """Refuse stale or foreign TensorRT engines before anything is loaded: an engine present for
    ``precision`` must have been built from this deploy folder's ONNX (sidecar sha256) for this
    model. Pure Python (no TensorRT needed), so the message is the same on every machine."""
    from converter.tensorrt_build import check_sidecar, engine_path, onnx_source, read_sidecar

    for part in ("frame_encoder", "temporal_head"):
        engine = engine_path(deploy_dir, part, precision)
        if not engine.is_file():
            continue
        side = read_sidecar(engine)
        if side.get("model_hash") and side["model_hash"] != manifest.model_hash:
            raise CezsarError(
                f"{engine}: built for another model ({str(side['model_hash'])[:12]}, this deploy folder is "
                f"{manifest.model_hash[:12]}); rebuild with `cezsar build-engine {deploy_dir} --precision {precision}`"
            )
        gpu: dict[str, str] | None = None if nvidia_driver_present() else {}  # no GPU here: skip the GPU match
        check_sidecar(engine, onnx_source(deploy_dir, manifest, part, precision), gpu=gpu)


def _explicit_candidates(name: str, precision: str) -> list[str]:
    """A plain name picks its best device here."""
    if name == "onnxruntime":
        from edge.backends.onnxruntime import available_providers

        provs = available_providers()
        gpu = "TensorrtExecutionProvider" if precision == "fp16" else "CUDAExecutionProvider"
        return ["onnxruntime-cuda", "onnxruntime-cpu"] if gpu in provs else ["onnxruntime-cpu"]
    if name == "torch":
        return ["torch-cuda", "torch-cpu"] if nvidia_driver_present() else ["torch-cpu"]
    return [name]


def load_backend(
    name: str, precision: str, deploy_dir: str | Path, manifest: Manifest, threads: int | None = None
) -> Loaded:
    if name not in NAMES:
        raise CezsarError(f"--backend {name}: choose one of {', '.join(NAMES)}")
    if precision not in PRECISIONS:
        raise CezsarError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    deploy_dir = Path(deploy_dir)
    candidates = list(AUTO_ORDER) if name == "auto" else _explicit_candidates(name, precision)
    skipped: list[str] = []
    for i, cand in enumerate(candidates):
        precisions = PREFERRED[cand] if precision == "auto" else (precision,)
        problems = []
        for prec in precisions:
            try:
                if cand == "tensorrt":
                    check_engine_files(deploy_dir, manifest, prec)
                backend = make_backend(cand, prec, threads)
                fe = backend.load(deploy_dir, manifest, "frame_encoder")
                th = backend.load(deploy_dir, manifest, "temporal_head")
            except CezsarError as e:
                problems.append(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a broken backend install must not stop auto selection
                if name != "auto":
                    raise
                problems.append(f"{type(e).__name__}: {e}")
                continue
            if name == "auto":
                reason = f"auto: {cand} is the first usable of {' > '.join(AUTO_ORDER)}"
            else:
                reason = f"asked for {name}" + (f" ({cand})" if cand != name else "")
            if precision == "auto":
                reason += f"; precision {prec} (auto)"
            for s in skipped:
                log.debug("backend skipped: %s", s)
            return Loaded(backend, fe, th, reason, skipped)
        problem = "; ".join(dict.fromkeys(problems))
        if name != "auto" and i == len(candidates) - 1:
            prior = f" (also tried: {'; '.join(skipped)})" if skipped else ""
            raise CezsarError(f"--backend {name}: {problem}{prior}")
        skipped.append(f"{cand}: {problem}")
    raise CezsarError(f"--backend auto: no backend can run --precision {precision} here: " + "; ".join(skipped))
