"""MSR-VTT and WebVid-style CSV annotations -> a caption-pair dataset (``captions.jsonl``).

- MSR-VTT (``train_val_videodatainfo.json`` / ``test_videodatainfo.json``): ``{"videos": [{"video_id":
  "video0", "split": "train", ...}], "sentences": [{"video_id": "video0", "caption": "..."}]}``. The
  clips are already trimmed, so records have no start/end (the whole clip). ``split`` keeps only the
  videos of that split.
- WebVid-style CSV: a header with at least ``videoid`` and ``name`` (the caption); ``page_dir``,
  ``duration``, ``contentUrl`` are optional. One caption per video, the whole video.

Videos are found under the videos folder recursively by stem (``video0.mp4``, ``1234.mp4``), as the
ActivityNet importer finds them; those not found are skipped and counted.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from cezsar.data.activitynet import _index_videos
from cezsar.data.formats import CAPTIONS_FILE, write_captions
from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json


def _write(out_dir: Path, rows: list[tuple[Path, str]], source: Path, found: int, missing: int) -> dict[str, Any]:
    if not found:
        raise CezsarError(f"{source}: none of the videos it lists was found")
    lines = []
    skipped = 0
    for video, caption in rows:
        text = " ".join(caption.split())
        if not text:
            skipped += 1
            continue
        rel = Path(os.path.relpath(video.resolve(), out_dir.resolve())).as_posix()
        lines.append({"video": rel, "caption": text})
    if not lines:
        raise CezsarError(f"{source}: no usable caption among the {found} videos found")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_captions(out_dir, lines)
    return {
        "out": str(out_dir / CAPTIONS_FILE),
        "videos": found,
        "missing_videos": missing,
        "captions": len(lines),
        "skipped_captions": skipped,
    }


def _check_inputs(path: Path, videos_dir: Path) -> None:
    if not path.is_file():
        raise CezsarError(f"{path}: file not found")
    if not videos_dir.is_dir():
        raise CezsarError(f"{videos_dir}: videos folder not found")


def import_msrvtt(
    json_path: str | Path, videos_dir: str | Path, out_dir: str | Path, split: str | None = None
) -> dict[str, Any]:
    json_path, videos_dir, out_dir = Path(json_path), Path(videos_dir), Path(out_dir)
    _check_inputs(json_path, videos_dir)
    data = read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise CezsarError(f'{json_path}: expected an MSR-VTT object {{"videos": [...], "sentences": [...]}}')
    keep: set[str] | None = None
    if split is not None:
        videos = data.get("videos")
        if not isinstance(videos, list):
            raise CezsarError(f"{json_path}: no 'videos' list to select the {split!r} split from")
        keep = {str(v.get("video_id")) for v in videos if isinstance(v, dict) and v.get("split") == split}
        if not keep:
            raise CezsarError(f"{json_path}: no video of split {split!r}")
    index = _index_videos(videos_dir)
    rows: list[tuple[Path, str]] = []
    found: set[str] = set()
    missing: set[str] = set()
    for n, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or not isinstance(s.get("video_id"), str) or not isinstance(s.get("caption"), str):
            raise CezsarError(f"{json_path}: sentences[{n}] needs string 'video_id' and 'caption'")
        vid = s["video_id"]
        if keep is not None and vid not in keep:
            continue
        video = index.get(vid)
        if video is None:
            missing.add(vid)
            continue
        found.add(vid)
        rows.append((video, s["caption"]))
    return _write(out_dir, rows, json_path, len(found), len(missing))


def import_webvid(csv_path: str | Path, videos_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    csv_path, videos_dir, out_dir = Path(csv_path), Path(videos_dir), Path(out_dir)
    _check_inputs(csv_path, videos_dir)
    index = _index_videos(videos_dir)
    rows: list[tuple[Path, str]] = []
    found = missing = 0
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "videoid" not in cols or "name" not in cols:
                raise CezsarError(f"{csv_path}: header {cols} lacks 'videoid' and 'name' (videoid,name,page_dir,...)")
            for row in reader:
                vid = (row.get("videoid") or "").strip()
                if not vid:
                    raise CezsarError(f"{csv_path}:{reader.line_num}: empty videoid")
                page = (row.get("page_dir") or "").strip()
                video = None
                if page:  # WebVid's download layout: VIDEOS/page_dir/videoid.mp4
                    cand = videos_dir / page / f"{vid}.mp4"
                    video = cand if cand.is_file() else None
                video = video or index.get(vid)
                if video is None:
                    missing += 1
                    continue
                found += 1
                rows.append((video, row.get("name") or ""))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CezsarError(f"{csv_path}: cannot be read as CSV ({e})") from None
    return _write(out_dir, rows, csv_path, found, missing)
