"""Dataset readers: round trips and every error path (a CezsarError naming the file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cezsar.data.activitynet import import_activitynet
from cezsar.data.formats import (
    CaptionRecord,
    read_captions,
    read_dataset_defaults,
    read_eval_set,
    read_split,
)
from cezsar.errors import CezsarError

SPLITS = Path("/work/shared/data/zsar_splits")


def _jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _caption_dir(tmp_path: Path, rows: list[object]) -> Path:
    d = tmp_path / "ds"
    (d / "vids").mkdir(parents=True)
    (d / "vids" / "a.mp4").write_bytes(b"x")
    (d / "vids" / "b.mp4").write_bytes(b"x")
    _jsonl(d / "captions.jsonl", rows)
    return d


def _eval_dir(tmp_path: Path, rows: list[object], classes: dict[str, str]) -> Path:
    d = tmp_path / "ev"
    (d / "classes").mkdir(parents=True)
    (d / "a.mp4").write_bytes(b"x")
    for name, text in classes.items():
        (d / "classes" / f"{name}.txt").write_text(text)
    _jsonl(d / "videos.jsonl", rows)
    return d


# ------------------------------------------------------------------------------------------- captions


def test_read_captions_round_trip(tmp_path: Path) -> None:
    d = _caption_dir(
        tmp_path,
        [
            {"video": "vids/a.mp4", "start": 1, "end": 2.5, "caption": "  a cat jumps "},
            "",
            {"video": "vids/b.mp4", "caption": "a dog runs"},
            {"video": "vids/a.mp4", "start": 3.0, "caption": "the cat sits"},
        ],
    )
    recs = read_captions(d)
    assert recs == [
        CaptionRecord((d / "vids/a.mp4").resolve(), 1.0, 2.5, "a cat jumps"),
        CaptionRecord((d / "vids/b.mp4").resolve(), None, None, "a dog runs"),
        CaptionRecord((d / "vids/a.mp4").resolve(), 3.0, None, "the cat sits"),
    ]
    assert all(r.video.is_absolute() for r in recs)


@pytest.mark.parametrize(
    "row, needle",
    [
        ("{not json", "captions.jsonl:2: invalid JSON"),
        ('["a list"]', "captions.jsonl:2: expected a JSON object"),
        ({"video": "vids/a.mp4"}, "captions.jsonl:2: missing field 'caption'"),
        ({"caption": "x"}, "captions.jsonl:2: missing field 'video'"),
        ({"video": "vids/a.mp4", "caption": "   "}, "captions.jsonl:2: field 'caption' is empty"),
        ({"video": "vids/a.mp4", "caption": 3}, "captions.jsonl:2: field 'caption' must be a string"),
        ({"video": "vids/a.mp4", "caption": "x", "start": 2, "end": 2}, "captions.jsonl:2: start 2.0 >= end 2.0"),
        ({"video": "vids/a.mp4", "caption": "x", "start": "0"}, "captions.jsonl:2: field 'start' must be a number"),
        ({"video": "vids/a.mp4", "caption": "x", "end": -1}, "captions.jsonl:2: field 'end' is negative"),
        ({"video": "vids/missing.mp4", "caption": "x"}, "captions.jsonl:2: video file not found"),
    ],
)
def test_read_captions_errors(tmp_path: Path, row: object, needle: str) -> None:
    d = _caption_dir(tmp_path, [{"video": "vids/a.mp4", "caption": "fine"}, row])
    with pytest.raises(CezsarError) as e:
        read_captions(d)
    assert str(d / "captions.jsonl") in str(e.value)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_read_captions_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(CezsarError, match="dataset folder not found"):
        read_captions(tmp_path / "nope")
    with pytest.raises(CezsarError, match=r"captions\.jsonl: file not found"):
        read_captions(tmp_path)
    d = _caption_dir(tmp_path, ["", "   "])
    with pytest.raises(CezsarError, match=r"captions\.jsonl: no caption records"):
        read_captions(d)


# ------------------------------------------------------------------------------------------- eval set


def test_read_eval_set_round_trip(tmp_path: Path) -> None:
    d = _eval_dir(
        tmp_path,
        [{"video": "a.mp4", "label": "b class"}, {"video": "a.mp4", "label": "a class", "start": 0, "end": 1}],
        {"b class": "first\n\n second \n", "a class": "only one\n", "c class": "unused class\n"},
    )
    ev = read_eval_set(d)
    assert list(ev.classes) == ["a class", "b class", "c class"]
    assert ev.classes["b class"] == ["first", "second"]
    assert [(v.label, v.start, v.end) for v in ev.videos] == [("b class", None, None), ("a class", 0.0, 1.0)]
    assert ev.videos[0].path == (d / "a.mp4").resolve()


def test_read_eval_set_errors(tmp_path: Path) -> None:
    d = _eval_dir(tmp_path, [{"video": "a.mp4", "label": "zebra"}], {"horse": "a horse\n"})
    with pytest.raises(CezsarError) as e:
        read_eval_set(d)
    assert "videos.jsonl:1" in str(e.value) and "'zebra'" in str(e.value) and "zebra.txt" in str(e.value)

    (d / "classes" / "zebra.txt").write_text("\n  \n")
    with pytest.raises(CezsarError, match=r"zebra\.txt: no descriptions"):
        read_eval_set(d)

    (d / "classes" / "zebra.txt").write_text("a zebra\n")
    _jsonl(d / "videos.jsonl", [{"video": "gone.mp4", "label": "zebra"}])
    with pytest.raises(CezsarError, match=r"videos\.jsonl:1: video file not found"):
        read_eval_set(d)

    _jsonl(d / "videos.jsonl", [{"video": "a.mp4"}])
    with pytest.raises(CezsarError, match=r"videos\.jsonl:1: missing field 'label'"):
        read_eval_set(d)

    _jsonl(d / "videos.jsonl", [])
    with pytest.raises(CezsarError, match=r"videos\.jsonl: no video records"):
        read_eval_set(d)

    (d / "videos.jsonl").unlink()
    with pytest.raises(CezsarError, match=r"videos\.jsonl: file not found"):
        read_eval_set(d)

    d2 = tmp_path / "noclasses"
    d2.mkdir()
    _jsonl(d2 / "videos.jsonl", [{"video": "a.mp4", "label": "x"}])
    with pytest.raises(CezsarError, match=r"noclasses/classes: folder not found"):
        read_eval_set(d2)
    (d2 / "classes").mkdir()
    with pytest.raises(CezsarError, match=r"noclasses/classes: no class files"):
        read_eval_set(d2)


# ------------------------------------------------------------------------------------------- splits


def test_read_split_maps_names(tmp_path: Path) -> None:
    p = tmp_path / "split.json"
    p.write_text(json.dumps({"training": ["Apply Eye Makeup", "Band Marching"], "testing": ["Yo Yo"]}))
    names = ["ApplyEyeMakeup", "band_marching", "YoYo", "Archery"]
    sp = read_split(p, names)
    assert sp.training == ["ApplyEyeMakeup", "band_marching"]
    assert sp.testing == ["YoYo"]
    assert read_split(p).testing == ["Yo Yo"]
    with pytest.raises(CezsarError) as e:
        read_split(p, ["ApplyEyeMakeup", "YoYo"])
    assert str(p) in str(e.value) and "'Band Marching'" in str(e.value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{", "invalid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"training": "a", "testing": []}', "'training' must be a list"),
        ('{"training": [], "testing": [1]}', "'testing' must be a list"),
        ('{"other": []}', "no 'training' or 'testing' classes"),
    ],
)
def test_read_split_errors(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "s.json"
    p.write_text(text)
    with pytest.raises(CezsarError) as e:
        read_split(p, ["a"])
    assert str(p) in str(e.value) and needle in str(e.value)
    with pytest.raises(CezsarError, match="split file not found"):
        read_split(tmp_path / "none.json")


@pytest.mark.skipif(not (SPLITS / "kinetics400_splits.json").is_file(), reason="real split files not present")
def test_read_real_split_files() -> None:
    raw = json.loads((SPLITS / "kinetics400_splits.json").read_text())
    folder_names = [n.replace(" ", "_") for n in raw["testing"]]  # Kinetics folder style
    sp = read_split(SPLITS / "kinetics400_splits.json", folder_names)
    assert sp.training == [] and len(sp.testing) == 400
    assert sp.testing == folder_names
    ucf = SPLITS / "ucf101_truezsl_splits.json"
    if ucf.is_file():
        raw = json.loads(ucf.read_text())
        camel = ["".join(w[:1].upper() + w[1:] for w in n.split()) for n in raw["training"] + raw["testing"]]
        sp = read_split(ucf, camel)
        assert len(sp.training) == 67 and len(sp.testing) == 34
        assert not set(sp.training) & set(sp.testing)


# ------------------------------------------------------------------------------------------- dataset.json


def test_dataset_defaults(tmp_path: Path) -> None:
    assert read_dataset_defaults(tmp_path) == {}
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps({"fps": 4, "frames": 8, "image_size": 64, "resize": 72, "seed": 3, "name": "x"}))
    d = read_dataset_defaults(tmp_path)
    assert d == {"fps": 4.0, "frames": 8, "image_size": 64, "resize": 72, "seed": 3, "name": "x"}
    assert isinstance(d["fps"], float)
    for bad, needle in [
        ({"frames": 2.5}, "'frames' must be an integer"),
        ({"fps": "4"}, "'fps' must be a number"),
        ({"fps": 0}, "'fps' must be > 0"),
        ({"frames": True}, "'frames' must be an integer"),
        ({"image_size": 64, "resize": 32}, "smaller than 'image_size'"),
        ([1], "expected a JSON object"),
    ]:
        p.write_text(json.dumps(bad))
        with pytest.raises(CezsarError) as e:
            read_dataset_defaults(tmp_path)
        assert str(p) in str(e.value) and needle in str(e.value), bad
    p.write_text("{oops")
    with pytest.raises(CezsarError, match="invalid JSON"):
        read_dataset_defaults(tmp_path)


# ------------------------------------------------------------------------------------------- ActivityNet


def _anet(tmp_path: Path) -> tuple[Path, Path]:
    vids = tmp_path / "videos"
    (vids / "sub").mkdir(parents=True)
    (vids / "v_AAA.mp4").write_bytes(b"x")
    (vids / "sub" / "BBB.mkv").write_bytes(b"x")
    (vids / "notes.txt").write_text("not a video")
    ann = {
        "v_AAA": {
            "duration": 10.0,
            "timestamps": [[0.5, 4.0], [3.0, 12.0], [5.0, 5.0]],
            "sentences": ["A man  walks in. ", "He sits down.", "Nothing."],
        },
        "v_BBB": {"duration": 20.0, "timestamps": [[1, 2]], "sentences": ["A dog barks."]},
        "v_CCC": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["Missing video."]},
    }
    js = tmp_path / "train.json"
    js.write_text(json.dumps(ann))
    return js, vids


def test_import_activitynet(tmp_path: Path) -> None:
    js, vids = _anet(tmp_path)
    out = tmp_path / "out"
    s = import_activitynet(js, vids, out)
    assert s["videos"] == 2 and s["missing_videos"] == 1 and s["captions"] == 3 and s["skipped_segments"] == 1
    lines = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert lines[0] == {"video": "../videos/v_AAA.mp4", "start": 0.5, "end": 4.0, "caption": "A man walks in."}
    assert lines[1]["end"] == 10.0  # clamped to the duration
    assert lines[2]["video"] == "../videos/sub/BBB.mkv"
    recs = read_captions(out)
    assert [r.video.name for r in recs] == ["v_AAA.mp4", "v_AAA.mp4", "BBB.mkv"]


def test_import_activitynet_errors(tmp_path: Path) -> None:
    js, vids = _anet(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CezsarError) as e:
        import_activitynet(js, empty, tmp_path / "out")
    assert str(empty) in str(e.value) and "none of the 3 videos" in str(e.value)
    assert not (tmp_path / "out" / "captions.jsonl").exists()
    with pytest.raises(CezsarError, match="file not found"):
        import_activitynet(tmp_path / "none.json", vids, tmp_path / "out")
    with pytest.raises(CezsarError, match="videos folder not found"):
        import_activitynet(js, tmp_path / "nodir", tmp_path / "out")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"v_AAA": {"timestamps": [[0, 1]], "sentences": []}}))
    with pytest.raises(CezsarError) as e:
        import_activitynet(bad, vids, tmp_path / "out")
    assert str(bad) in str(e.value) and "'v_AAA'" in str(e.value) and "1 timestamps but 0 sentences" in str(e.value)
    bad.write_text("[]")
    with pytest.raises(CezsarError, match="expected an ActivityNet Captions object"):
        import_activitynet(bad, vids, tmp_path / "out")


def test_cli_import_activitynet(tmp_path: Path) -> None:
    js, vids = _anet(tmp_path)
    run = [sys.executable, "-m", "cezsar", "import-activitynet", str(js), "--videos", str(vids), "--out"]
    ok = subprocess.run([*run, str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "3 captions from 2 videos" in ok.stdout and "1 videos not found" in ok.stdout
    bad = subprocess.run(
        [*run[:4], str(tmp_path / "none.json"), *run[5:], str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "none.json" in bad.stderr


def test_data_package_needs_no_torch(tmp_path: Path) -> None:
    """The edge demo and the converter read and render datasets through cezsar.data: no torch there."""
    code = (
        "import sys\n"
        "import cezsar.data.synthetic, cezsar.data.synthset, cezsar.data.formats, cezsar.data.activitynet\n"
        "import cezsar.zeroshot, cezsar.tokenize\n"
        "from cezsar.data.synthset import synthesize\n"
        f"synthesize({str(tmp_path / 'w')!r}, train_clips_per_class=1, eval_clips_per_class=1)\n"
        f"cezsar.data.formats.read_eval_set({str(tmp_path / 'w')!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
