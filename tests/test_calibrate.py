"""cezsar calibrate: frames spread over time and files, runtime preprocessing, clear refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from calibration.calibrate import _share, build_calibration_set
from cezsar.data.calibration import load_calibration
from cezsar.deploy.manifest import Manifest, save_manifest
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from cezsar.video import write_video
from converter.common import synthetic_frames

PRE = Preprocess(size=32, resize=36)


@pytest.fixture()
def deploy(tmp_path: Path) -> Path:
    """A manifest is all calibration reads from a deploy folder."""
    m = Manifest(
        model_hash="ab" * 32, opset=17, preprocess=PRE.to_dict(), fps=4.0, window=4, feature_dim=8, joint_dim=8
    )
    save_manifest(tmp_path / "deploy", m)
    return tmp_path / "deploy"


def _video(path: Path, n: int, seed: int) -> Path:
    frames = synthetic_frames(n, height=48, width=64, seed=seed)
    for i, f in enumerate(frames):  # stamp the frame number so that samples can be told apart
        f[:4, :4] = i
    write_video(path, frames, fps=10.0)
    return path


def test_single_video_uniform_over_duration(deploy: Path, tmp_path: Path) -> None:
    src = _video(tmp_path / "a.mp4", 80, seed=1)
    out = tmp_path / "calib.npz"
    cal = build_calibration_set(src, out, deploy_dir=deploy, frames=40, min_frames=8)
    assert cal.frames.shape == (40, 3, 32, 32) and cal.frames.dtype == np.float32
    assert cal.times.min() < 0.3 and cal.times.max() > 7.5  # spread over the 8 s, not the first 40 frames
    loaded = load_calibration(out, PRE, model_hash="ab" * 32)
    assert loaded.frames.shape == (40, 3, 32, 32)
    assert loaded.sources == [str(src)]
    assert loaded.preprocess["size"] == 32 and loaded.model_hash == "ab" * 32
    # identical to what the runtime's Preprocess makes of the same decoded frame
    from cezsar.video import read_frames

    first = read_frames(src, np.asarray([cal.times[0]]))
    np.testing.assert_allclose(loaded.frames[0], PRE(first)[0], atol=1e-6)


def test_folder_is_balanced_and_skips_bad_files(deploy: Path, tmp_path: Path) -> None:
    d = tmp_path / "videos"
    d.mkdir()
    _video(d / "long.mp4", 100, seed=1)
    _video(d / "short.mp4", 12, seed=2)
    _video(d / "mid.mp4", 40, seed=3)
    (d / "broken.mp4").write_bytes(b"not a video")
    cal = build_calibration_set(d, tmp_path / "c.npz", deploy_dir=deploy, frames=60, min_frames=8)
    counts = {Path(cal.sources[i]).name: int(c) for i, c in enumerate(np.bincount(cal.source_index))}
    assert counts == {"long.mp4": 24, "mid.mp4": 24, "short.mp4": 12}  # short gives all it has, the rest share
    assert [Path(s).name for s in cal.skipped] == ["broken.mp4"]
    meta = np.load(tmp_path / "c.npz")
    assert json.loads(str(meta["skipped"]))[0].endswith("broken.mp4")


def test_share_water_filling() -> None:
    assert _share(10, [100, 100]) == [5, 5]
    assert _share(10, [2, 100, 100]) == [2, 4, 4]
    assert _share(10, [1, 1]) == [1, 1]
    assert sum(_share(7, [3, 3, 3])) == 7


def test_too_few_frames_refused_and_nothing_written(deploy: Path, tmp_path: Path) -> None:
    src = _video(tmp_path / "tiny.mp4", 10, seed=4)
    out = tmp_path / "c.npz"
    with pytest.raises(CezsarError, match=r"found 10 usable frames, need at least 32"):
        build_calibration_set(src, out, deploy_dir=deploy, frames=64)
    assert not out.exists()


def test_wrong_size_frames_refused(deploy: Path, tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, frames=np.zeros((40, 3, 48, 48), np.float32))
    with pytest.raises(CezsarError, match=r"48x48, the model takes 32x32"):
        load_calibration(path, PRE)
    np.savez(path, frames=np.zeros((40, 48, 48, 3), np.uint8))
    with pytest.raises(CezsarError, match=r"float32 \[N, 3, S, S\]"):
        load_calibration(path, PRE)
    pil = dataclasses.replace(PRE, resampler="pil", interpolation="bicubic", size_rounding="truncate")
    for other in (Preprocess(size=32, resize=64), pil):
        pre = np.asarray(json.dumps(other.to_dict()))
        np.savez(path, frames=np.zeros((40, 3, 32, 32), np.float32), preprocess=pre)
        with pytest.raises(CezsarError, match="preprocessed differently"):
            load_calibration(path, PRE)


def test_missing_source_and_camera(deploy: Path, tmp_path: Path) -> None:
    with pytest.raises(CezsarError, match="calibration source not found"):
        build_calibration_set(tmp_path / "nope.mp4", None, deploy_dir=deploy)
    with pytest.raises(CezsarError, match="camera 97: cannot be opened"):
        build_calibration_set("97", None, deploy_dir=deploy, timeout=1.0)


def test_cli(deploy: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cezsar.cli import app

    src = _video(tmp_path / "a.mp4", 50, seed=5)
    out = tmp_path / "c.npz"
    args = ["calibrate", "--deploy", str(deploy), "--source", str(src), "--out", str(out), "--frames", "40"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "40 frames 32x32" in res.output
    res = CliRunner().invoke(app, [*args[:-1], "200", "--min-frames", "100"])
    assert res.exit_code != 0
    assert "found 50 usable frames, need at least 100" in res.output
