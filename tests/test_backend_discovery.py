"""A backend is one module of the cezsar.backends package: discovered without a list, serving the deploy
files it declares itself, its optional modules declared to cezsar.extras."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cezsar import extras
from cezsar.backends import registry
from cezsar.deploy import layout
from cezsar.deploy.manifest import load_manifest
from cezsar.errors import CezsarError

MODULE = "cezsar.backends.memmap_test"
# a backend that runs a network as a matrix product with weights read from a .npy it declares as its file
SOURCE = """
from pathlib import Path

import numpy as np

from cezsar.backends.base import Backend, Offer, Runner
from cezsar.backends.registry import register_backend
from cezsar.deploy import layout
from cezsar.errors import CezsarError


class MatrixRunner(Runner):
    def __init__(self, path):
        self.path = path
        self.name = path.name

    def activate_impl(self):
        self.w = np.load(self.path)

    def infer(self, x):
        return x.reshape(len(x), -1) @ self.w


@register_backend
class MemmapBackend(Backend):
    name = "memmap-test"
    requires = ("memmap_test_lib",)
    extra = "memmap"
    offers = (Offer("cpu", ("fp32",), ("fp32",), rank=None),)

    @classmethod
    def available(cls):
        return True, "numpy"

    def serving_file(self, deploy_dir, manifest, part):
        path = Path(deploy_dir) / (layout.onnx_name(part) + ".weights.npy")
        if not path.is_file():
            raise CezsarError(f"{path}: no weights file for the memmap-test backend")
        return path

    def runner(self, deploy_dir, manifest, part):
        return MatrixRunner(self.serving_file(deploy_dir, manifest, part))
"""


@pytest.fixture()
def new_backend_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package gains one module file (in a folder added to the package's path, so that the source tree is
    left as it is); the registry is restored afterwards."""
    import cezsar.backends

    registry.backends()  # the built-in ones registered first, so the restored registry keeps them
    folder = tmp_path / "more_backends"
    folder.mkdir()
    (folder / "memmap_test.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.setattr(cezsar.backends, "__path__", [*cezsar.backends.__path__, str(folder)])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(extras, "_EXTRAS", dict(extras._EXTRAS))
    yield folder
    sys.modules.pop(MODULE, None)


def test_a_new_backend_module_is_discovered_and_serves_its_declared_files(
    new_backend_module: Path, tmp_path: Path
) -> None:
    from cezsar.deploy.manifest import Manifest, save_manifest
    from cezsar.preprocess import Preprocess

    assert "memmap-test" not in registry._REGISTRY and MODULE not in sys.modules
    assert "memmap-test" in registry.names()  # no list was edited: the module file is all there is
    assert "memmap-test" not in registry.auto_order()  # rank None: auto never picks it
    d = tmp_path / "deploy"
    d.mkdir()
    save_manifest(d, Manifest("0" * 64, 17, Preprocess(size=8, resize=8).to_dict(), 4.0, 4, 3, 2))
    m = load_manifest(d)
    with pytest.raises(CezsarError, match="--backend memmap-test"):  # its declared file is not there yet
        registry.load_backend("memmap-test", "fp32", d, m)
    rng = np.random.default_rng(0)
    weights = {"frame_encoder": rng.standard_normal((3 * 8 * 8, 3)), "temporal_head": rng.standard_normal((12, 2))}
    for part, w in weights.items():
        np.save(d / f"{layout.onnx_name(part)}.weights.npy", w.astype(np.float32))
    loaded = registry.load_backend("memmap-test", "auto", d, m)
    served = loaded.backend.serving_files(d, m)
    assert served == {p: d / f"{p}.onnx.weights.npy" for p in layout.VIDEO_PARTS}
    assert loaded.frame_encoder.path == served["frame_encoder"]  # type: ignore[attr-defined]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.frame_encoder(x), x.reshape(2, -1) @ weights["frame_encoder"], rtol=1e-4)
    loaded.close()
    # its optional library is declared where the backend is: a missing one is named with its extra
    assert extras.extra_for("memmap_test_lib") == "memmap"
    line = extras.missing_extra(ModuleNotFoundError("no", name="memmap_test_lib.core"))
    assert line == (
        "this command needs the optional 'memmap' dependencies (module memmap_test_lib is missing): "
        "pip install 'cezsar[memmap]'"
    )


def test_a_broken_backend_module_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cezsar.backends

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken_test.py").write_text("import a_library_that_is_not_here\n")
    monkeypatch.setattr(cezsar.backends, "__path__", [*cezsar.backends.__path__, str(folder)])
    monkeypatch.setattr(registry, "_FAILED", {})
    try:
        assert list(registry.backends()) == ["tensorrt", "onnxruntime", "torch"]
        assert "a_library_that_is_not_here" in registry._FAILED["cezsar.backends.broken_test"]
    finally:
        sys.modules.pop("cezsar.backends.broken_test", None)


def test_the_builtin_backends_declare_their_files_and_extras(tmp_path: Path) -> None:
    from cezsar.backends.onnxruntime import OnnxRuntimeBackend
    from cezsar.backends.tensorrt import TensorRTBackend
    from cezsar.backends.torch import TorchBackend

    registry.backends()
    assert extras.extra_for("tensorrt") == "tensorrt" and extras.extra_for("torch") == "train"
    assert not hasattr(layout, "RUNTIMES") and not hasattr(layout, "serving_file")  # layout names files only
    assert registry.PRECISION_CHOICES == ("auto", *layout.PRECISIONS) and not hasattr(registry, "PRECISIONS")
    assert OnnxRuntimeBackend.requires == () and TorchBackend.extra == "train" and TensorRTBackend.extra == "tensorrt"
