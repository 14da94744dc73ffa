"""The one small interface every inference backend implements.

A backend turns one network of a deploy folder ("frame_encoder" or "temporal_head") into a
Runner: numpy float32 in, numpy float32 out, whatever runs underneath (TensorRT engine,
onnxruntime session, torch module). Runners are thread-safe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from cezsar.manifest import Manifest


class Runner(ABC):
    """One compiled network: (batch, ...) float32 array in, (batch, ...) float32 array out."""

    max_batch: int | None = None  # None: any batch size

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Backend(ABC):
    name: str = "?"

    def __init__(self, precision: str = "fp32", device: str = "cpu") -> None:
        self.precision = precision
        self.device = device

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(usable here, reason in words)."""

    @abstractmethod
    def load(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        """part: "frame_encoder" or "temporal_head"."""

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, {self.device})"
