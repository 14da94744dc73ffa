"""The one import of OpenCV (``cv2``) for the core, and which OpenCV this process really uses.

pip's ``opencv-python-headless`` (the ``opencv`` extra, in the default install) has no GStreamer. On a
Jetson, JetPack's OpenCV (``python3-opencv``, in /usr/lib/python3/dist-packages) has it, and the
hardware-decode pipelines (``nvarguscamerasrc``, ``nvv4l2decoder``) need it; a pip OpenCV in the same
environment shadows it. :func:`opencv_info` says which ``cv2`` was imported, from which distribution,
whether it has GStreamer, and whether another ``cv2`` further down ``sys.path`` is hidden by it, so the
startup summary can say it in one line (:func:`describe`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

OPENCV_MISSING = (
    "OpenCV (cv2) is not installed: pip install 'cezsar[opencv]' (pip's opencv-python-headless), or on a "
    "Jetson use JetPack's OpenCV with GStreamer (sudo apt install python3-opencv; a venv made with "
    "--system-site-packages)"
)

try:
    import cv2
except ImportError as e:  # the message says how to install it; raised where the core is first imported
    raise ImportError(OPENCV_MISSING) from e

__all__ = ["OPENCV_MISSING", "cv2", "describe", "has_gstreamer", "opencv_info"]


def has_gstreamer(module: Any = cv2) -> bool:
    """Whether this OpenCV was built with the GStreamer video backend (pipelines as sources)."""
    registry = getattr(module, "videoio_registry", None)
    if registry is not None and hasattr(module, "CAP_GSTREAMER"):
        try:
            return bool(registry.hasBackend(module.CAP_GSTREAMER))
        except Exception:  # noqa: BLE001 - old builds: fall back to the build information
            pass
    info = module.getBuildInformation() if hasattr(module, "getBuildInformation") else ""
    return any(line.strip().startswith("GStreamer:") and "YES" in line for line in info.splitlines())


def _distribution(module_file: Path) -> str | None:
    """The pip distribution that installed the ``cv2`` at ``module_file`` (None: not pip's, e.g. apt's)."""
    try:
        owners = importlib.metadata.packages_distributions().get("cv2", [])
    except Exception:  # noqa: BLE001 - broken metadata: unknown
        return None
    for name in owners:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        root = Path(str(dist.locate_file(""))).resolve()
        if module_file.resolve().is_relative_to(root):
            return name
    return None


def _other_cv2(used: Path, path: list[str] | None = None) -> list[str]:
    """Other ``cv2`` packages on ``sys.path`` that the imported one hides."""
    found = []
    for entry in path if path is not None else sys.path:
        spec = importlib.machinery.PathFinder.find_spec("cv2", [entry]) if entry else None
        if spec is None or not spec.origin:
            continue
        where = Path(spec.origin).resolve().parent
        if where != used:
            found.append(str(where))
    return found


def opencv_info(module: Any = cv2, path: list[str] | None = None) -> dict[str, Any]:
    """{"version", "location", "distribution" (pip name, or None for a system/apt build), "gstreamer",
    "shadowed" (other cv2 folders on sys.path that this one hides)}."""
    location = Path(getattr(module, "__file__", "") or ".").resolve().parent
    return {
        "version": str(getattr(module, "__version__", "?")),
        "location": str(location),
        "distribution": _distribution(location),
        "gstreamer": has_gstreamer(module),
        "shadowed": _other_cv2(location, path),
    }


def describe(info: dict[str, Any] | None = None) -> str:
    """One line for a startup summary: which OpenCV, from where, GStreamer or not, and what it hides."""
    info = info if info is not None else opencv_info()
    source = f"pip {info['distribution']}" if info["distribution"] else "system build"
    line = (
        f"OpenCV {info['version']} ({source}, {'with' if info['gstreamer'] else 'no'} GStreamer) at {info['location']}"
    )
    if info["shadowed"] and not info["gstreamer"]:
        line += (
            f"; it hides another cv2 at {', '.join(info['shadowed'])} (JetPack's, with GStreamer?): "
            f"pip uninstall {info['distribution'] or 'opencv-python-headless'} to use that one"
        )
    return line
