"""TensorRT: version-dependent build choices, sidecar staleness, the ONNX checks, the no-TensorRT path,
and (with TensorRT and a GPU) real engines. The runtime side without TensorRT (the one logger, CUDA
discovery, the runner on host memory) is tests/test_tensorrt_runtime.py.

Most of the TensorRT logic is pure Python and runs everywhere; where it meets the library it is tested
against stand-ins of the ``tensorrt`` module (tests/helpers/fake_tensorrt.py: the boundary fake). The
tests in ``TestWithTensorRT`` skip themselves unless the real ``tensorrt`` library (not the PyPI
placeholder without ``Builder``) and a CUDA device are present.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cezsar.deploy import layout
from cezsar.deploy import sidecar as sc
from cezsar.deploy import tensorrt as dt
from cezsar.deploy.manifest import file_sha256
from cezsar.errors import CezsarError
from converter import tensorrt_build as tb
from tests.helpers.fake_tensorrt import TRT10, TRT11, TRT85, TRT86

ROOT = Path(__file__).resolve().parents[1]

TRT_NO_TF32 = SimpleNamespace(**{**vars(TRT10), "BuilderFlag": SimpleNamespace(FP16=0, INT8=1)})


@pytest.mark.parametrize(
    ("trt", "precision", "explicit", "strong", "flags", "cleared", "fp16_onnx"),
    [
        (TRT85, "fp16", True, False, ["FP16"], [], False),
        (TRT85, "int8", True, False, ["INT8", "FP16"], [], False),
        (TRT85, "fp32", True, False, [], ["TF32"], False),  # TF32 is on by default: cleared for fp32
        (TRT86, "int8", True, False, ["INT8", "FP16"], [], False),
        (TRT10, "fp16", False, False, ["FP16"], [], False),  # EXPLICIT_BATCH deprecated and ignored from 10.0
        (TRT10, "int8", False, False, ["INT8", "FP16"], [], False),  # FP32 Q/DQ model: TensorRT picks FP16
        (TRT10, "fp32", False, False, [], ["TF32"], False),
        (TRT_NO_TF32, "fp32", False, False, [], [], False),  # feature-detected: no flag, nothing to clear
        (TRT11, "fp16", False, True, [], [], True),  # no FP16 builder flag: FP16 comes from the ONNX
        (TRT11, "int8", False, True, [], [], False),
        (TRT11, "fp32", False, True, [], ["TF32"], False),
    ],
)
def test_build_plan_per_version(
    trt: Any, precision: str, explicit: bool, strong: bool, flags: list[str], cleared: list[str], fp16_onnx: bool
) -> None:
    plan = tb.build_plan(trt, precision)
    assert plan == {
        "explicit_batch": explicit,
        "strongly_typed": strong,
        "builder_flags": flags,
        "cleared_flags": cleared,
        "fp16_onnx": fp16_onnx,
    }
    bits = tb.network_flags(trt, plan)
    assert bits == (1 if explicit else 0) | (2 if strong else 0)


def test_int8_plan_follows_the_qdq_models_high_precision() -> None:
    """A Q/DQ model with FP16 between the Q/DQ pairs (opset 19, TensorRT >= 10) is built strongly typed, so the
    ONNX types run as written; an FP32 one is built with the FP16 flag where the flag exists."""
    assert tb.build_plan(TRT10, "int8", onnx_fp16=True)["strongly_typed"] is True
    assert tb.build_plan(TRT10, "int8", onnx_fp16=True)["builder_flags"] == []
    assert tb.build_plan(TRT86, "int8", onnx_fp16=True)["builder_flags"] == ["INT8", "FP16"]  # no strong typing
    assert tb.build_plan(TRT11, "int8", onnx_fp16=False)["strongly_typed"] is True  # the only mode on 11


def test_build_plan_rejects_unknown_precision() -> None:
    with pytest.raises(CezsarError, match="--precision int4"):
        tb.build_plan(TRT10, "int4")


def test_workspace_and_build_api_selection() -> None:
    class NewConfig:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, int]] = []

        def set_memory_pool_limit(self, pool: Any, n: int) -> None:
            self.calls.append((pool, n))

    class OldConfig:
        max_workspace_size = 0

    new, old = NewConfig(), OldConfig()
    assert tb.set_workspace(TRT10, new, 1 << 30) == "set_memory_pool_limit"
    assert new.calls == [("workspace", 1 << 30)]
    assert tb.set_workspace(SimpleNamespace(), old, 1 << 20) == "max_workspace_size"
    assert old.max_workspace_size == 1 << 20

    class NewBuilder:
        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            return b"plan"

    class OldBuilder:
        def build_engine(self, network: Any, config: Any) -> Any:
            return SimpleNamespace(serialize=lambda: b"old-plan")

    assert tb.serialize_network(NewBuilder(), None, None) == b"plan"
    assert tb.serialize_network(OldBuilder(), None, None) == b"old-plan"


# -- sidecar staleness ----------------------------------------------------------------------------


GPU = {"gpu": "Orin", "compute_capability": "8.7"}


def _engine_with_sidecar(tmp_path: Path) -> tuple[Path, Path]:
    onnx_path = tmp_path / "frame_encoder.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    engine = tmp_path / "frame_encoder.fp16.engine"
    engine.write_bytes(b"engine bytes")
    side = {
        "format": sc.SIDECAR_FORMAT,
        "version": sc.SIDECAR_VERSION,
        "onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": file_sha256(engine),
        "tensorrt_version": "10.3.0",
        "precision": "fp16",
        "profile": {"min": 1, "opt": 8, "max": 64},
        **GPU,
    }
    layout.sidecar_path(engine).write_text(json.dumps(side))
    return engine, onnx_path


def test_engine_naming() -> None:
    e = layout.engine_path("/d", "temporal_head", "int8")
    assert e == Path("/d/temporal_head.int8.engine")
    assert layout.sidecar_path(e) == Path("/d/temporal_head.int8.engine.json")


def test_check_sidecar_accepts_a_fresh_engine(tmp_path: Path) -> None:
    engine, onnx_path = _engine_with_sidecar(tmp_path)
    sc.check_sidecar(engine, onnx_path, tensorrt_version="10.3.0", gpu=GPU)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("onnx", "stale, frame_encoder.onnx changed since the engine was built"),
        ("trt", "built with TensorRT 10.3.0, this machine has 10.4.0"),
        ("cc", r"built for compute capability 8.7 \(Orin\), this GPU is 8.9"),
        ("gpu", "built on Orin, this GPU is RTX 4090"),
        ("engine", "does not match its sidecar"),
        ("sidecar", "no sidecar frame_encoder.fp16.engine.json"),
        ("missing", "engine not found"),
    ],
)
def test_check_sidecar_detects_stale_engines(tmp_path: Path, change: str, message: str) -> None:
    engine, onnx_path = _engine_with_sidecar(tmp_path)
    version, gpu = "10.3.0", dict(GPU)
    if change == "onnx":
        onnx_path.write_bytes(b"re-exported onnx")
    elif change == "trt":
        version = "10.4.0"
    elif change == "cc":
        gpu = {"gpu": "Orin", "compute_capability": "8.9"}
    elif change == "gpu":
        gpu = {"gpu": "RTX 4090", "compute_capability": "8.7"}
    elif change == "engine":
        engine.write_bytes(b"another engine")
    elif change == "sidecar":
        layout.sidecar_path(engine).unlink()
    elif change == "missing":
        engine.unlink()
    with pytest.raises(CezsarError, match=message) as e:
        sc.check_sidecar(engine, onnx_path, tensorrt_version=version, gpu=gpu)
    assert "\n" not in str(e.value)
    if change not in ("sidecar",):
        assert "cezsar build-engine" in str(e.value)


def test_onnx_checks_per_tensorrt_version(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def model(opset: int, layernorm: bool) -> Path:
        nodes = [helper.make_node("Relu", ["x"], ["y"])]
        inits = []
        if layernorm:
            nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)]
            inits = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("g", "b")]
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
            inits,
        )
        p = tmp_path / f"m{opset}{layernorm}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(p))
        return p

    with pytest.raises(CezsarError, match="--opset 16"):
        tb._onnx_checks(TRT85, model(17, True))
    assert tb._onnx_checks(TRT85, model(16, False))["opset"] == 16
    assert tb._onnx_checks(TRT86, model(17, True))["opset"] == 17
    with pytest.raises(CezsarError, match="opset 19, TensorRT 8.6 parses opsets up to 17"):
        tb._onnx_checks(TRT86, model(19, False))
    assert tb._onnx_checks(TRT10, model(19, False)) == {"opset": 19, "fp16": False}


def test_fp16_onnx_conversion_stays_close(tmp_path: Path) -> None:
    """TensorRT 11 builds FP16 from an FP16 ONNX: float32 I/O, normalisation in FP32."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxconverter_common")
    import onnx

    from cezsar.backends.onnxruntime import ort_session
    from converter.common import cosine_distance
    from converter.export import export_onnx
    from training.model import TemporalHead

    torch.manual_seed(0)
    head = TemporalHead(32, 64, 16, heads=2, layers=1, dropout=0.0).eval()
    src, dst = tmp_path / "head.onnx", tmp_path / "head.fp16.onnx"
    export_onnx(head, (torch.randn(2, 4, 32),), src, 17, ["features"], "embedding", {"features": {0: "B"}})
    tb.to_fp16_onnx(src, dst)
    m = onnx.load(str(dst))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    x = np.random.default_rng(1).standard_normal((3, 4, 32)).astype(np.float32)
    a = ort_session(src, 1).run(None, {"features": x})[0]
    b = ort_session(dst, 1).run(None, {"features": x})[0]
    assert cosine_distance(a, b).max() < 1e-3


