from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_edge_support import deploy_dir

from cezsar.errors import CezsarError
from cezsar.manifest import load_manifest
from edge.backends.select import load_backend


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
    from edge.backends.onnxruntime import model_file

    d = tmp_path / "deploy"
    shutil.copytree(deploy_dir(), d)
    m = load_manifest(d)
    for part in ("frame_encoder", "temporal_head"):  # stand-in "quantized" files: same graphs, int8 names
        shutil.copy(d / f"{part}.onnx", d / f"{part}.int8.onnx")
    with caplog.at_level("WARNING", logger="edge.backends.onnxruntime"):
        loaded = load_backend("onnxruntime-cpu", "int8", d, m)
    assert loaded.backend.describe() == "onnxruntime (int8, cpu)"
    assert "slower than FP32 on the CPU" in caplog.text and "--target cpu" in caplog.text
    shutil.copy(d / "frame_encoder.onnx", d / "frame_encoder.int8-cpu.onnx")  # the CPU layout wins on the CPU
    assert model_file(d, m, "frame_encoder", "int8", "cpu").name == "frame_encoder.int8-cpu.onnx"
    assert model_file(d, m, "frame_encoder", "int8", "cuda").name == "frame_encoder.int8.onnx"
    assert model_file(d, m, "frame_encoder", "int8", "tensorrt").name == "frame_encoder.int8.onnx"


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
        "from cezsar.manifest import load_manifest\n"
        "from edge.backends.select import load_backend\n"
        "from edge.text import TextEncoder\n"
        "import edge.runtime, edge.client, edge.cli\n"
        f"d = {str(d)!r}\n"
        "m = load_manifest(d)\n"
        "load_backend('auto', 'fp32', d, m)\n"
        "TextEncoder(d, m).encode(['a thing moving left'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
