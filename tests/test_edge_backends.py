from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cezsar.backends.base import Runner
from cezsar.backends.registry import load_backend
from cezsar.deploy.manifest import load_manifest
from cezsar.errors import CezsarError
from tests.helpers.models import deploy_dir


def test_auto_picks_the_best_available_and_says_why() -> None:
    d = deploy_dir()
    loaded = load_backend("auto", "fp32", d, load_manifest(d))
    assert loaded.reason.startswith("auto:")
    names = [s.split(":")[0] for s in loaded.skipped]
    # the order is tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime-cpu; what ran is not skipped
    order = ["tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu"]
    chosen = loaded.reason.split()[1]
    assert names == order[: order.index(chosen)]
    auto = load_backend("auto", "auto", d, load_manifest(d))
    assert "(auto)" in auto.reason and auto.backend.precision in ("fp32", "fp16", "int8")


def test_onnxruntime_and_torch_agree() -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch not installed")
    d = deploy_dir()
    m = load_manifest(d)
    ort_b = load_backend("onnxruntime-cpu", "fp32", d, m)
    torch_b = load_backend("torch-cpu", "fp32", d, m)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, m.pre.size, m.pre.size)).astype(np.float32)
    f1, f2 = ort_b.frame_encoder(x), torch_b.frame_encoder(x)
    assert f1.shape == (3, m.feature_dim) and np.allclose(f1, f2, atol=1e-4)
    w = rng.standard_normal((2, m.window, m.feature_dim)).astype(np.float32)
    e1, e2 = ort_b.temporal_head(w), torch_b.temporal_head(w)
    assert e1.shape == (2, m.joint_dim) and np.allclose(e1, e2, atol=1e-4)


def test_precision_errors_are_clear() -> None:
    d = deploy_dir()
    m = load_manifest(d)
    with pytest.raises(CezsarError, match=r"int8 needs frame_encoder\.int8\.onnx.*cezsar quantize"):
        load_backend("onnxruntime-cpu", "int8", d, m)
    with pytest.raises(CezsarError, match="fp16"):
        load_backend("onnxruntime-cpu", "fp16", d, m)
    with pytest.raises(CezsarError, match="choose one of"):
        load_backend("openvino", "fp32", d, m)
    with pytest.raises(CezsarError, match="choose one of"):
        load_backend("auto", "fp8", d, m)


