"""MSR-VTT / WebVid importers on small files written here, and zero-shot evaluation of a folder-per-class
dataset (UCF-101 layout) with the shared TruZe split, N classes per run over R runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cezsar.data.captions_import import import_msrvtt, import_webvid
from cezsar.data.folders import find_zsar_splits, read_class_folders, readable
from cezsar.data.formats import read_captions
from cezsar.errors import CezsarError
from cezsar.video import write_video


def _tiny_video(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(6)], 3.0)
    return path


def test_msrvtt_import(tmp_path):
    vids = tmp_path / "videos"
    for i in (0, 1):
        _tiny_video(vids / f"video{i}.mp4", i)
    ann = {
        "videos": [
            {"video_id": "video0", "split": "train"},
            {"video_id": "video1", "split": "test"},
            {"video_id": "video2", "split": "train"},
        ],
        "sentences": [
            {"video_id": "video0", "caption": "a man  is cooking", "sen_id": 0},
            {"video_id": "video0", "caption": "someone fries eggs", "sen_id": 1},
            {"video_id": "video1", "caption": "a cat jumps", "sen_id": 2},
            {"video_id": "video2", "caption": "not downloaded", "sen_id": 3},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    s = import_msrvtt(tmp_path / "ann.json", vids, tmp_path / "ds", split="train")
    assert (s["videos"], s["missing_videos"], s["captions"]) == (1, 1, 2)
    recs = read_captions(tmp_path / "ds")
    assert [r.caption for r in recs] == ["a man is cooking", "someone fries eggs"]
    assert recs[0].video.name == "video0.mp4" and recs[0].start is None
    assert import_msrvtt(tmp_path / "ann.json", vids, tmp_path / "all")["captions"] == 3
    (tmp_path / "bad.json").write_text(json.dumps({"sentences": [{"video_id": 3}]}))
    with pytest.raises(CezsarError, match=r"bad.json: sentences\[0\]"):
        import_msrvtt(tmp_path / "bad.json", vids, tmp_path / "x")


def test_webvid_csv_import(tmp_path):
    vids = tmp_path / "videos"
    _tiny_video(vids / "000001_000050" / "1066674784.mp4", 0)
    _tiny_video(vids / "elsewhere" / "5555.mp4", 1)
    (tmp_path / "results.csv").write_text(
        "videoid,name,page_dir,duration,contentUrl\n"
        '1066674784,"Aerial view, of a beach",000001_000050,PT00H00M02S,https://x/1.mp4\n'
        "5555,Dog runs on grass,000051_000100,PT00H00M02S,https://x/2.mp4\n"
        "777,Missing video,000051_000100,PT00H00M02S,https://x/3.mp4\n"
    )
    s = import_webvid(tmp_path / "results.csv", vids, tmp_path / "ds")
    assert (s["videos"], s["missing_videos"], s["captions"]) == (2, 1, 2)
    recs = read_captions(tmp_path / "ds")
    assert [r.caption for r in recs] == ["Aerial view, of a beach", "Dog runs on grass"]
    (tmp_path / "bad.csv").write_text("id,text\n1,a\n")
    with pytest.raises(CezsarError, match="bad.csv: header"):
        import_webvid(tmp_path / "bad.csv", vids, tmp_path / "x")


def test_class_folders_read_with_generated_descriptions(tmp_path):
    _tiny_video(tmp_path / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi".replace(".avi", ".mp4"))
    _tiny_video(tmp_path / "riding_a_bike" / "sub" / "a.mp4")
    (tmp_path / "empty_class").mkdir()
    es = read_class_folders(tmp_path)
    assert list(es.classes) == ["ApplyEyeMakeup", "riding_a_bike"]
    assert es.classes["ApplyEyeMakeup"][0] == "apply eye makeup" == readable("Apply_EyeMakeup")
    assert [v.label for v in es.videos] == ["ApplyEyeMakeup", "riding_a_bike"]
    (tmp_path / "desc.json").write_text(json.dumps({"apply eye makeup": ["putting on mascara"]}))
    assert read_class_folders(tmp_path, tmp_path / "desc.json").classes["ApplyEyeMakeup"] == ["putting on mascara"]


@pytest.mark.slow
def test_eval_cli_on_ucf_style_folder_with_truze_split_reports_mean_and_std(tmp_path):
    torch = pytest.importorskip("torch")
    splits = find_zsar_splits(Path(__file__).parent)
    if splits is None:
        pytest.skip("shared/data/zsar_splits not found beside or above the repository (set CEZSAR_SPLITS)")
    truze = json.loads((splits / "ucf101_truezsl_splits.json").read_text())
    ucf = tmp_path / "ucf"
    for k, name in enumerate(truze["testing"] + truze["training"]):  # the seen classes are not evaluated
        _tiny_video(ucf / name.replace(" ", "") / f"v_{k}.mp4", k)  # UCF-101 folder names: CamelCase

    from cezsar.preprocess import Preprocess
    from training.model import CezsarModel, ModelConfig

    torch.manual_seed(0)
    model = CezsarModel(
        ModelConfig(backbone="tiny", frames=4, fps=2.0, d_model=32, preprocess=Preprocess(size=32, resize=32).to_dict())
    )
    model.save(tmp_path / "m")
    p = subprocess.run(
        [sys.executable, "-m", "cezsar", "eval", "--model", str(tmp_path / "m"), "--data", str(ucf),
         "--split", "truze", "--runs", "4", "--classes-per-run", "10", "--json"],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "CEZSAR_SPLITS": str(splits)},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["runs"] == 4 and rep["n_classes"] == 10 and rep["n_videos"] == len(truze["testing"])
    assert rep["top1"] == pytest.approx(np.mean(rep["per_run"]), abs=1e-3)
    assert rep["top1_std"] == pytest.approx(np.std(rep["per_run"]), abs=1e-3)
    assert "±" in p.stderr
