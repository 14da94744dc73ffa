"""cezsar.opencv: which cv2 the process uses, whether it can open GStreamer pipelines, what it hides."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from cezsar import opencv


def test_the_imported_opencv_is_described() -> None:
    info = opencv.opencv_info()
    assert info["version"] == opencv.cv2.__version__
    assert Path(info["location"]) == Path(opencv.cv2.__file__).resolve().parent
    assert info["gstreamer"] == opencv.has_gstreamer()
    line = opencv.describe(info)
    assert line.startswith(f"OpenCV {info['version']} (") and "GStreamer" in line and "\n" not in line


def test_a_hidden_system_cv2_is_named(tmp_path: Path) -> None:
    system = tmp_path / "dist-packages"
    (system / "cv2").mkdir(parents=True)
    (system / "cv2" / "__init__.py").write_text("")
    here = Path(opencv.cv2.__file__).resolve().parent
    assert opencv._other_cv2(here, [str(here.parent), str(system)]) == [str((system / "cv2").resolve())]
    info = {
        "version": "4.10.0",
        "location": str(here),
        "distribution": "opencv-python-headless",
        "gstreamer": False,
        "shadowed": [str(system / "cv2")],
    }
    line = opencv.describe(info)
    assert "pip opencv-python-headless, no GStreamer" in line
    assert f"hides another cv2 at {system / 'cv2'}" in line and "pip uninstall opencv-python-headless" in line
    jetpack = {**info, "distribution": None, "gstreamer": True, "shadowed": []}
    assert opencv.describe(jetpack) == f"OpenCV 4.10.0 (system build, with GStreamer) at {here}"


def test_gstreamer_from_the_build_information_of_old_builds() -> None:
    yes = SimpleNamespace(getBuildInformation=lambda: "  Video I/O:\n    GStreamer:   YES (1.20.3)\n")
    no = SimpleNamespace(getBuildInformation=lambda: "  Video I/O:\n    GStreamer:   NO\n")
    assert opencv.has_gstreamer(yes) and not opencv.has_gstreamer(no)
