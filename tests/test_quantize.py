"""cezsar quantize: Q/DQ models that follow TensorRT's rules, the checker, the accuracy gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cezsar.deploy.manifest import load_manifest  # noqa: E402
from cezsar.errors import CezsarError  # noqa: E402
from cezsar.preprocess import Preprocess  # noqa: E402
from converter.qdq_check import check_trt_qdq  # noqa: E402

torch.set_num_threads(1)
PRE = Preprocess(size=32, resize=36)


@pytest.fixture(scope="module")
def deploy_and_calib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cezsar.data.calibration import CalibrationSet
    from converter.common import synthetic_frames
    from converter.export import export_model
    from training.model import CezsarModel, ModelConfig

    root = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    cfg = ModelConfig(frames=4, fps=4.0, d_model=64, preprocess=PRE.to_dict())
    CezsarModel(cfg).save(root / "model")
    export_model(root / "model", root / "deploy")
    frames = np.concatenate([synthetic_frames(40, 48, 64, seed=s) for s in range(3)])
    cal = CalibrationSet(
        frames=PRE(frames),
        sources=["a", "b", "c"],
        source_index=np.repeat(np.arange(3), 40).astype(np.int32),
        times=np.tile(np.arange(40) / 10.0, 3).astype(np.float32),
        preprocess=PRE.to_dict(),
    )
    cal.save(root / "calib.npz")
    return root / "deploy", root / "calib.npz"


@pytest.fixture()
def deploy(deploy_and_calib: tuple[Path, Path], tmp_path: Path) -> Path:
    """A fresh copy per test: quantization writes into the deploy folder."""
    d = tmp_path / "deploy"
    shutil.copytree(deploy_and_calib[0], d)
    return d


def test_quantize_writes_trt_friendly_qdq_models(deploy: Path, deploy_and_calib: tuple[Path, Path]) -> None:
    from cezsar.backends.onnxruntime import ort_session
    from converter.common import cosine_rows, synthetic_frames
    from converter.quantize import quantize_deploy

    report = quantize_deploy(deploy, deploy_and_calib[1], measure_speed=False, threads=1, int8_head=True)  # both
    assert report["passed"] and report["method"] in ("modelopt", "ort")
    assert report["target"] == "both" and report["cpu"]["passed"] and report["cpu"]["method"] == "ort-cpu"
    assert set(report["targets"]) == {"tensorrt", "cpu"} and all(t["written"] for t in report["targets"].values())
    assert 0.99 <= report["mean_cosine"] <= 1.0 and report["min_cosine"] <= report["mean_cosine"]
    assert report["holdout_frames"] == 24 and report["calibration_frames"] == 96
    m = load_manifest(deploy)
    assert m.extra["quantization"]["mean_cosine"] == report["mean_cosine"]
    assert m.extra["quantization"]["cpu"]["mean_cosine"] == report["cpu"]["mean_cosine"]
    assert {"frame_encoder.int8-cpu", "temporal_head.int8-cpu"} <= set(m.files)
    for part in ("frame_encoder", "temporal_head"):
        path = m.path(deploy, f"{part}.int8")
        summary = check_trt_qdq(path)
        assert summary["per_channel"] > 0 and summary["opset"] == m.opset
        assert report["parts"][part]["qdq"]["quantize_linear"] == summary["quantize_linear"]
        g = onnx.load(str(path)).graph
        ops = {n.op_type for n in g.node}
        assert "LayerNormalization" not in ops or part == "temporal_head"
        for n in g.node:  # LayerNorm and Softmax consume no dequantized tensors directly
            if n.op_type in ("LayerNormalization", "Softmax"):
                producers = {o: p.op_type for p in g.node for o in p.output}
                assert all(producers.get(i) != "DequantizeLinear" for i in n.input)
    # INT8 onnxruntime output is close to FP32 on inputs never calibrated on
    x = PRE(synthetic_frames(8, 48, 64, seed=42))
    f32 = ort_session(m.path(deploy, "frame_encoder"), 1).run(None, {"frames": x})[0]
    f8 = ort_session(m.path(deploy, "frame_encoder.int8"), 1).run(None, {"frames": x})[0]
    assert cosine_rows(f32, f8).mean() > 0.99
    w = np.stack([f32[:4], f32[4:]])
    e32 = ort_session(m.path(deploy, "temporal_head"), 1).run(None, {"features": w})[0]
    e8 = ort_session(m.path(deploy, "temporal_head.int8"), 1).run(None, {"features": w})[0]
    assert cosine_rows(e32, e8).min() > 0.98


def test_gate_refuses_and_force_writes(deploy: Path, deploy_and_calib: tuple[Path, Path]) -> None:
    from converter.quantize import quantize_deploy

    before = (deploy / "manifest.json").read_text()
    report = quantize_deploy(deploy, deploy_and_calib[1], min_cosine=1.01, measure_speed=False, threads=1)
    assert not report["passed"] and "mean cosine" in report["reason"]
    assert not report["cpu"]["passed"] and not any(t["written"] for t in report["targets"].values())
    assert (deploy / "manifest.json").read_text() == before
    assert not (deploy / "frame_encoder.int8.onnx").exists()
    report = quantize_deploy(
        deploy, deploy_and_calib[1], min_cosine=1.01, force=True, measure_speed=False, threads=1, target="tensorrt"
    )
    assert report["forced"] and (deploy / "frame_encoder.int8.onnx").exists()
    assert load_manifest(deploy).extra["quantization"]["passed"] is False


def test_onnxruntime_fallback_when_modelopt_fails(
    deploy: Path, deploy_and_calib: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import converter.quantize as q
    import converter.quantizers

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated ModelOpt failure")

    monkeypatch.setattr(converter.quantizers, "_modelopt", broken)
    report = q.quantize_deploy(deploy, deploy_and_calib[1], measure_speed=True, threads=1, target="tensorrt")
    assert report["method"] == "ort" and report["passed"]
    assert "simulated ModelOpt failure" in report["parts"]["frame_encoder"]["fallback_reason"]
    assert report["cpu_speed_frame_encoder"]["batch"] == 8
    for part in ("frame_encoder", "temporal_head"):
        check_trt_qdq(deploy / f"{part}.int8.onnx")


def test_top1_on_eval_folder(deploy: Path, deploy_and_calib: tuple[Path, Path], tmp_path: Path) -> None:
    from cezsar.data import synthset
    from converter.quantize import quantize_deploy

    world = tmp_path / "world"
    synthset.synthesize(world, train_clips_per_class=1, eval_clips_per_class=1)
    report = quantize_deploy(
        deploy, deploy_and_calib[1], eval_data=world, measure_speed=False, threads=1, target="tensorrt"
    )
    assert report["eval_classes"] == len(json.loads((world / "split.json").read_text())["testing"])
    assert 0.0 <= report["top1_fp32"] <= 1.0 and 0.0 <= report["top1_int8"] <= 1.0
    assert report["passed"] == (report["top1_fp32"] - report["top1_int8"] <= 0.02 + 1e-9)


def test_cli_json_and_refusal(deploy: Path, deploy_and_calib: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from cezsar.cli import app

    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(deploy_and_calib[1]), "--json",
                                   "--target", "tensorrt"])  # fmt: skip
    assert res.exit_code == 0, res.output
    start = res.stdout.index("{")
    report = json.loads(res.stdout[start:])
    for key in ("mean_cosine", "min_cosine", "top1_fp32", "top1_int8", "method", "passed"):
        assert key in report
    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(deploy / "missing.npz")])
    assert res.exit_code == 2 and "calibration file not found" in res.output


def test_cli_gate_refusal_is_one_line(
    deploy: Path, deploy_and_calib: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import converter.quantize as q
    from cezsar.cli import app

    real = q.quantize_deploy

    def strict(*args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs.update(min_cosine=1.01, measure_speed=False, threads=1, target="tensorrt")
        return real(*args, **kwargs)

    monkeypatch.setattr(q, "quantize_deploy", strict)
    before = (deploy / "manifest.json").read_text()
    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(deploy_and_calib[1]), "--json"])
    assert res.exit_code == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "INT8 models not written" in errors[0]
    assert json.loads(res.stdout[res.stdout.index("{") :])["passed"] is False
    assert (deploy / "manifest.json").read_text() == before and not (deploy / "temporal_head.int8.onnx").exists()


def test_cpu_target_writes_cpu_models_that_the_cpu_backend_runs(
    deploy: Path, deploy_and_calib: tuple[Path, Path]
) -> None:
    from typer.testing import CliRunner

    from cezsar.backends.onnxruntime import OnnxRuntimeBackend
    from cezsar.cli import app
    from cezsar.deploy.layout import onnx_file
    from converter.common import cosine_rows, synthetic_frames

    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(deploy_and_calib[1]), "--json",
                                   "--target", "cpu", "--int8-head"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    cpu = report["cpu"]
    assert report["target"] == "cpu" and set(report["targets"]) == {"cpu"} and report["targets"]["cpu"]["written"]
    assert cpu["passed"] and 0.99 <= cpu["mean_cosine"] <= 1.0 and cpu["min_cosine"] <= cpu["mean_cosine"]
    assert cpu["top1_fp32"] is None and cpu["trt_rules_checked"] is False and cpu["holdout_frames"] == 24
    for key in ("mean_cosine", "min_cosine", "top1_fp32", "top1_int8", "method", "passed"):  # mirrored at the top
        assert report[key] == cpu[key]
    assert not (deploy / "frame_encoder.int8.onnx").exists()  # the TensorRT target did not run
    m = load_manifest(deploy)
    assert m.files["frame_encoder.int8-cpu"] == "frame_encoder.int8-cpu.onnx"
    assert m.files["temporal_head.int8-cpu"] == "temporal_head.int8-cpu.onnx"
    assert m.extra["quantization"]["cpu"]["mean_cosine"] == cpu["mean_cosine"]
    # laid out for onnxruntime's CPU kernels: uint8 activations (the TensorRT rules forbid them)
    g = onnx.load(str(deploy / "frame_encoder.int8-cpu.onnx")).graph
    zps = {t.name: t.data_type for t in g.initializer}
    q_types = {zps.get(n.input[2]) for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) == 3}
    assert TensorProto.UINT8 in q_types
    with pytest.raises(CezsarError, match="INT8"):  # int32 bias, uint8 activations: not for TensorRT
        check_trt_qdq(deploy / "frame_encoder.int8-cpu.onnx")

    # the CPU backend runs the CPU file for int8; CUDA/TensorRT would want the TensorRT one
    assert onnx_file(deploy, m, "frame_encoder", "int8", "cpu").name == "frame_encoder.int8-cpu.onnx"
    with pytest.raises(CezsarError, match="frame_encoder.int8.onnx"):
        onnx_file(deploy, m, "frame_encoder", "int8", "cuda")
    x = PRE(synthetic_frames(8, 48, 64, seed=42))
    b32, b8 = OnnxRuntimeBackend("fp32", "cpu", threads=1), OnnxRuntimeBackend("int8", "cpu", threads=1)
    f32, f8 = b32.load(deploy, m, "frame_encoder")(x), b8.load(deploy, m, "frame_encoder")(x)
    assert cosine_rows(f32, f8).mean() > 0.98
    w = np.stack([f32[:4], f32[4:]])
    e32, e8 = b32.load(deploy, m, "temporal_head")(w), b8.load(deploy, m, "temporal_head")(w)
    assert cosine_rows(e32, e8).min() > 0.98

    # a later TensorRT-only run keeps the CPU report and files
    report2 = quantize_deploy_tensorrt(deploy, deploy_and_calib[1])
    q = load_manifest(deploy).extra["quantization"]
    assert q["mean_cosine"] == report2["mean_cosine"] and q["cpu"]["mean_cosine"] == cpu["mean_cosine"]
    assert "frame_encoder.int8-cpu" in load_manifest(deploy).files


def quantize_deploy_tensorrt(deploy: Path, calib: Path) -> dict[str, Any]:
    from converter.quantize import quantize_deploy

    return quantize_deploy(deploy, calib, measure_speed=False, threads=1, target="tensorrt")


def test_unknown_target_refused(deploy: Path, deploy_and_calib: tuple[Path, Path]) -> None:
    from converter.quantize import quantize_deploy

    with pytest.raises(CezsarError, match="--target gpu: choose one of tensorrt, cpu, both"):
        quantize_deploy(deploy, deploy_and_calib[1], target="gpu")


def test_wrong_size_calibration_refused(deploy: Path, tmp_path: Path) -> None:
    from converter.quantize import quantize_deploy

    bad = tmp_path / "bad.npz"
    np.savez(bad, frames=np.zeros((64, 3, 40, 40), np.float32))
    with pytest.raises(CezsarError, match="40x40, the model takes 32x32"):
        quantize_deploy(deploy, bad)


# -- the TensorRT rules checker on hand-made graphs ----------------------------------------------


def _qdq_model(
    zp_dtype: int = TensorProto.INT8,
    zp_value: int = 0,
    act_scale: list[float] | None = None,
    dynamic: bool = False,
    dangling_q: bool = False,
    no_zp: bool = False,
) -> Any:
    """x -> Q -> DQ -> Conv(W) ; W per-channel through Q/DQ. Knobs break one rule each."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.full(4, 0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.asarray(act_scale or 0.05, np.float32), "x_scale"),
        helper.make_tensor("x_zp", zp_dtype, [], [zp_value]),
    ]
    nodes = []
    if dynamic:
        nodes.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dyn_quant"))
        nodes.append(helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="x_dq"))
    else:
        q_in = ["x", "x_scale"] if no_zp else ["x", "x_scale", "x_zp"]
        nodes.append(helper.make_node("QuantizeLinear", q_in, ["xq"], name="x_q", axis=1))
        nodes.append(helper.make_node("DequantizeLinear", ["xq", *q_in[1:]], ["xd"], name="x_dq", axis=1))
    nodes.append(helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zp"], ["Wq"], name="w_q", axis=0))
    nodes.append(helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["Wd"], name="w_dq", axis=0))
    nodes.append(helper.make_node("Conv", ["xd", "Wd"], ["y"], name="conv", pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    if dangling_q:
        nodes.append(helper.make_node("QuantizeLinear", ["y", "x_scale", "x_zp"], ["yq"], name="dangling_q"))
        outputs.append(helper.make_tensor_value_info("yq", zp_dtype, [1, 4, 8, 8]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_checker_accepts_a_good_graph() -> None:
    s = check_trt_qdq(_qdq_model())
    assert s["quantize_linear"] == 2 and s["per_channel"] == 2 and s["quantized_inputs_of"] == {"Conv": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"zp_dtype": TensorProto.UINT8}, r"node x_q: UINT8 quantization"),
        ({"zp_value": 3}, r"node x_q: nonzero zero point \[3\]"),
        ({"dynamic": True}, r"node dyn_quant: DynamicQuantizeLinear"),
        ({"act_scale": [0.1, 0.2, 0.3]}, r"node x_q: per-channel scales on activation 'x'"),
        ({"dangling_q": True}, r"node dangling_q: QuantizeLinear must feed DequantizeLinear only"),
        ({"no_zp": True}, r"node x_q: no zero point, which makes it UINT8"),
    ],
)
def test_checker_rejects_bad_graphs(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CezsarError, match=message):
        check_trt_qdq(_qdq_model(**kwargs))


def test_checker_rejects_float_model(deploy_and_calib: tuple[Path, Path]) -> None:
    with pytest.raises(CezsarError, match="not a Q/DQ model"):
        check_trt_qdq(deploy_and_calib[0] / "frame_encoder.onnx")


def test_high_precision_is_fp16_only_where_the_opset_allows_fp16_qdq(tmp_path: Path) -> None:
    """FP16 between the Q/DQ pairs (ModelOpt's guidance for strongly typed TensorRT) needs a float16
    DequantizeLinear, opset 19; a deploy folder at opset 17 (TensorRT 8.6) keeps FP32 there."""
    import onnx
    from onnx import TensorProto, helper

    from converter.quantizers import high_precision_for

    def model(opset: int) -> Path:
        g = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        )
        p = tmp_path / f"m{opset}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(p))
        return p

    assert high_precision_for(model(17)) == "fp32"
    assert high_precision_for(model(19)) == "fp16"
    assert high_precision_for(model(20)) == "fp16"


