"""Finding TensorRT, CUDA and the GPU, and the process's one TensorRT logger. No torch at import.

TensorRT keeps a single global logger: the first ``ILogger`` handed to a Builder or Runtime receives
every message while builders or runtimes live, and a second one is ignored (NVIDIA/TensorRT#1475).
So the builder, the parser and the runtime all get :func:`trt_logger`, and :func:`last_error` reports
the last ERROR it recorded (warnings are logged, never reported as the cause of a failure).

The CUDA device count comes from cuda-python when it answers, else from torch. A cuda-python that
returns an error (``cudaErrorInsufficientDriver`` when cuda-python is newer than the driver) does not
hide a GPU that torch can reach: the count falls back to torch and the error's name is reported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any

from cezsar.errors import CezsarError

log = logging.getLogger("cezsar.tensorrt")

TRT_MISSING = (
    "TensorRT is not installed: on Jetson (JetPack 6.x) it comes with JetPack (sudo apt install "
    "nvidia-tensorrt python3-libnvinfer; a venv with --system-site-packages); on a desktop GPU "
    "pip install 'cezsar[tensorrt-cu12]' for a CUDA 12 driver or 'cezsar[tensorrt-cu13]' for CUDA 13 "
    "(nvidia-smi shows which), see docs/deployment.md"
)


# -- TensorRT ------------------------------------------------------------------------------------


def tensorrt_module() -> Any | None:
    """The ``tensorrt`` module if the real library is importable (a stubs-only or placeholder package
    imports as a namespace without ``Builder``)."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        return None
    return trt if hasattr(trt, "Builder") else None


def require_tensorrt() -> Any:
    trt = tensorrt_module()
    if trt is None:
        raise CezsarError(TRT_MISSING)
    return trt


def trt_version(trt: Any) -> tuple[int, int]:
    parts = str(getattr(trt, "__version__", "0.0")).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


class _Messages:
    """What the one TensorRT logger has recorded: the last errors, and a running count."""

    def __init__(self) -> None:
        self.errors: deque[str] = deque(maxlen=32)
        self.count = 0
        self.lock = threading.Lock()

    def add_error(self, msg: str) -> None:
        with self.lock:
            self.errors.append(msg)
            self.count += 1


_MESSAGES = _Messages()
_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()


def trt_logger(trt: Any | None = None) -> Any:
    """The process's one ``trt.ILogger`` (created on first use); hand it to every Builder, OnnxParser
    and Runtime."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:
            trt = trt if trt is not None else require_tensorrt()
            base = trt.ILogger
            error_level = int(base.Severity.ERROR)
            warning_level = int(base.Severity.WARNING)

            class CezsarTrtLogger(base):  # type: ignore[misc, valid-type]
                def __init__(self) -> None:
                    base.__init__(self)

                def log(self, severity: Any, msg: str) -> None:
                    level = int(severity)
                    if level <= error_level:  # INTERNAL_ERROR or ERROR
                        _MESSAGES.add_error(str(msg))
                        log.warning("tensorrt error: %s", msg)
                    elif level <= warning_level:
                        log.debug("tensorrt warning: %s", msg)

            _LOGGER = CezsarTrtLogger()
        return _LOGGER


def error_mark() -> int:
    """A mark for :func:`last_error`: how many errors TensorRT has reported so far."""
    with _MESSAGES.lock:
        return _MESSAGES.count


def last_error(since: int = 0) -> str:
    """The last ERROR TensorRT reported (after ``since``, a value of :func:`error_mark`), in one line."""
    with _MESSAGES.lock:
        new = _MESSAGES.count - since
        if new <= 0 or not _MESSAGES.errors:
            return "no error message from TensorRT"
        return " ".join(_MESSAGES.errors[-1].split())


# -- CUDA ----------------------------------------------------------------------------------------


def nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def cuda_runtime() -> Any | None:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+, 13) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[attr-defined]

        return cudart
    except ImportError:
        return None


def cuda_error_name(err: Any) -> str:
    """``cudaErrorInsufficientDriver`` for a cuda-python error enum, else its number."""
    name = getattr(err, "name", None)
    return str(name) if name else f"CUDA error {int(err)}"


def _torch_device_count() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def cuda_device_count() -> tuple[int, str]:
    """(CUDA devices, how that was learned in words); -1 when neither cuda-python nor torch is installed.

    cuda-python first (no torch import when it answers); on a cuda-python error, torch, with the error's
    name in the words.
    """
    cudart = cuda_runtime()
    problem = ""
    if cudart is not None:
        try:
            err, n = cudart.cudaGetDeviceCount()
        except Exception as e:  # noqa: BLE001 - a broken binding is reported, then torch is asked
            problem = f"cuda-python: {type(e).__name__}: {e}"
        else:
            if int(err) == 0:
                return int(n), "cuda-python"
            problem = f"cuda-python: {cuda_error_name(err)}"
    n_torch = _torch_device_count()
    if n_torch is None:
        return (0, problem) if problem else (-1, "")
    return n_torch, f"torch ({problem})" if problem else "torch"


def gpu_info() -> dict[str, str]:
    """{"gpu": name, "compute_capability": "8.7"} of CUDA device 0, through torch or cuda-python;
    "unknown" where neither can tell."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    cudart = cuda_runtime()
    if cudart is not None:
        try:
            err, props = cudart.cudaGetDeviceProperties(0)
        except Exception:  # noqa: BLE001 - unknown is an answer
            return {"gpu": "unknown", "compute_capability": "unknown"}
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}
    return {"gpu": "unknown", "compute_capability": "unknown"}
