"""cezsar export: ONNX parity with PyTorch, the manifest, the tokenizer, atomic failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cezsar.deploy.manifest import load_manifest  # noqa: E402
from cezsar.errors import CezsarError  # noqa: E402
from cezsar.preprocess import Preprocess  # noqa: E402

torch.set_num_threads(1)


def make_model_dir(
    path: Path, frames: int = 4, seed: int = 0, text_input: str = "pooled", temporal: str = "joint"
) -> Path:
    from training.model import CezsarModel, ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(frames=frames, fps=4.0, d_model=64, preprocess=Preprocess(size=32, resize=36).to_dict(),
                      text_input=text_input, text_token_dropout=0.3 if text_input == "tokens" else 0.0,
                      temporal=temporal)  # fmt: skip
    CezsarModel(cfg).save(path)
    return path


# both text heads: the sentence-embedding projection (the paper's, older models) and the per-token head;
# both temporal heads (the joint one of older models, the factored one the default recipe trains)
@pytest.fixture(scope="module", params=["pooled", "tokens", "tokens-factored"])
def exported(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    from converter.export import export_model

    root = tmp_path_factory.mktemp("export")
    text_input, _, temporal = request.param.partition("-")
    model_dir = make_model_dir(root / "model", text_input=text_input, temporal=temporal or "joint")
    export_model(model_dir, root / "deploy")
    return model_dir, root / "deploy"


def test_manifest_written_and_loadable(exported: tuple[Path, Path]) -> None:
    from cezsar.deploy.manifest import file_sha256

    model_dir, deploy = exported
    m = load_manifest(deploy)
    assert m.opset == 17 and m.window == 4 and m.fps == 4.0
    assert m.pre == Preprocess(size=32, resize=36)
    assert m.model_hash == file_sha256(model_dir / "model.safetensors")
    for key in ("frame_encoder", "temporal_head", "text_encoder", "tokenizer", "model_dir"):
        assert m.path(deploy, key).exists()
    for rel, digest in m.sha256.items():
        assert file_sha256(deploy / rel) == digest
    assert (deploy / "model" / "config.json").is_file()
    for part in ("frame_encoder", "temporal_head", "text_encoder"):
        assert m.extra["parity"][part]["worst_cosine_distance"] < 1e-4
    assert m.extra["text"]["padding"] == "longest" and m.text_max_length == 256


def test_onnx_matches_torch(exported: tuple[Path, Path]) -> None:
    from cezsar.backends.onnxruntime import ort_session
    from converter.common import cosine_distance
    from training.model import CezsarModel

    model_dir, deploy = exported
    model = CezsarModel.load(model_dir)
    rng = np.random.default_rng(5)
    frames = rng.standard_normal((7, 3, 32, 32)).astype(np.float32)  # a batch size not seen at export
    feats = ort_session(deploy / "frame_encoder.onnx", threads=1).run(None, {"frames": frames})[0]
    with torch.no_grad():
        ref = model.frame_encoder(torch.from_numpy(frames)).numpy()
    assert feats.shape == (7, model.config.feature_dim)
    assert cosine_distance(ref, feats).max() < 1e-5
    win = np.stack([feats[:4], feats[3:7]])
    emb = ort_session(deploy / "temporal_head.onnx", threads=1).run(None, {"features": win})[0]
    with torch.no_grad():
        ref_emb = model.temporal_head(torch.from_numpy(win)).numpy()
    assert emb.shape == (2, model.config.joint_dim)
    assert cosine_distance(ref_emb, emb).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_text_encoder_with_tokenizer_json_matches_training_path(exported: tuple[Path, Path]) -> None:
    """tokenizer.json + text_encoder.onnx (no torch at the edge) == SentenceEncoder + TextHead."""
    from cezsar.backends.onnxruntime import ort_session
    from cezsar.tokenize import SentenceTokenizer
    from converter.common import cosine_distance
    from training.model import CezsarModel, SentenceEncoder

    model_dir, deploy = exported
    model = CezsarModel.load(model_dir)
    sentences = ["a man is juggling three balls", "Waving.", "people clap their hands in a crowded stadium"]
    with torch.no_grad():
        ref = model.encode_text(SentenceEncoder.for_config(model.config).encode(sentences)).numpy()
    got = ort_session(deploy / "text_encoder.onnx", threads=1).run(
        None, SentenceTokenizer(deploy / "tokenizer.json")(sentences)
    )[0]
    assert cosine_distance(ref, got).max() < 1e-5


def test_failed_export_leaves_existing_deploy_dir_intact(exported: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from converter.export import export_model

    model_dir, deploy = exported
    target = tmp_path / "deploy"
    shutil.copytree(deploy, target)
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    manifest_before = (target / "manifest.json").read_text()
    with pytest.raises(CezsarError, match="parity lost"):
        export_model(model_dir, target, parity_tol=-1.0)  # impossible tolerance: the check fails
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert (target / "manifest.json").read_text() == manifest_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".deploy")]  # no temp folder left


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    from converter.export import export_model

    with pytest.raises(CezsarError, match="model folder not found"):
        export_model(tmp_path / "nope", tmp_path / "out")
    model_dir = make_model_dir(tmp_path / "m")
    with pytest.raises(CezsarError, match="--opset 9"):
        export_model(model_dir, tmp_path / "out", opset=9)
    with pytest.raises(CezsarError, match="must not be the model folder"):
        export_model(model_dir, model_dir / "deploy")
    assert not (tmp_path / "out").exists()


def test_cli_export_prints_parity(exported: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cezsar.cli import app

    model_dir, _ = exported
    res = CliRunner().invoke(app, ["export", str(model_dir), "--out", str(tmp_path / "d"), "--opset", "16"])
    assert res.exit_code == 0, res.output
    assert "frame_encoder" in res.output and "worst cosine distance" in res.output
    raw = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert raw["opset"] == 16 and raw["format"] == "cezsar-deploy"


def test_export_video_parts_writes_the_two_video_networks_only(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public export of the video path (engines, quantization, benchmarks): same exporter and
    parity check, a manifest of the two networks, and no text model loaded."""
    import training.model as tm
    from cezsar.backends.onnxruntime import ort_session
    from converter.export import export_video_parts

    def no_text_model(*_: object, **__: object) -> None:
        raise AssertionError("the text model was loaded")

    monkeypatch.setattr(tm, "load_sentence_model", no_text_model)
    model_dir, full = exported
    m = export_video_parts(model_dir, tmp_path / "v")
    assert m == load_manifest(tmp_path / "v")
    assert set(m.files) == {"frame_encoder", "temporal_head", "model_dir"} and m.extra["video_only"] is True
    assert set(m.extra["shapes"]) == {"frame_encoder", "temporal_head"}
    for part in ("frame_encoder", "temporal_head"):
        assert m.extra["parity"][part]["worst_cosine_distance"] < 1e-4
    assert not (tmp_path / "v" / "text_encoder.onnx").exists() and not (tmp_path / "v" / "tokenizer.json").exists()
    frames = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    a = ort_session(m.path(tmp_path / "v", "frame_encoder"), 1).run(None, {"frames": frames})[0]
    b = ort_session(full / "frame_encoder.onnx", 1).run(None, {"frames": frames})[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