def test_modelopt_at_opset_19_keeps_fp16_between_qdq_and_float32_io(tmp_path: Path) -> None:
    """At opset 19 ModelOpt's high precision is FP16 (what a strongly typed TensorRT network then runs),
    the inputs and outputs stay float32, and the model still passes TensorRT's Q/DQ rules."""
    pytest.importorskip("modelopt.onnx.quantization")
    import onnx

    from cezsar.backends.onnxruntime import ort_session
    from converter.common import cosine_distance
    from converter.export import export_onnx
    from converter.quantizers import quantize_onnx
    from training.model import TemporalHead

    torch.manual_seed(0)
    head = TemporalHead(32, 64, 16, heads=2, layers=1, dropout=0.0).eval()
    src, dst = tmp_path / "head.onnx", tmp_path / "head.int8.onnx"
    export_onnx(head, (torch.randn(2, 4, 32),), src, 19, ["features"], "embedding", {"features": {0: "B"}})
    data = np.random.default_rng(0).standard_normal((64, 4, 32)).astype(np.float32)
    res = quantize_onnx(src, dst, "features", data, "modelopt", 19, 16)
    assert res["method"] == "modelopt" and res["opset"] == 19
    m = onnx.load(str(dst))
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer) > 0
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    check_trt_qdq(dst)
    x = data[:8]
    a = ort_session(src).run(None, {"features": x})[0]
    b = ort_session(dst).run(None, {"features": x})[0]
    assert cosine_distance(a, b).max() < 1e-2


