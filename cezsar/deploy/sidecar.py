"""The JSON sidecar of a TensorRT engine: what it was built from and for, and the staleness check.

``cezsar build-engine`` writes one beside every engine (:func:`write_sidecar`): TensorRT version, GPU
and compute capability, the sha256 of the ONNX and of the engine, the batch profile and the model
hash. :func:`check_engine` reads and checks it once when a backend loads the engine, and refuses a
stale or foreign engine with the command that rebuilds it. Pure Python: the same message on a machine
without TensorRT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest, file_sha256
from cezsar.errors import CezsarError

SIDECAR_FORMAT = "cezsar-engine"
SIDECAR_VERSION = 1


def write_sidecar(engine: str | Path, data: dict[str, Any]) -> dict[str, Any]:
    """Write the sidecar of ``engine`` atomically (``format`` and ``version`` added); returns what it wrote."""
    from cezsar.atomic import write_json

    side = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **data}
    write_json(layout.sidecar_path(engine), side)
    return side


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    side = layout.sidecar_path(engine)
    if not side.is_file():
        raise CezsarError(f"{engine}: no sidecar {side.name}; rebuild with `cezsar build-engine`")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CezsarError(f"{side}: unreadable ({e}); rebuild with `cezsar build-engine`") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise CezsarError(f"{side}: not a cezsar engine sidecar; rebuild with `cezsar build-engine`")
    return data


def check_sidecar(
    engine: str | Path,
    onnx_path: str | Path,
    tensorrt_version: str | None = None,
    gpu: dict[str, str] | None = None,
    model_hash: str | None = None,
) -> dict[str, Any]:
    """The sidecar of ``engine``, read once; CezsarError when the engine is missing, stale or foreign.

    Stale: built for another model (``model_hash``), the ONNX changed since the build, the engine file
    was replaced, or it was built with another TensorRT version or for another GPU or compute
    capability. ``tensorrt_version`` and ``gpu`` default to what is installed here; ``gpu={}`` skips
    the GPU match (no GPU on this machine).
    """
    from cezsar.deploy.tensorrt import gpu_info, tensorrt_module

    engine = Path(engine)
    rebuild = f"rebuild with `cezsar build-engine {engine.parent} --precision {layout.engine_precision(engine)}`"
    if not engine.is_file():
        raise CezsarError(f"{engine}: engine not found; {rebuild}")
    side = read_sidecar(engine)
    if model_hash and side.get("model_hash") and side["model_hash"] != model_hash:
        raise CezsarError(
            f"{engine}: built for another model ({str(side['model_hash'])[:12]}, this deploy folder is "
            f"{model_hash[:12]}); {rebuild}"
        )
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CezsarError(f"{engine}: its ONNX {onnx_path} is missing")
    if side.get("onnx_sha256") != file_sha256(onnx_path):
        raise CezsarError(f"{engine}: stale, {onnx_path.name} changed since the engine was built; {rebuild}")
    if side.get("engine_sha256") and side["engine_sha256"] != file_sha256(engine):
        raise CezsarError(f"{engine}: the engine file does not match its sidecar (replaced or corrupt); {rebuild}")
    if tensorrt_version is None:
        trt = tensorrt_module()
        tensorrt_version = str(trt.__version__) if trt is not None else None
    if tensorrt_version is not None and side.get("tensorrt_version") != tensorrt_version:
        built = side.get("tensorrt_version")
        raise CezsarError(f"{engine}: built with TensorRT {built}, this machine has {tensorrt_version}; {rebuild}")
    gpu = gpu if gpu is not None else gpu_info()
    cc, name = gpu.get("compute_capability", "unknown"), gpu.get("gpu", "unknown")
    if cc != "unknown" and side.get("compute_capability") != cc:
        raise CezsarError(
            f"{engine}: built for compute capability {side.get('compute_capability')} ({side.get('gpu')}), "
            f"this GPU is {cc} ({name}); {rebuild}"
        )
    if name != "unknown" and side.get("gpu") != name:
        raise CezsarError(f"{engine}: built on {side.get('gpu')}, this GPU is {name}; {rebuild}")
    return side


def check_engine(deploy_dir: str | Path, manifest: Manifest, part: str, precision: str) -> tuple[Path, dict[str, Any]]:
    """(engine, its sidecar) of ``part`` at ``precision`` in ``deploy_dir``, checked against this deploy
    folder and this machine: the one check a backend runs before it loads an engine. On a machine
    without an NVIDIA driver the GPU match is skipped, so the message is the same everywhere."""
    from cezsar.deploy.tensorrt import nvidia_driver_present

    engine = layout.engine_file(deploy_dir, part, precision)
    gpu: dict[str, str] | None = None if nvidia_driver_present() else {}
    side = check_sidecar(
        engine, layout.engine_source(deploy_dir, manifest, part, precision), gpu=gpu, model_hash=manifest.model_hash
    )
    return engine, side
