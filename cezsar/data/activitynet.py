"""ActivityNet Captions -> a caption-pair dataset (``captions.jsonl``, see :mod:`cezsar.data.formats`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cezsar.data.formats import CAPTIONS_FILE, write_captions
from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp")


def _index_videos(videos_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in sorted(videos_dir.rglob("*")):
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            index.setdefault(p.stem, p)
    return index


def import_activitynet(json_path: str | Path, videos_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Convert ActivityNet Captions JSON into ``out_dir/captions.jsonl`` (paths relative to out_dir).

    Videos are found under ``videos_dir`` (recursively) by stem ``v_ID`` or ``ID``, any common video
    extension. Videos not found are skipped and counted; so are segments with start >= end (end is
    clamped to the duration). Returns counts.
    """
    json_path, videos_dir, out_dir = Path(json_path), Path(videos_dir), Path(out_dir)
    if not json_path.is_file():
        raise CezsarError(f"{json_path}: file not found")
    if not videos_dir.is_dir():
        raise CezsarError(f"{videos_dir}: videos folder not found")
    data = read_json(json_path)
    if not isinstance(data, dict) or not data:
        raise CezsarError(f'{json_path}: expected an ActivityNet Captions object {{"v_ID": {{...}}, ...}}')
    index = _index_videos(videos_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = []
    found = missing = bad_segments = 0
    for vid, entry in data.items():
        where = f"{json_path}: {vid!r}"
        if not isinstance(entry, dict):
            raise CezsarError(f"{where}: expected an object with 'timestamps' and 'sentences'")
        stamps, sentences = entry.get("timestamps"), entry.get("sentences")
        if not isinstance(stamps, list) or not isinstance(sentences, list):
            raise CezsarError(f"{where}: missing 'timestamps' or 'sentences' list")
        if len(stamps) != len(sentences):
            raise CezsarError(f"{where}: {len(stamps)} timestamps but {len(sentences)} sentences")
        duration = entry.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))):
            raise CezsarError(f"{where}: 'duration' must be a number")
        stem = str(vid)
        video = index.get(stem) or index.get(stem[2:] if stem.startswith("v_") else "v_" + stem)
        if video is None:
            missing += 1
            continue
        found += 1
        rel = Path(os.path.relpath(video.resolve(), out_dir.resolve())).as_posix()
        for ts, sentence in zip(stamps, sentences, strict=True):
            if (
                not isinstance(ts, list)
                or len(ts) != 2
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)
            ):
                raise CezsarError(f"{where}: timestamp {ts!r} is not [start, end]")
            if not isinstance(sentence, str):
                raise CezsarError(f"{where}: sentence {sentence!r} is not a string")
            start, end = max(0.0, float(ts[0])), float(ts[1])
            if duration is not None:
                end = min(end, float(duration))
            text = " ".join(sentence.split())
            if start >= end or not text:
                bad_segments += 1
                continue
            lines.append({"video": rel, "start": round(start, 3), "end": round(end, 3), "caption": text})
    if not found:
        raise CezsarError(f"{videos_dir}: none of the {len(data)} videos listed in {json_path} was found")
    if not lines:
        raise CezsarError(f"{json_path}: no usable caption segment among the {found} videos found")
    write_captions(out_dir, lines)
    return {
        "out": str(out_dir / CAPTIONS_FILE),
        "videos": found,
        "missing_videos": missing,
        "captions": len(lines),
        "skipped_segments": bad_segments,
    }