def test_int8_files_are_used_when_present(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cezsar.deploy.layout import onnx_file

    d = tmp_path / "deploy"
    shutil.copytree(deploy_dir(), d)
    m = load_manifest(d)
    for part in ("frame_encoder", "temporal_head"):  # stand-in "quantized" files: same graphs, int8 names
        shutil.copy(d / f"{part}.onnx", d / f"{part}.int8.onnx")
    with caplog.at_level("WARNING", logger="cezsar.backends.onnxruntime"):
        loaded = load_backend("onnxruntime-cpu", "int8", d, m)
    assert loaded.backend.describe() == "onnxruntime (int8, cpu)"
    assert "slower than FP32 on the CPU" in caplog.text and "--target cpu" in caplog.text
    shutil.copy(d / "frame_encoder.onnx", d / "frame_encoder.int8-cpu.onnx")  # the CPU layout wins on the CPU
    assert onnx_file(d, m, "frame_encoder", "int8", "cpu").name == "frame_encoder.int8-cpu.onnx"
    assert onnx_file(d, m, "frame_encoder", "int8", "cuda").name == "frame_encoder.int8.onnx"
    assert onnx_file(d, m, "frame_encoder", "int8", "tensorrt").name == "frame_encoder.int8.onnx"


def test_tensorrt_backend_absent_or_unusable_is_an_error_not_a_crash() -> None:
    d = deploy_dir()
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    with pytest.raises(CezsarError, match="--backend tensorrt"):
        load_backend("tensorrt", "fp16", d, load_manifest(d))


def test_onnxruntime_path_never_imports_torch() -> None:
    d = deploy_dir()
    code = (
        "import sys\n"
        "from cezsar.deploy.manifest import load_manifest\n"
        "from cezsar.backends.registry import load_backend\n"
        "from edge.text import TextEncoder\n"
        "import edge.runtime, edge.client, cezsar.cli\n"
        f"d = {str(d)!r}\n"
        "m = load_manifest(d)\n"
        "load_backend('auto', 'fp32', d, m)\n"
        "TextEncoder(d, m).encode(['a thing moving left'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- the registry: choices come from each backend's declarations ---------------------------------------


def test_names_and_auto_order_come_from_the_declarations() -> None:
    from cezsar.backends.registry import auto_order, backends, names

    assert list(backends()) == ["tensorrt", "onnxruntime", "torch"]
    assert auto_order() == ["tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu"]
    assert names() == (
        "auto",
        "tensorrt",
        "onnxruntime",
        "torch",
        "onnxruntime-cpu",
        "onnxruntime-cuda",
        "torch-cpu",
        "torch-cuda",
    )


def test_a_registered_backend_is_selectable_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new backend is one class: it declares its offer, registers itself, and --backend finds it."""
    from cezsar.backends import registry
    from cezsar.backends.base import Backend, Offer

    class Scale(Runner):
        def __init__(self, factor: float) -> None:
            self.factor = factor

        def infer(self, x: np.ndarray) -> np.ndarray:
            return x.reshape(len(x), -1)[:, :4] * self.factor

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_backend
    class NumpyBackend(Backend):
        name = "numpy-test"
        offers = (Offer("cpu", ("fp32",), ("fp32",), rank=None),)  # never picked by auto

        @classmethod
        def available(cls) -> tuple[bool, str]:
            return True, "numpy"

        def runner(self, deploy_dir: Path, manifest: Any, part: str) -> Runner:
            return Scale(2.0 if part == "frame_encoder" else 3.0)

    d = deploy_dir()
    assert "numpy-test" in registry.names() and "numpy-test" not in registry.auto_order()
    loaded = registry.load_backend("numpy-test", "auto", d, load_manifest(d))
    assert loaded.reason == "asked for numpy-test; precision fp32 (auto)"
    x = np.ones((3, 8), np.float32)
    assert np.all(loaded.frame_encoder(x) == 2.0) and np.all(loaded.temporal_head(x) == 3.0)
    with pytest.raises(CezsarError, match="--precision int8: numpy-test on cpu runs fp32"):
        registry.load_backend("numpy-test", "int8", d, load_manifest(d))
    loaded.close()
    assert not loaded.frame_encoder.is_active
    with pytest.raises(TypeError, match="taken"):

        @registry.register_backend
        class Other(NumpyBackend):
            pass


def test_runner_base_activates_deactivates_and_times() -> None:
    class Doubler(Runner):
        def __init__(self) -> None:
            self.events: list[str] = []

        def activate_impl(self) -> None:
            self.events.append("on")

        def deactivate_impl(self) -> None:
            self.events.append("off")

        def infer(self, x: np.ndarray) -> np.ndarray:
            return x * 2

    r = Doubler()
    with pytest.raises(CezsarError, match="not active"):
        r(np.ones(2, np.float32))
    with r as active:
        assert active is r and r.is_active
        assert np.all(r(np.ones(2, np.float32)) == 2) and np.all(r(np.ones(3, np.float32)) == 2)
    assert r.events == ["on", "off"] and not r.is_active
    assert r.calls == 2 and r.seconds >= r.last_seconds > 0


def test_run_batched_respects_the_runner_limit() -> None:
    from cezsar.backends.base import run_batched

    class Limited(Runner):
        max_batch = 4
        is_active = True

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def infer(self, x: np.ndarray) -> np.ndarray:
            self.sizes.append(len(x))
            return x + 1

    r = Limited()
    x = np.arange(10, dtype=np.float32)
    assert np.all(run_batched(r, x) == x + 1) and r.sizes == [4, 4, 2]
    r.sizes.clear()
    assert np.all(run_batched(r, x, 3) == x + 1) and r.sizes == [3, 3, 3, 1]


def test_tensorrt_sidecar_is_read_and_hashed_once_per_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One check per engine: the registry's early file check hands its result to the load, which does not
    hash again. TensorRT is not installed here: its availability and the engine deserialization are
    replaced (boundary fakes); the sidecar check is the real one."""
    from cezsar.backends import tensorrt as bt
    from cezsar.deploy import layout
    from cezsar.deploy import sidecar as sc
    from cezsar.deploy.manifest import file_sha256

    src = deploy_dir()
    d = tmp_path / "d"
    d.mkdir()
    for p in src.iterdir():
        (d / p.name).symlink_to(p.resolve())
    m = load_manifest(d)
    for part in layout.VIDEO_PARTS:
        engine = layout.engine_path(d, part, "fp16")
        engine.write_bytes(b"a stand-in engine for " + part.encode())
        side = {"onnx_sha256": file_sha256(m.path(d, part)), "engine_sha256": file_sha256(engine)}
        sc.write_sidecar(engine, {**side, "model_hash": m.model_hash, "profile": {"min": 1, "opt": 4, "max": 16}})
    hashed: list[str] = []
    reads: list[str] = []
    real_hash, real_read = sc.file_sha256, sc.read_sidecar

    def counting_hash(path: Path) -> str:
        hashed.append(Path(path).name)
        return real_hash(path)

    def counting_read(engine: Path) -> dict[str, Any]:
        reads.append(Path(engine).name)
        return real_read(engine)

    monkeypatch.setattr(sc, "file_sha256", counting_hash)
    monkeypatch.setattr(sc, "read_sidecar", counting_read)
    monkeypatch.setattr(bt.TensorRTBackend, "available", classmethod(lambda cls: (True, "stand-in")))
    monkeypatch.setattr(bt.TensorRTRunner, "activate_impl", lambda self: None)
    loaded = load_backend("tensorrt", "fp16", d, m)
    assert loaded.backend.describe() == "tensorrt (fp16, cuda)" and loaded.frame_encoder.max_batch == 16
    assert sorted(reads) == sorted(f"{p}.fp16.engine" for p in layout.VIDEO_PARTS)
    assert sorted(hashed) == sorted(
        [f"{p}.fp16.engine" for p in layout.VIDEO_PARTS] + [f"{p}.onnx" for p in layout.VIDEO_PARTS]
    )


def test_onnxruntime_fp16_refuses_a_session_without_the_tensorrt_provider() -> None:
    """fp16 asks for the TensorRT execution provider; onnxruntime here has none (CPU only), so the session it
    really creates runs on the CPU: refused in one line instead of running FP32 under an fp16 label."""
    from cezsar.backends.onnxruntime import OnnxRuntimeBackend, available_providers

    if "TensorrtExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime has the TensorRT execution provider")
    d = deploy_dir()
    runner = OnnxRuntimeBackend("fp16", "cuda").runner(d, load_manifest(d), "frame_encoder")
    with pytest.raises(CezsarError, match=r"needs its TensorRT execution provider, but the session runs on CPU") as e:
        runner.activate()
    assert "\n" not in str(e.value) and not runner.is_active and runner.session is None


def test_onnxruntime_tensorrt_provider_caches_engines_in_the_deploy_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cezsar.backends import onnxruntime as bo
    from cezsar.deploy import layout

    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(bo, "available_providers", lambda: everything)  # as onnxruntime-gpu would list them
    provs = bo.OnnxRuntimeBackend("fp16", "cuda").providers(tmp_path)
    assert [p if isinstance(p, str) else p[0] for p in provs] == everything
    name, opts = provs[0]
    cache = layout.ort_tensorrt_cache_dir(tmp_path)
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(cache) and cache.is_dir()
    assert cache.parent == tmp_path  # not the working directory
    no_dir = bo.OnnxRuntimeBackend("int8", "tensorrt").providers()[0][1]
    assert no_dir["trt_engine_cache_enable"] is False and "trt_engine_cache_path" not in no_dir
