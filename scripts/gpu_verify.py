#!/usr/bin/env python3
"""Verify the GPU code paths that can run without TensorRT, and say what was not verified; writes JSON.

    python scripts/gpu_verify.py [--json gpu_verify.json]

On a machine with a CUDA device (torch with CUDA):

1. the TensorRT runner's buffer layers, torch's (``TorchBuffers``) and cuda-python's
   (``CudaPythonBuffers``, when cuda-python is installed): the real ``TensorRTRunner`` runs a stand-in
   engine (``DeviceCopyEngine``, the boundary fake) whose ``execute_async_v3`` is a device-to-device copy
   of the bound input to the bound output on the stream it is given. Checked bit-exact: batches that grow
   and shrink the buffers, a batch above the profile maximum (split), and calls from worker threads;
2. the torch-CUDA runner (``TorchRunner``) of a randomly initialised CEZSAR model against CPU fp32 for
   batches 1, 3, 8 and 64 in fp32, fp32 with CUDA graphs and fp16 with CUDA graphs: worst cosine
   distance <= 1e-4 (fp32) and <= 3e-3 (fp16), for the frame encoder and the temporal head;
3. the device, driver and library versions.

The JSON lists what was verified, what failed and what was NOT verified (TensorRT engines unless
tensorrt is installed; onnxruntime's CUDA/TensorRT providers; Jetson; video decode). Without a CUDA
device it exits 2 with the verdict "not verified: no CUDA device", never a pass. Exit 0: every check
that ran passed; 1: a check failed; 2: nothing could be verified.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BATCHES = (1, 3, 8, 64)
TOL = {"fp32": 1e-4, "fp32-graphs": 1e-4, "fp16-graphs": 3e-3}
NOT_VERIFIED_ALWAYS = [
    "TensorRT engine build and execution with real TensorRT (tests marked tensorrt; scripts/gpu_check.sh runs them "
    "where tensorrt is installed)",
    "INT8 engines and their accuracy",
    "onnxruntime's CUDA and TensorRT execution providers (onnxruntime-gpu)",
    "Jetson (JetPack 6.x): TensorRT from apt, unified memory, nvarguscamerasrc / nvv4l2decoder pipelines",
    "GStreamer / NVDEC hardware video decode",
]


def _version(mod: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(mod), "__version__", "?"))
    except Exception:  # noqa: BLE001 - absent or broken: reported as absent
        return None


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
        "cuda_python": _version("cuda.bindings") or _version("cuda"),
    }
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
        info["nvidia_smi"] = f"not available ({type(e).__name__})"
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["compute_capability"] = "{}.{}".format(*torch.cuda.get_device_capability(0))
            info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    from cezsar.deploy.tensorrt import cuda_device_count

    n, how = cuda_device_count()
    info["cuda_devices"] = n
    info["cuda_devices_via"] = how
    return info


# -- a device-to-device copy on a given stream ------------------------------------------------------


def d2d_copier() -> tuple[Callable[[int, int, int, int], None], str]:
    """copy(dst, src, nbytes, stream): cudaMemcpyAsync DeviceToDevice through cuda-python, else through the
    CUDA runtime library that torch's wheels ship (ctypes)."""
    from cezsar.deploy.tensorrt import cuda_error_name, cuda_runtime

    rt = cuda_runtime()
    if rt is not None:
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice

        def copy_cp(dst: int, src: int, n: int, stream: int) -> None:
            res = rt.cudaMemcpyAsync(dst, src, n, kind, stream)
            err = res[0] if isinstance(res, tuple) else res
            if int(err) != 0:
                raise RuntimeError(f"cudaMemcpyAsync: {cuda_error_name(err)}")

        return copy_cp, "cuda-python cudaMemcpyAsync"
    candidates = []
    try:
        import torch

        site = Path(torch.__file__).resolve().parents[1]
        candidates += sorted(glob.glob(str(site / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so*")))
        candidates += sorted(glob.glob(str(Path(torch.__file__).parent / "lib" / "libcudart*.so*")))
    except ImportError:
        pass
    found = ctypes.util.find_library("cudart")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        fn = lib.cudaMemcpyAsync
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]

        def copy_ct(dst: int, src: int, n: int, stream: int, fn: Any = fn) -> None:
            err = fn(dst, src, n, 3, stream)  # 3 = cudaMemcpyDeviceToDevice
            if err != 0:
                raise RuntimeError(f"cudaMemcpyAsync: CUDA error {err}")

        return copy_ct, f"libcudart cudaMemcpyAsync ({path})"
    raise RuntimeError("no way to issue a device-to-device copy: neither cuda-python nor libcudart found")


class DeviceCopyContext:
    """Stand-in for ``tensorrt.IExecutionContext`` (boundary fake): the output is a device-to-device copy of
    the input, issued on the stream ``execute_async_v3`` is given."""

    def __init__(self, engine: DeviceCopyEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] = ()
        self.addr: dict[str, int] = {}
        self.executed: list[int] = []
        self.threads: set[str] = set()

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if not 1 <= shape[0] <= self.engine.max_batch:
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shape

    def set_tensor_address(self, name: str, addr: int) -> bool:
        self.addr[name] = int(addr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        nbytes = int(np.prod(self.shape)) * 4
        self.engine.copy(self.addr["x"], self.addr["y"], nbytes, stream)
        self.executed.append(self.shape[0])
        self.threads.add(threading.current_thread().name)
        return True


class DeviceCopyEngine:
    """Stand-in for ``tensorrt.ICudaEngine`` (boundary fake): one float32 input "x", one output "y"."""

    num_io_tensors = 2

    def __init__(self, max_batch: int, copy: Callable[[int, int, int, int], None]) -> None:
        self.max_batch = max_batch
        self._copy = copy
        self.contexts: list[DeviceCopyContext] = []

    def copy(self, src: int, dst: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, stream)

    def get_tensor_name(self, i: int) -> str:
        return ("x", "y")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def create_execution_context(self) -> DeviceCopyContext:
        self.contexts.append(DeviceCopyContext(self))
        return self.contexts[-1]


def _fake_trt(engine: DeviceCopyEngine) -> Any:
    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self) -> None:
            pass

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> DeviceCopyEngine:
            return engine

    return SimpleNamespace(
        __version__="stand-in",
        Builder=object,
        ILogger=ILogger,
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        float32="float32",
    )


def check_trt_buffers(
    layer: str, workdir: Path, device: str = "cuda", copier: Callable[[int, int, int, int], None] | None = None
) -> dict[str, Any]:
    """The real TensorRTRunner with ``layer`` buffers on the GPU and a D2D-copy engine: bit-exact.
    (``device="cpu"`` with a host ``copier`` only lets tests/test_bench_scripts.py run this check's own
    logic without a GPU; it verifies nothing about the GPU.)"""
    from concurrent.futures import ThreadPoolExecutor

    from cezsar.backends import tensorrt as bt
    from cezsar.deploy import tensorrt as dt

    copy, how = (copier, "host memmove (test of this script)") if copier is not None else d2d_copier()
    engine = DeviceCopyEngine(max_batch=16, copy=copy)
    real_require, real_logger = bt.require_tensorrt, dt._LOGGER
    bt.require_tensorrt = lambda: _fake_trt(engine)  # type: ignore[assignment]
    dt._LOGGER = None
    plan = workdir / f"verify-{layer}.plan"  # stand-in bytes; no deploy folder
    plan.write_bytes(b"stand-in")
    made: list[Any] = []

    def buffers() -> Any:
        made.append(bt.TorchBuffers(device) if layer == "torch" else bt.CudaPythonBuffers())
        return made[-1]

    rng = np.random.default_rng(0)
    bad: list[str] = []
    try:
        with bt.TensorRTRunner(plan, {"profile": {"min": 1, "opt": 4, "max": 16}}, buffers=buffers) as runner:
            for n in (1, 5, 3, 16, 2, 40):  # grows at 1, 5 and 16; 40 is split into 16 + 16 + 8
                x = rng.standard_normal((n, 3, 7, 5)).astype(np.float32)
                y = runner(x)
                if y.shape != x.shape or not np.array_equal(y, x):
                    bad.append(f"batch {n}: not bit-exact")
            xs = [rng.standard_normal((1 + i % 16, 33)).astype(np.float32) for i in range(32)]
            with ThreadPoolExecutor(4, thread_name_prefix="verify-worker") as pool:
                ys = list(pool.map(runner, xs))
            bad += [
                f"worker call {i}: not bit-exact"
                for i, (x, y) in enumerate(zip(xs, ys, strict=True))
                if not np.array_equal(x, y)
            ]
            ctx = engine.contexts[0]
            grown = made[0].grown
            split = ctx.executed[5:8]
            workers = sorted(ctx.threads)
    finally:
        bt.require_tensorrt = real_require  # type: ignore[assignment]
        dt._LOGGER = real_logger
    if split != [16, 16, 8]:
        bad.append(f"batch 40 ran as {split}, expected [16, 16, 8]")
    if not any(t.startswith("verify-worker") for t in workers):
        bad.append("no call ran in a worker thread")
    return {
        "status": "failed" if bad else "verified",
        "problems": bad,
        "copy": how,
        "buffer_allocations": grown,
        "threads": workers,
    }


# -- torch-CUDA runner against CPU fp32 -------------------------------------------------------------


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30
    return np.asarray(1.0 - num / den)


def check_torch_runner() -> dict[str, Any]:
    import torch

    from cezsar.backends.torch import TorchRunner
    from cezsar.preprocess import Preprocess
    from training.model import CezsarModel, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(frames=8, preprocess=Preprocess(size=112, resize=128).to_dict())
    cpu = CezsarModel(cfg).eval()
    rng = np.random.default_rng(0)
    shapes = {"frame_encoder": (3, 112, 112), "temporal_head": (cfg.frames, cfg.feature_dim)}
    inputs = {p: {n: rng.standard_normal((n, *s)).astype(np.float32) for n in BATCHES} for p, s in shapes.items()}
    ref = {}
    with torch.inference_mode():
        for p in shapes:
            ref[p] = {n: getattr(cpu, p)(torch.from_numpy(x)).numpy() for n, x in inputs[p].items()}
    results: dict[str, Any] = {}
    bad = []
    for mode, half, graphs in (("fp32", False, False), ("fp32-graphs", False, True), ("fp16-graphs", True, True)):
        gpu = CezsarModel(cfg).eval()
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.to("cuda")
        if half:
            gpu = gpu.half()
        for p, s in shapes.items():
            t0 = time.perf_counter()
            runner = TorchRunner(getattr(gpu, p), "cuda", half, graphs, name=p, sample_shape=s).activate()
            load_s = time.perf_counter() - t0
            worst = {}
            for n in BATCHES:
                worst[n] = float(cosine_distance(runner(inputs[p][n]), ref[p][n]).max())
            runner.deactivate()
            ok = all(w <= TOL[mode] for w in worst.values())
            results[f"{mode}/{p}"] = {
                "worst_cosine_distance": worst,
                "tolerance": TOL[mode],
                "passed": ok,
                "activation_seconds": round(load_s, 3),
                "graphs_captured": graphs,
            }
            if not ok:
                bad.append(f"{mode}/{p}: worst cosine distance {max(worst.values()):.2e} > {TOL[mode]:g}")
        del gpu
        torch.cuda.empty_cache()
    return {"status": "failed" if bad else "verified", "problems": bad, "cases": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_verify.json")
    args = ap.parse_args()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), "checks": {}}
    not_verified = list(NOT_VERIFIED_ALWAYS)
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    if not cuda:
        report["verdict"] = "not verified: no CUDA device"
        report["why"] = "torch is not installed" if report["machine"]["torch"] is None else "torch sees no CUDA device"
        report["not_verified"] = ["everything: the TensorRT buffer layers and the torch-CUDA runner", *not_verified]
        _write(args.json, report)
        print(f"gpu_verify: not verified: no CUDA device ({report['why']}); report in {args.json}")
        return 2
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cezsar-verify-") as td:
        checks: dict[str, Callable[[], dict[str, Any]]] = {
            "tensorrt_runner_torch_buffers": lambda: check_trt_buffers("torch", Path(td)),
            "tensorrt_runner_cuda_python_buffers": lambda: check_trt_buffers("cuda-python", Path(td)),
            "torch_cuda_runner_vs_cpu_fp32": check_torch_runner,
        }
        for name, fn in checks.items():
            if name.endswith("cuda_python_buffers") and report["machine"]["cuda_python"] is None:
                report["checks"][name] = {"status": "not installed", "problems": ["cuda-python is not installed"]}
                not_verified.append("the cuda-python buffer layer (cuda-python not installed)")
                continue
            t0 = time.perf_counter()
            try:
                res = fn()
            except Exception as e:  # noqa: BLE001 - a crash is a failed check, with its traceback in the JSON
                res = {
                    "status": "failed",
                    "problems": [f"{type(e).__name__}: {e}"],
                    "traceback": traceback.format_exc(),
                }
            res["seconds"] = round(time.perf_counter() - t0, 2)
            report["checks"][name] = res
    statuses = [c["status"] for c in report["checks"].values()]
    report["verdict"] = "failed" if "failed" in statuses else "verified"
    report["not_verified"] = not_verified
    _write(args.json, report)
    for name, c in report["checks"].items():
        print(f"gpu_verify: {name}: {c['status']}{': ' + '; '.join(c['problems']) if c['problems'] else ''}")
    print(f"gpu_verify: {report['verdict']} on {report['machine'].get('gpu')}; report in {args.json}")
    return 1 if report["verdict"] == "failed" else 0


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