def test_compare_reports_worst_cosine_distance() -> None:
    from converter.check_engine import compare

    class Ref:
        def run(self, _: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [feeds["x"] * 2.0]

    cases = {"a": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)}
    ok = compare(lambda x: x * 2.0 + 1e-6, Ref(), "x", cases, 1e-3)
    assert ok["passed"] and ok["worst_cosine_distance"] < 1e-6
    bad = compare(lambda x: -x, Ref(), "x", cases, 1e-3)
    assert not bad["passed"] and bad["worst_cosine_distance"] == pytest.approx(2.0)


# -- without TensorRT -------------------------------------------------------------------------------

no_trt = pytest.mark.skipif(dt.tensorrt_module() is not None, reason="TensorRT is installed here")


@no_trt
@pytest.mark.parametrize("verb", ["build-engine", "check-engine"])
def test_cli_without_tensorrt_is_one_line(tmp_path: Path, verb: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cezsar", verb, str(tmp_path), "--precision", "fp16"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "TensorRT is not installed" in lines[0] and "JetPack" in lines[0]
    assert "cezsar[tensorrt-cu12]" in lines[0] and "cezsar[tensorrt-cu13]" in lines[0]


@no_trt
def test_backend_not_available_without_tensorrt() -> None:
    from cezsar.backends.registry import backends
    from cezsar.backends.tensorrt import TensorRTBackend

    assert backends()["tensorrt"] is TensorRTBackend
    ok, why = TensorRTBackend.available()
    assert not ok and why == "tensorrt not installed"
    with pytest.raises(CezsarError, match="TensorRT is not installed"):
        dt.require_tensorrt()


# -- with TensorRT and a GPU --------------------------------------------------------------------------


@pytest.fixture(scope="class")
def trt_deploy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    if not hasattr(trt, "Builder"):
        pytest.skip("the installed tensorrt package is the PyPI placeholder (no Builder)")
    from cezsar.backends.tensorrt import TensorRTBackend

    ok, why = TensorRTBackend.available()
    if not ok:
        pytest.skip(f"TensorRT backend unavailable: {why}")
    torch = pytest.importorskip("torch")
    from cezsar.preprocess import Preprocess
    from converter.export import export_video_parts
    from training.model import CezsarModel, ModelConfig

    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    CezsarModel(ModelConfig(frames=4, fps=4.0, preprocess=Preprocess(size=64, resize=72).to_dict())).save(root / "m")
    # the two video networks only: no text model (the MiniLM package) needed on the GPU machine
    export_video_parts(root / "m", root / "deploy", opset=17 if dt.trt_version(trt) >= (8, 6) else 16)
    return root / "deploy"


@pytest.mark.gpu
@pytest.mark.tensorrt
class TestWithTensorRT:
    def test_fp16_engines_build_load_and_match(self, trt_deploy: Path) -> None:
        from converter.check_engine import check_engines

        sides = tb.build_engines(trt_deploy, "fp16", workspace_mb=256, max_batch=16)
        assert {Path(s["engine"]).name for s in sides} == {"frame_encoder.fp16.engine", "temporal_head.fp16.engine"}
        assert layout.timing_cache_path(trt_deploy).is_file()
        report = check_engines(trt_deploy, "fp16", batch=8)
        assert report["passed"], report

    def test_stale_engine_refused_at_load(self, trt_deploy: Path, tmp_path: Path) -> None:
        import shutil

        from cezsar.backends.tensorrt import TensorRTBackend
        from cezsar.deploy.manifest import load_manifest

        d = tmp_path / "d"
        shutil.copytree(trt_deploy, d)
        tb.build_engines(d, "fp16", workspace_mb=256, max_batch=8, parts=["temporal_head"])
        with open(d / "temporal_head.onnx", "ab") as f:
            f.write(b"\0")  # any change to the ONNX makes the engine stale
        with pytest.raises(CezsarError, match="stale"):
            TensorRTBackend("fp16").load(d, load_manifest(d), "temporal_head")

    def test_int8_engines_from_qdq(self, trt_deploy: Path, tmp_path: Path) -> None:
        from cezsar.data.calibration import CalibrationSet
        from cezsar.deploy.manifest import load_manifest
        from converter.check_engine import check_engines
        from converter.common import synthetic_frames
        from converter.quantize import quantize_deploy

        m = load_manifest(trt_deploy)
        frames = m.pre(synthetic_frames(80, seed=3))
        CalibrationSet(frames, ["s"], np.zeros(80, np.int32), np.arange(80, dtype=np.float32), m.pre.to_dict()).save(
            tmp_path / "c.npz"
        )
        # the engine is under test, not the accuracy gate: TensorRT Q/DQ only, written even past the gate
        quantize_deploy(trt_deploy, tmp_path / "c.npz", measure_speed=False, target="tensorrt", force=True)
        tb.build_engines(trt_deploy, "int8", workspace_mb=256, max_batch=16)
        assert check_engines(trt_deploy, "int8", batch=8)["passed"]
