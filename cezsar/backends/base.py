"""The interface every inference backend implements, and the shared work done once for all of them.

A backend turns one network of a deploy folder ("frame_encoder" or "temporal_head") into a
:class:`Runner`: numpy float32 in, numpy float32 out, whatever runs underneath (TensorRT engine,
onnxruntime session, torch module). Runners are thread-safe.

- :class:`Runner`, in the spirit of Polygraphy's runners: :meth:`Runner.activate` acquires what the
  runner runs on (session, engine and execution context, buffers) and :meth:`Runner.deactivate`
  releases it; ``with runner:`` does both. Calling a runner times each inference in the base class
  (``calls``, ``seconds``, ``last_seconds``). Subclasses implement ``activate_impl``, ``infer`` and
  ``deactivate_impl``.
- :class:`Backend` declares what it can run (:class:`Offer`: a device, its precisions, what
  ``--precision auto`` tries, its rank for ``--backend auto``), which deploy files serve it
  (:meth:`Backend.serving_file`, answered with the names :mod:`cezsar.deploy.layout` gives) and the
  optional modules it needs (``requires``, installed by ``extra``), and registers itself with
  :func:`cezsar.backends.registry.register_backend`; the choice of a backend comes from those
  declarations.
- :func:`run_batched`: the one chunked run, used by the converter and the edge.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

import numpy as np

from cezsar.deploy.layout import PRECISIONS, VIDEO_PARTS
from cezsar.deploy.manifest import Manifest
from cezsar.errors import CezsarError

R = TypeVar("R", bound="Runner")


class Runner:
    """One compiled network: (batch, ...) float32 array in, (batch, ...) float32 array out."""

    name: str = "runner"
    max_batch: int | None = None  # None: any batch size
    is_active: bool = False
    calls: int = 0
    seconds: float = 0.0  # total inference time
    last_seconds: float = 0.0
    _stats_lock = threading.Lock()  # class-wide: counters only, never held during an inference

    # -- to implement --------------------------------------------------------------------------
    def activate_impl(self) -> None:
        """Acquire what the runner needs (session, engine, buffers); called by :meth:`activate`."""

    def deactivate_impl(self) -> None:
        """Release it; called by :meth:`deactivate`."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        """One inference on an active runner."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer()")

    # -- shared --------------------------------------------------------------------------------
    def activate(self: R) -> R:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def close(self) -> None:
        self.deactivate()

    def __enter__(self: R) -> R:
        return self.activate()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.is_active:
            raise CezsarError(f"{self.name}: the runner is not active (use `with runner:` or runner.activate())")
        t0 = time.perf_counter()
        y = self.infer(x)
        dt = time.perf_counter() - t0
        with self._stats_lock:
            self.calls += 1
            self.seconds += dt
            self.last_seconds = dt
        return y


def run_batched(runner: Callable[[np.ndarray], np.ndarray], x: np.ndarray, max_batch: int | None = None) -> np.ndarray:
    """Run ``runner`` on ``x`` in chunks along axis 0 of at most ``max_batch`` (or the runner's own
    ``max_batch``, whichever is smaller); float32 out."""
    limits = [b for b in (max_batch, getattr(runner, "max_batch", None)) if b]
    if len(x) == 0:
        raise CezsarError("run_batched: empty input")
    limit = min(limits) if limits else None
    if limit is None or len(x) <= limit:
        return np.asarray(runner(np.ascontiguousarray(x)), dtype=np.float32)
    parts = [runner(np.ascontiguousarray(x[i : i + limit])) for i in range(0, len(x), limit)]
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])


@dataclass(frozen=True)
class Offer:
    """What a backend can run on one device."""

    device: str
    precisions: tuple[str, ...]  # what it runs there
    auto: tuple[str, ...]  # --precision auto: tried in this order
    rank: int | None = None  # --backend auto: lower is tried first; None: auto never picks it


class Backend(ABC):
    name: ClassVar[str] = "?"
    offers: ClassVar[tuple[Offer, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()  # optional modules it imports (when used), installed by ``extra``
    extra: ClassVar[str | None] = None  # the pyproject.toml extra that installs ``requires``

    def __init__(self, precision: str = "fp32", device: str | None = None, threads: int | None = None) -> None:
        device = device or self.offers[0].device
        offer = self.offer(device)
        if precision not in offer.precisions:
            raise CezsarError(self.refuse(precision, device))
        self.precision = precision
        self.device = device
        self.threads = threads

    # -- declarations ---------------------------------------------------------------------------
    @classmethod
    def offer(cls, device: str) -> Offer:
        for o in cls.offers:
            if o.device == device:
                return o
        raise CezsarError(f"{cls.name}: unknown device {device!r} ({', '.join(o.device for o in cls.offers)})")

    @classmethod
    def candidate(cls, device: str) -> str:
        """The ``--backend`` name of this backend on ``device`` (the plain name when it has one device)."""
        return cls.name if len(cls.offers) == 1 else f"{cls.name}-{device}"

    @classmethod
    def refuse(cls, precision: str, device: str) -> str:
        """Why ``precision`` cannot run on ``device``, in one line."""
        if precision not in PRECISIONS:
            return f"--precision {precision}: choose {', '.join(PRECISIONS)}"
        runs = ", ".join(cls.offer(device).precisions)
        return f"--precision {precision}: {cls.name} on {device} runs {runs}"

    # -- probes (no model loaded) ---------------------------------------------------------------
    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """(the library is usable here, reason in words)."""

    @classmethod
    def device_available(cls, device: str, precision: str) -> tuple[bool, str]:
        """(``device`` can run ``precision`` here, reason in words); may import the library."""
        return True, ""

    @classmethod
    def device_present(cls, device: str, precision: str) -> bool:
        """A cheap guess whether ``device`` is worth trying for a plain ``--backend NAME``."""
        return cls.device_available(device, precision)[0]

    # -- the deploy files it serves -----------------------------------------------------------------
    def serving_file(self, deploy_dir: Path, manifest: Manifest, part: str) -> Path:
        """The deploy file (or folder) that serves ``part`` for this backend at its precision on its device,
        by the names :mod:`cezsar.deploy.layout` gives; CezsarError names what is missing and the command
        that writes it. A backend that reads no deploy file keeps this default."""
        raise CezsarError(f"{self.name} backend: reads no file of a deploy folder")

    def serving_files(self, deploy_dir: Path, manifest: Manifest) -> dict[str, Path]:
        """:meth:`serving_file` of each part the backends run."""
        return {part: self.serving_file(Path(deploy_dir), manifest, part) for part in VIDEO_PARTS}

    # -- loading --------------------------------------------------------------------------------
    def check_files(self, deploy_dir: Path, manifest: Manifest) -> None:  # noqa: B027 - optional hook
        """Refuse stale or foreign files before any library is loaded (pure Python, the same message on
        every machine); what it checked is not checked again by :meth:`load`."""

    @abstractmethod
    def runner(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        """An inactive runner of ``part``."""

    def load(self, deploy_dir: Path, manifest: Manifest, part: str) -> Runner:
        """The active runner of ``part`` ("frame_encoder" or "temporal_head")."""
        if part not in VIDEO_PARTS:
            raise CezsarError(f"{self.name} backend: unknown part {part!r} ({', '.join(VIDEO_PARTS)})")
        return self.runner(Path(deploy_dir), manifest, part).activate()

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, {self.device})"