# -- the CPU path on a model trained here: INT8 head kept in FP32 when it fails the gate -------------


@pytest.fixture(scope="module")
def trained_deploy_and_calib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained for 3 epochs on a small synthetic world, exported, with calibration frames
    cut from the world's evaluation videos."""
    from cezsar.data.calibration import CalibrationSet
    from cezsar.data.formats import read_eval_set
    from cezsar.data.synthset import synthesize
    from cezsar.video import sample_clip
    from converter.export import export_model
    from training.recipe import TrainConfig, model_config
    from training.train import train

    root = tmp_path_factory.mktemp("qtrained")
    synthesize(root / "world", seed=1, train_clips_per_class=2, eval_clips_per_class=1)
    model = model_config(frames=4, fps=2.0, image_size=32, resize=32, d_model=64)
    cfg = TrainConfig(model=model, epochs=3, lr=1e-3, threads=1)
    train(root / "world", root / "model", cfg, progress=False)
    export_model(root / "model", root / "deploy")
    pre = Preprocess(size=32, resize=32)
    videos = read_eval_set(root / "world").videos[:12]
    frames = np.concatenate([pre(sample_clip(v.path, 4.0, 12, v.start, v.end)) for v in videos])
    cal = CalibrationSet(
        frames=frames,
        sources=[str(v.path) for v in videos],
        source_index=np.repeat(np.arange(len(videos)), 12).astype(np.int32),
        times=np.tile(np.arange(12) / 4.0, len(videos)).astype(np.float32),
        preprocess=pre.to_dict(),
    )
    cal.save(root / "calib.npz")
    return root / "deploy", root / "calib.npz"


