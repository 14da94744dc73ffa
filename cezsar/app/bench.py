"""Helpers shared by the benchmark scripts (scripts/bench_*.py; no benchmark here), in the app layer so that
the scripts import them as ``from cezsar.app import bench as bc`` wherever they are run from.

- ``machine()``: CPU model and cores (from /proc/cpuinfo), GPU name or None.
- ``resolve_backbone(name)``: the backbone name to put in a ModelConfig. ``resnet18``/``resnet50``
  try torchvision, then timm; where neither imports (torchvision from PyPI does not import beside the
  CPU torch build, and timm imports torchvision at import time), a plain ResNet of the same
  architecture (torchvision's layer layout: BasicBlock [2,2,2,2] / Bottleneck [3,4,6,3], random init)
  is registered for this process as ``bench-resnet18`` / ``bench-resnet50``, and the JSON says so.
- ``stats_ms(seconds)``: median / p99 / mean in milliseconds.
- ``peak_rss_mb()``, ``rss_mb()``.
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512_vnni", "avx_vnni", "amx", "avx2", "avx512f")))
    except OSError:
        pass
    return []


def gpu_name() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def machine() -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 1
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": cpu_model(),
        "cores": affinity,
        "cpu_flags": cpu_flags(),
        "load_average": load,
        "gpu": gpu_name(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "onnxruntime", "numpy", "cv2", "tensorrt"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "?"))
        except Exception:  # noqa: BLE001 - absent or broken: reported as None
            out[name] = None
    return out


def stats_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    a = 1000.0 * np.asarray(seconds, dtype=np.float64)
    if a.size == 0:
        return {"median_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "n": 0}
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "n": int(a.size),
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return 0.0


# -- a torchvision-layout ResNet that needs neither torchvision nor timm ------------------------

_LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottle", (3, 4, 6, 3)),
}


def _plain_resnet(name: str) -> tuple[Any, int]:
    import torch
    from torch import nn

    kind, blocks = _LAYOUTS[name]
    expansion = 1 if kind == "basic" else 4

    class Block(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * expansion
            if kind == "basic":
                self.body = nn.Sequential(
                    nn.Conv2d(cin, width, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(width),
                )
            else:
                self.body = nn.Sequential(
                    nn.Conv2d(cin, width, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, cout, 1, bias=False),
                    nn.BatchNorm2d(cout),
                )
            self.down: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.body(x) + self.down(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for i, n in enumerate(blocks):
        width = 64 * 2**i
        for j in range(n):
            layers.append(Block(cin, width, 2 if (i > 0 and j == 0) else 1))
            cin = width * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return nn.Sequential(*layers), cin


def resolve_backbone(name: str) -> tuple[str, str]:
    """(backbone name for ModelConfig, how it was resolved in words)."""
    from cezsar.errors import CezsarError
    from training import backbones

    try:
        backbones.create_backbone(name)
        return name, f"{name} via training.backbones.create_backbone"
    except (CezsarError, ImportError, RuntimeError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
    short = name.split(":", 1)[-1]
    if short not in _LAYOUTS:
        raise SystemExit(f"backbone {name!r} is not available here ({why})")
    local = f"bench-{short}"

    def make(pretrained: bool = False, **_: int) -> tuple[Any, int]:
        if pretrained:
            raise CezsarError(f"{local} has no pretrained weights")
        return _plain_resnet(short)

    backbones.register_backbone(local, make, exist_ok=True)
    return local, (
        f"{name} unavailable ({why}); using {local}: the same {short} architecture (torchvision layout), "
        "defined in cezsar/app/bench.py, random init"
    )


def build_model_dir(
    folder: Path, backbone: str, resolution: int, window: int, fps: float, text_model: str | None
) -> Any:
    """Save a random-init CezsarModel to ``folder``; returns its ModelConfig."""
    import torch

    from cezsar.preprocess import Preprocess
    from training.model import CezsarModel, ModelConfig

    torch.manual_seed(0)
    pre = Preprocess(size=resolution, resize=max(resolution, round(resolution * 256 / 224)))
    kw: dict[str, Any] = {}
    if text_model:
        kw["text_model"] = text_model
    cfg = ModelConfig(backbone=backbone, frames=window, fps=fps, preprocess=pre.to_dict(), dropout=0.0, **kw)
    model = CezsarModel(cfg).eval()
    model.save(folder)
    return cfg
