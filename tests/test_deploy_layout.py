"""cezsar.deploy.layout: the one module that names the files of a deploy folder; the backends' answers to
"which file serves (part, precision, device)" come from those names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest, file_sha256, load_manifest, save_manifest
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
CODE = ("cezsar", "converter", "edge", "calibration", "training", "scripts")
# file-name literals of a deploy folder: only cezsar/deploy may spell them
LITERALS = re.compile(
    r"manifest\.json|tokenizer\.json|int8-cpu|\.int8\.onnx|\b(?:frame_encoder|temporal_head|text_encoder)\.onnx"
    r"|\}\.engine|\.(?:fp16|int8|fp32)\.engine|\.engine\.json|tensorrt\.timing-cache|ort-tensorrt-cache"
)


def test_no_second_place_names_the_deploy_files() -> None:
    offenders = []
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.is_relative_to(ROOT / "cezsar" / "deploy"):
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if LITERALS.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_names() -> None:
    assert layout.manifest_path("/d") == Path("/d/manifest.json")
    assert layout.onnx_name("text_encoder") == "text_encoder.onnx"
    assert layout.export_files() == {
        "frame_encoder": "frame_encoder.onnx",
        "temporal_head": "temporal_head.onnx",
        "text_encoder": "text_encoder.onnx",
        "tokenizer": "tokenizer.json",
        "model_dir": "model",
    }
    assert layout.export_files(layout.VIDEO_PARTS) == {
        "frame_encoder": "frame_encoder.onnx",
        "temporal_head": "temporal_head.onnx",
        "model_dir": "model",
    }
    assert layout.int8_key("frame_encoder") == "frame_encoder.int8"
    assert layout.int8_name("temporal_head", "cpu") == "temporal_head.int8-cpu.onnx"
    assert layout.int8_name("*", "tensorrt") == "*.int8.onnx"
    e = layout.engine_path("/d", "temporal_head", "int8")
    assert e == Path("/d/temporal_head.int8.engine") and layout.engine_precision(e) == "int8"
    assert layout.sidecar_path(e) == Path("/d/temporal_head.int8.engine.json")
    assert layout.timing_cache_path("/d") == Path("/d/tensorrt.timing-cache")
    with pytest.raises(CezsarError, match="unknown part 'text_encoder'"):
        layout.engine_path("/d", "text_encoder", "fp16")
    with pytest.raises(CezsarError, match="--precision int4"):
        layout.engine_path("/d", "frame_encoder", "int4")
    with pytest.raises(CezsarError, match="--target gpu"):
        layout.int8_key("frame_encoder", "gpu")


def _deploy(tmp_path: Path) -> tuple[Path, Manifest]:
    d = tmp_path / "deploy"
    d.mkdir()
    files = layout.export_files()
    for key, rel in files.items():
        if key == layout.MODEL_DIR:
            (d / rel).mkdir()
        else:
            (d / rel).write_bytes(key.encode())
    sums = {rel: file_sha256(d / rel) for rel in files.values() if (d / rel).is_file()}
    m = Manifest("0" * 64, 17, Preprocess(size=32, resize=36).to_dict(), 4.0, 4, 8, 8, files=files, sha256=sums)
    save_manifest(d, m)
    return d, load_manifest(d)


def test_which_file_serves_part_precision_device(tmp_path: Path) -> None:
    """Each backend declares its files (Backend.serving_file); the names come from the layout."""
    from cezsar.backends.onnxruntime import OnnxRuntimeBackend
    from cezsar.backends.tensorrt import TensorRTBackend
    from cezsar.backends.torch import TorchBackend

    d, m = _deploy(tmp_path)
    fe = "frame_encoder"

    def ort(precision: str, device: str) -> Path:
        return OnnxRuntimeBackend(precision, device).serving_file(d, m, fe)

    for device in ("cpu", "cuda", "tensorrt"):
        assert ort("fp32", device) == d / "frame_encoder.onnx"
    assert ort("fp16", "tensorrt") == d / "frame_encoder.onnx"
    assert TorchBackend("fp32", "cpu").serving_file(d, m, fe) == d / "model"
    assert TorchBackend("fp32", "cpu").serving_files(d, m) == {part: d / "model" for part in layout.VIDEO_PARTS}
    with pytest.raises(CezsarError, match=r"--precision int8 needs frame_encoder\.int8\.onnx or, faster on the CPU"):
        ort("int8", "cpu")
    with pytest.raises(CezsarError, match=r"frame_encoder\.fp16\.engine: no fp16 engine; build it with"):
        TensorRTBackend("fp16", "cuda").serving_file(d, m, fe)
    with pytest.raises(CezsarError, match=r"no frame_encoder\.int8\.onnx; run `cezsar quantize"):
        layout.engine_source(d, m, fe, "int8")
    assert layout.engine_source(d, m, fe, "fp16") == d / "frame_encoder.onnx"

    (d / "frame_encoder.int8.onnx").write_bytes(b"qdq")  # the TensorRT Q/DQ model: CPU falls back to it
    assert ort("int8", "cpu").name == "frame_encoder.int8.onnx"
    (d / "frame_encoder.int8-cpu.onnx").write_bytes(b"cpu")  # the CPU layout wins on the CPU only
    assert ort("int8", "cpu").name == "frame_encoder.int8-cpu.onnx"
    assert layout.is_cpu_int8(d / "frame_encoder.int8-cpu.onnx") and not layout.is_cpu_int8(d / "x.int8.onnx")
    assert ort("int8", "cuda").name == "frame_encoder.int8.onnx"
    engine = layout.engine_path(d, fe, "int8")
    engine.write_bytes(b"plan")
    assert TensorRTBackend("int8", "cuda").serving_file(d, m, fe) == engine == layout.engine_file(d, fe, "int8")


def test_listed_files_are_verified(tmp_path: Path) -> None:
    d, m = _deploy(tmp_path)
    m.files["frame_encoder.int8"] = "frame_encoder.int8.onnx"
    (d / "frame_encoder.int8.onnx").write_bytes(b"qdq")
    m.sha256["frame_encoder.int8.onnx"] = file_sha256(d / "frame_encoder.int8.onnx")
    assert layout.onnx_file(d, m, "frame_encoder", "int8", "cuda").name == "frame_encoder.int8.onnx"
    (d / "frame_encoder.int8.onnx").write_bytes(b"another model")
    with pytest.raises(CezsarError, match="does not match manifest.json"):
        layout.onnx_file(d, m, "frame_encoder", "int8", "cuda")
    (d / "temporal_head.onnx").write_bytes(b"changed")
    with pytest.raises(CezsarError, match=r"temporal_head\.onnx: does not match manifest\.json"):
        layout.onnx_file(d, m, "temporal_head", "fp32", "cpu")
    (d / "model").rmdir()
    with pytest.raises(CezsarError, match="missing from the deploy folder"):
        layout.model_folder(d, m)