def test_cpu_int8_head_failing_the_gate_stays_fp32(
    trained_deploy_and_calib: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import converter.quantize as q
    from cezsar.cli import app
    from cezsar.deploy.layout import onnx_file

    deploy = tmp_path / "deploy"
    shutil.copytree(trained_deploy_and_calib[0], deploy)
    calib = trained_deploy_and_calib[1]
    before = (deploy / "manifest.json").read_text()

    # case 1: a gate nothing passes -> nothing written, exit status 1, the summary says why
    real = q.quantize_deploy
    gate: dict[str, Any] = {"min_cosine": 1.01, "int8_head": True}

    def gated(*args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs.update(measure_speed=False, threads=1, target="cpu", **gate)
        return real(*args, **kwargs)

    monkeypatch.setattr(q, "quantize_deploy", gated)
    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(calib), "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["exit_code"] == 1 and not report["targets"]["cpu"]["written"]
    assert report["summary"] == [f"cpu: refused, nothing written ({report['cpu']['reason']})"]
    assert "cpu: refused, nothing written" in res.stderr
    assert (deploy / "manifest.json").read_text() == before and not (deploy / "frame_encoder.int8-cpu.onnx").exists()

    # INT8 frame encoder + FP32 head is closer to FP32 than both parts in INT8
    full, fe_only = report["cpu"]["mean_cosine"], report["cpu"]["fp32_head"]["mean_cosine"]
    assert full < fe_only <= 1.0 + 1e-6, (full, fe_only)

    # case 2: a gate between the two -> the INT8 head is refused, kept in FP32; a usable deployment, exit 0
    gate["min_cosine"] = (full + fe_only) / 2
    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(calib), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    cpu = report["cpu"]
    assert cpu["passed"] and cpu["head_precision"] == "fp32" and cpu["mean_cosine"] == fe_only
    assert cpu["int8_head"]["mean_cosine"] == full and "INT8 head refused" in cpu["reason"]
    assert report["targets"]["cpu"]["files"] == ["frame_encoder.int8-cpu.onnx"] and report["exit_code"] == 0
    assert "temporal head kept in FP32" in res.stderr and "error:" not in res.stderr
    assert (deploy / "frame_encoder.int8-cpu.onnx").is_file() and not (deploy / "temporal_head.int8-cpu.onnx").exists()
    m = load_manifest(deploy)
    assert m.files["temporal_head.int8-cpu"] == m.files["temporal_head"]
    assert m.extra["quantization"]["cpu"]["head_precision"] == "fp32"
    # the CPU backend at --precision int8 runs the INT8 frame encoder and the FP32 head
    assert onnx_file(deploy, m, "frame_encoder", "int8", "cpu").name == "frame_encoder.int8-cpu.onnx"
    assert onnx_file(deploy, m, "temporal_head", "int8", "cpu") == onnx_file(deploy, m, "temporal_head", "fp32", "cpu")

    # case 3: the default (no --int8-head): the head stays FP32 even where the INT8 head would pass the gate
    gate.update(min_cosine=0.99, int8_head=False)
    res = CliRunner().invoke(app, ["quantize", str(deploy), "--calib", str(calib), "--json"])
    assert res.exit_code == 0, res.output
    cpu = json.loads(res.stdout[res.stdout.index("{") :])["cpu"]
    assert cpu["passed"] and cpu["head_precision"] == "fp32" and cpu["mean_cosine"] == cpu["fp32_head"]["mean_cosine"]
    assert "not asked for (--int8-head); its own gate: within the gate" in cpu["int8_head"]["reason"]
    assert not (deploy / "temporal_head.int8-cpu.onnx").exists()
    assert load_manifest(deploy).files["temporal_head.int8-cpu"] == m.files["temporal_head"]
