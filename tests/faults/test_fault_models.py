"""Broken deploy folders: a missing file, an ONNX from another model, a stale or foreign TensorRT
engine, a corrupt manifest. `cezsar run` (subprocess) refuses them at start with a clear one-line
error (exit 2) before it binds anything, or runs on ``--fallback-backend`` when the user allowed it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cezsar.deploy.sidecar import SIDECAR_FORMAT
from tests.helpers.net import free_port
from tests.helpers.procs import ROOT, actions_yaml


def deploy_copy(src: Path, dst: Path) -> Path:
    """A deploy folder whose files are symlinks to ``src`` (cheap), manifest.json copied; replace a
    file by unlinking it first (never write through a link)."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name == "manifest.json":
            shutil.copy(p, dst / p.name)
        else:
            (dst / p.name).symlink_to(p.resolve())
    return dst


def cezsar_run(deploy: Path, tmp: Path, video: Path, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess:
    actions = tmp / "actions.yaml"
    actions.write_text(actions_yaml(["moving"]))
    cmd = [sys.executable, "-m", "cezsar", "run", "--deploy", str(deploy), "--source", f"v={video}"]
    cmd += ["--actions", str(actions), "--pub", f"tcp://127.0.0.1:{free_port()}", "--control", "none"]
    cmd += ["--no-realtime", *extra]
    env = {**os.environ, "CEZSAR_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "publish:" not in r.stderr  # refused before the sockets were bound
    return errors[0]


def test_missing_file_and_corrupt_manifest(tmp_path: Path, deploy: Path, short_video: Path) -> None:
    d = deploy_copy(deploy, tmp_path / "d")
    (d / "temporal_head.onnx").unlink()
    msg = one_line_error(cezsar_run(d, tmp_path, short_video, "--backend", "onnxruntime"))
    assert "temporal_head.onnx: missing from the deploy folder" in msg
    (d / "tokenizer.json").unlink()
    (d / "temporal_head.onnx").symlink_to((deploy / "temporal_head.onnx").resolve())
    assert "tokenizer.json: missing" in one_line_error(cezsar_run(d, tmp_path, short_video))
    (d / "manifest.json").write_text('{"format": "cezsar-deploy", "version": 1, "model_hash": ')
    assert "manifest.json: invalid JSON" in one_line_error(cezsar_run(d, tmp_path, short_video))


def test_onnx_from_another_model_is_refused_or_falls_back(tmp_path: Path, deploy: Path, short_video: Path) -> None:
    """frame_encoder.onnx replaced by another network's file (its sha256 no longer matches the manifest):
    a clear error; with ``--fallback-backend torch-cpu`` the runtime runs on the model weights instead."""
    d = deploy_copy(deploy, tmp_path / "d")
    (d / "frame_encoder.onnx").unlink()
    shutil.copy(deploy / "temporal_head.onnx", d / "frame_encoder.onnx")
    msg = one_line_error(cezsar_run(d, tmp_path, short_video, "--backend", "onnxruntime-cpu"))
    assert "frame_encoder.onnx: does not match manifest.json" in msg and "another model" in msg
    pytest.importorskip("torch")
    r = cezsar_run(d, tmp_path, short_video, "--backend", "onnxruntime-cpu", "--fallback-backend", "torch-cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "using --fallback-backend torch-cpu" in r.stderr
    assert "backend: torch (fp32, cpu) - fallback: --backend onnxruntime-cpu failed" in r.stderr
    assert "stopped (finished)" in r.stderr


def _engine(d: Path, model_hash: str, onnx_sha: str) -> None:
    engine = d / "frame_encoder.fp16.engine"
    engine.write_bytes(b"not really an engine")
    side = {"format": SIDECAR_FORMAT, "model_hash": model_hash, "onnx_sha256": onnx_sha, "precision": "fp16"}
    (d / "frame_encoder.fp16.engine.json").write_text(json.dumps(side))


def test_stale_or_foreign_engine_is_refused_or_falls_back(tmp_path: Path, deploy: Path, short_video: Path) -> None:
    """An engine built from another ONNX (stale) or for another model (foreign): refused with what to
    do; with ``--fallback-backend onnxruntime-cpu`` the runtime runs on onnxruntime."""
    from cezsar.deploy.manifest import file_sha256, load_manifest

    m = load_manifest(deploy)
    d = deploy_copy(deploy, tmp_path / "d")
    _engine(d, m.model_hash, "0" * 64)
    msg = one_line_error(cezsar_run(d, tmp_path, short_video, "--backend", "tensorrt", "--precision", "fp16"))
    assert "frame_encoder.fp16.engine: stale" in msg and "cezsar build-engine" in msg
    _engine(d, "f" * 64, file_sha256(deploy / "frame_encoder.onnx"))
    msg = one_line_error(cezsar_run(d, tmp_path, short_video, "--backend", "tensorrt", "--precision", "fp16"))
    assert "built for another model" in msg
    r = cezsar_run(
        d,
        tmp_path,
        short_video,
        "--backend",
        "tensorrt",
        "--precision",
        "fp16",
        "--fallback-backend",
        "onnxruntime-cpu",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "backend: onnxruntime (fp32, cpu) - fallback: --backend tensorrt failed" in r.stderr
    assert "built for another model" in r.stderr  # the reason is in the log
