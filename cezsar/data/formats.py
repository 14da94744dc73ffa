"""Dataset formats, read and validated with one clear error per problem.

Caption-pair dataset (training): a folder with videos and ``captions.jsonl``, one JSON object a line::

    {"video": "rel/path.mp4", "start": 0.0, "end": 4.0, "caption": "a red triangle slides to the left"}

(start/end in seconds, optional). Zero-shot evaluation set: ``videos.jsonl`` lines
``{"video": ..., "label": ...}`` (optional start/end) and ``classes/<class name>.txt`` with one
description per line. Split files (TruZe style): ``{"training": [...], "testing": [...]}``.
Optional ``dataset.json``: recommended sampling/preprocessing (fps, frames, image_size, resize, ...).

This module names those files (``CAPTIONS_FILE`` ... ``SPLIT_FILE``) and writes captions.jsonl
(:func:`write_captions`, for the importers). No torch: the edge demo and the converter read these too.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json

CAPTIONS_FILE = "captions.jsonl"
VIDEOS_FILE = "videos.jsonl"
CLASSES_DIR = "classes"
DATASET_FILE = "dataset.json"
SPLIT_FILE = "split.json"  # the split a generated dataset ships with (the synthetic world's zero-shot split)


@dataclass(frozen=True)
class CaptionRecord:
    video: Path
    start: float | None
    end: float | None
    caption: str


@dataclass(frozen=True)
class EvalVideo:
    path: Path
    label: str
    start: float | None = None
    end: float | None = None


@dataclass
class EvalSet:
    videos: list[EvalVideo]
    classes: dict[str, list[str]]  # class name -> descriptions, in sorted class order

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)


@dataclass(frozen=True)
class Split:
    training: list[str]
    testing: list[str]


# ---------------------------------------------------------------------------------------------
# JSON lines


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise CezsarError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CezsarError(f"{path}: cannot be read ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CezsarError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise CezsarError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _str_field(obj: dict[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise CezsarError(f"{where}: missing field {key!r}")
    v = obj[key]
    if not isinstance(v, str):
        raise CezsarError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    if not v.strip():
        raise CezsarError(f"{where}: field {key!r} is empty")
    return v.strip()


def _time_field(obj: dict[str, Any], key: str, where: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CezsarError(f"{where}: field {key!r} must be a number of seconds, got {v!r}")
    if v < 0:
        raise CezsarError(f"{where}: field {key!r} is negative ({v})")
    return float(v)


def _segment(obj: dict[str, Any], where: str) -> tuple[float | None, float | None]:
    start, end = _time_field(obj, "start", where), _time_field(obj, "end", where)
    if start is not None and end is not None and start >= end:
        raise CezsarError(f"{where}: start {start} >= end {end}")
    return start, end


class _VideoResolver:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, Path] = {}

    def __call__(self, rel: str, where: str) -> Path:
        p = self.seen.get(rel)
        if p is None:
            p = (self.root / rel).resolve() if not os.path.isabs(rel) else Path(rel)
            if not p.is_file():
                raise CezsarError(f"{where}: video file not found: {p}")
            self.seen[rel] = p
        return p


def write_captions(data_dir: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``data_dir/captions.jsonl`` (atomically): one JSON object a line, ``video`` relative to
    ``data_dir``, optional ``start``/``end``, ``caption``. The importers write it here."""
    from cezsar.atomic import write_text

    path = Path(data_dir) / CAPTIONS_FILE
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return path


def read_captions(data_dir: str | Path) -> list[CaptionRecord]:
    """Read and validate ``data_dir/captions.jsonl``; video paths come back absolute."""
    data_dir = Path(data_dir)
    path = data_dir / CAPTIONS_FILE
    if not data_dir.is_dir():
        raise CezsarError(f"{data_dir}: dataset folder not found")
    if not path.is_file():
        raise CezsarError(f"{path}: file not found (a caption dataset needs {CAPTIONS_FILE})")
    resolve = _VideoResolver(data_dir)
    out: list[CaptionRecord] = []
    for n, obj in _jsonl(path):
        where = f"{path}:{n}"
        video = resolve(_str_field(obj, "video", where), where)
        caption = _str_field(obj, "caption", where)
        start, end = _segment(obj, where)
        out.append(CaptionRecord(video, start, end, caption))
    if not out:
        raise CezsarError(f"{path}: no caption records")
    return out


def read_eval_set(data_dir: str | Path) -> EvalSet:
    """Read and validate ``data_dir/videos.jsonl`` and ``data_dir/classes/*.txt``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CezsarError(f"{data_dir}: dataset folder not found")
    vpath, cdir = data_dir / VIDEOS_FILE, data_dir / CLASSES_DIR
    if not vpath.is_file():
        raise CezsarError(f"{vpath}: file not found (an evaluation set needs {VIDEOS_FILE})")
    if not cdir.is_dir():
        raise CezsarError(f"{cdir}: folder not found (an evaluation set needs {CLASSES_DIR}/<class>.txt)")
    classes: dict[str, list[str]] = {}
    for f in sorted(cdir.glob("*.txt"), key=lambda p: p.stem):
        try:
            lines = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise CezsarError(f"{f}: cannot be read ({e})") from None
        descriptions = [ln for ln in lines if ln]
        if not descriptions:
            raise CezsarError(f"{f}: no descriptions (one per line expected)")
        classes[f.stem] = descriptions
    if not classes:
        raise CezsarError(f"{cdir}: no class files (<class name>.txt)")
    resolve = _VideoResolver(data_dir)
    videos: list[EvalVideo] = []
    for n, obj in _jsonl(vpath):
        where = f"{vpath}:{n}"
        label = _str_field(obj, "label", where)
        if label not in classes:
            raise CezsarError(f"{where}: label {label!r} has no class file {cdir / (label + '.txt')}")
        video = resolve(_str_field(obj, "video", where), where)
        start, end = _segment(obj, where)
        videos.append(EvalVideo(video, label, start, end))
    if not videos:
        raise CezsarError(f"{vpath}: no video records")
    return EvalSet(videos, classes)


# ---------------------------------------------------------------------------------------------
# Splits


def _name_key(name: str) -> str:
    """Case-, space-, underscore- and punctuation-insensitive key: "Apply Eye Makeup" ==
    "apply_eye_makeup" == "ApplyEyeMakeup"."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def read_split(path: str | Path, class_names: Iterable[str] | None = None) -> Split:
    """Read a split file ``{"training": [...], "testing": [...]}``.

    With ``class_names`` (the dataset's own names), split names are matched ignoring case, spaces,
    underscores and punctuation, and mapped back to the dataset's names; a name that matches no
    class is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise CezsarError(f"{path}: split file not found")
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CezsarError(f'{path}: expected an object {{"training": [...], "testing": [...]}}')
    parts: dict[str, list[str]] = {}
    for key in ("training", "testing"):
        v = obj.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise CezsarError(f"{path}: {key!r} must be a list of class names")
        parts[key] = [x.strip() for x in v]
    if not parts["training"] and not parts["testing"]:
        raise CezsarError(f"{path}: no 'training' or 'testing' classes")
    if class_names is None:
        return Split(parts["training"], parts["testing"])
    lookup: dict[str, list[str]] = {}
    for c in class_names:
        lookup.setdefault(_name_key(c), []).append(c)
    mapped: dict[str, list[str]] = {}
    for key, names in parts.items():
        out: list[str] = []
        for name in names:
            hits = lookup.get(_name_key(name), [])
            if not hits:
                raise CezsarError(f"{path}: {key} class {name!r} matches no class of the dataset")
            if len(hits) > 1:
                raise CezsarError(f"{path}: {key} class {name!r} is ambiguous (matches {hits})")
            if hits[0] not in out:
                out.append(hits[0])
        mapped[key] = out
    return Split(mapped["training"], mapped["testing"])


# ---------------------------------------------------------------------------------------------
# dataset.json

_DEFAULT_TYPES: dict[str, tuple[type, float | None]] = {
    # key -> (type, minimum)
    "fps": (float, 0.0),
    "frames": (int, 1),
    "image_size": (int, 1),
    "resize": (int, 1),
    "lr": (float, 0.0),
    "epochs": (int, 1),
    "batch_size": (int, 1),
    "seed": (int, None),
    "neg_min": (float, None),
    "neg_max": (float, None),
}


def read_dataset_defaults(data_dir: str | Path) -> dict[str, Any]:
    """The dataset's recommended sampling/preprocessing (``dataset.json``); {} if it has none.

    Known keys are type-checked (fps, frames, image_size, resize, lr, epochs, batch_size, seed,
    neg_min, neg_max); other keys pass through unchanged.
    """
    path = Path(data_dir) / DATASET_FILE
    if not path.is_file():
        return {}
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CezsarError(f"{path}: expected a JSON object")
    out = dict(obj)
    for key, (typ, minimum) in _DEFAULT_TYPES.items():
        if key not in obj:
            continue
        v = obj[key]
        ok = not isinstance(v, bool) and (
            isinstance(v, int) if typ is int else isinstance(v, (int, float)) and math.isfinite(v)
        )
        if not ok:
            raise CezsarError(f"{path}: {key!r} must be {'an integer' if typ is int else 'a number'}, got {v!r}")
        if minimum is not None and (v <= minimum if typ is float else v < minimum):
            op = ">" if typ is float else ">="
            raise CezsarError(f"{path}: {key!r} must be {op} {minimum:g}, got {v!r}")
        out[key] = typ(v)
    if "image_size" in out and "resize" in out and out["resize"] < out["image_size"]:
        raise CezsarError(f"{path}: 'resize' ({out['resize']}) is smaller than 'image_size' ({out['image_size']})")
    return out


def trained_on(data_dir: str | Path, captions: list[str]) -> dict[str, Any]:
    """The ``trained_on`` record (cezsar.trainedon) of a model trained on ``captions`` from ``data_dir``:
    dataset.json's ``name`` and ``domain`` when it has them, else the folder's name."""
    from cezsar import trainedon

    meta = read_dataset_defaults(data_dir)
    name = str(meta.get("name") or Path(data_dir).resolve().name)
    domain = meta.get("domain")
    return trainedon.record(name, captions, str(domain) if domain else None)
